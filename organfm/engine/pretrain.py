"""The boundary between config and objects: build everything for a pretraining run, then call ``train``.

This is the only place below the CLI that reads the whole config; every object gets plain kwargs.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader

from organfm.backbones import create_backbone
from organfm.config import Config, DataConfig, config_to_dict, save_config
from organfm.data.samplers import ResumableBatchSampler
from organfm.engine.checkpoint import (capture_rng, export_backbone, latest_checkpoint, load_checkpoint,
                                       restore_rng, save_checkpoint)
from organfm.engine.loop import TrainResult, train
from organfm.engine.optim import build_optimizer
from organfm.engine.progress import ProgressReporter
from organfm.engine.schedules import build_schedules
from organfm.methods import create_method
from organfm.views import GlobalLocalViews, MultiViewDataset

if TYPE_CHECKING:
    from organfm.synthesis import SyntheticBuffer

__all__ = ["PretrainSummary", "build_pretrain_dataset", "build_synthetic_buffer", "pretrain"]


@dataclass
class PretrainSummary:
    run_dir: Path
    result: TrainResult
    checkpoint: Path | None
    export: Path | None
    num_images: int
    organs: list[str]

    def line(self, method: str, backbone: str) -> str:
        r = self.result
        first, last = r.first_logs.get("loss", float("nan")), r.last_logs.get("loss", float("nan"))
        ips = (r.step - r.start_step) / max(r.seconds, 1e-9)
        state = "interrupted at" if r.interrupted else "done,"
        return (f"organfm pretrain {method} ({backbone}) {state} step {r.step}: {self.num_images} images, "
                f"{len(self.organs)} organs, loss {first:.4f} -> {last:.4f}, {r.seconds:.1f} s ({ips:.2f} steps/s); "
                f"checkpoint {self.checkpoint}; export {self.export}")


def build_pretrain_dataset(data: DataConfig, *, skip_log_dir: str | None = None):
    """The image dataset named by ``data.source``: ``synthetic`` (embedded default) or real files."""
    if data.source == "synthetic":
        from organfm.synthesis import SyntheticOrgans

        return SyntheticOrgans(num_organs=data.synthetic_organs, images_per_organ=data.synthetic_images_per_organ,
                               size=data.synthetic_size, num_labels=data.synthetic_labels, dim=2,
                               seed=data.synthetic_seed)
    from organfm.data import build_dataset

    kwargs = {k: v for k, v in asdict(data).items() if not k.startswith("synthetic_") and k != "source"}
    if kwargs.get("window") is not None:
        kwargs["window"] = tuple(kwargs["window"])
    return build_dataset(data.source, skip_log_dir=skip_log_dir, **kwargs)


def _resolve_device_settings(cfg: Config) -> dict[str, Any]:
    precision = cfg.trainer.precision
    if precision == "auto":
        # bf16 autocast is ~16x slower than fp32 on CPUs without native bf16
        precision = "bf16-mixed" if torch.cuda.is_available() and cfg.trainer.accelerator != "cpu" else "32-true"
    return dict(accelerator=cfg.trainer.accelerator, devices=cfg.trainer.devices, num_nodes=cfg.trainer.num_nodes,
                strategy=cfg.trainer.strategy, precision=precision)


def _default_run_dir(cfg: Config) -> Path:
    return Path("runs") / f"{cfg.method_name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def pretrain(cfg: Config, *, resume_dir: str | Path | None = None) -> PretrainSummary:
    """Pretrain ``cfg.method_name`` as configured; resume from ``resume_dir``'s latest checkpoint if given."""
    from lightning.fabric import Fabric
    from lightning.fabric.loggers import CSVLogger, TensorBoardLogger

    tr = cfg.trainer
    run_dir = Path(resume_dir or tr.out_dir or _default_run_dir(cfg))
    tr.out_dir = str(run_dir)
    if tr.torch_threads:
        torch.set_num_threads(tr.torch_threads)
    if tr.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)

    ckpt = None
    if resume_dir is not None:
        ckpt_path = latest_checkpoint(run_dir)
        if ckpt_path is None:
            raise FileNotFoundError(f"cannot resume: no checkpoint in {run_dir}/checkpoints")
        ckpt = load_checkpoint(ckpt_path)
    elif latest_checkpoint(run_dir) is not None:
        raise ValueError(f"{run_dir} already holds a run: continue it with --resume {run_dir}, "
                         "or choose another trainer.out_dir")
    start_step = int(ckpt["step"]) if ckpt else 0

    loggers = [CSVLogger(run_dir / "logs", name="csv", version=f"from-step-{start_step}"),
               TensorBoardLogger(run_dir / "logs", name="tensorboard", version="")]
    fabric = Fabric(loggers=loggers, **_resolve_device_settings(cfg))
    fabric.launch()
    fabric.seed_everything(tr.seed, verbose=False)

    world = fabric.world_size
    method_kwargs, backbone_kwargs = asdict(cfg.method), {}
    buffer = None
    if _batch_source(cfg) == "synthetic_buffer":  # RaSD: an online FIFO of synthetic pairs, no image files
        source_args = {key: method_kwargs.pop(key) for key in type(cfg.method).source_keys}
        buffer = dataset = build_synthetic_buffer(cfg, start_step=start_step * tr.accumulate_grad_batches,
                                                  rank=fabric.global_rank, **source_args)
        method_kwargs["num_labels"] = buffer.pairs.num_labels
        backbone_kwargs["spatial_dims"] = source_args["dim"]
        steps_per_epoch = source_args["steps_per_epoch"]
    else:
        dataset = build_pretrain_dataset(cfg.data, skip_log_dir=str(run_dir / "skips"))
        steps_per_epoch = len(dataset) // (tr.batch_size * world * tr.accumulate_grad_batches)
        if steps_per_epoch < 1:
            raise ValueError(f"{len(dataset)} images cannot fill one step of batch {tr.batch_size} x {world} "
                             f"devices x {tr.accumulate_grad_batches} accumulation: lower trainer.batch_size")
    organs = list(getattr(dataset, "organs", []))
    backbone = create_backbone(cfg.backbone.name, in_chans=1, pretrained_file=cfg.backbone.pretrained_file,
                               drop_path_rate=cfg.backbone.drop_path_rate, **backbone_kwargs)
    method = create_method(cfg.method_name, backbone=backbone, **method_kwargs)
    optimizer = build_optimizer(method, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas))

    total_steps = max(1, math.ceil(tr.epochs * steps_per_epoch))
    max_steps = tr.max_steps if tr.max_steps is not None else total_steps
    o, t = cfg.optim, cfg.teacher
    schedules = build_schedules(
        total_steps=total_steps, steps_per_epoch=steps_per_epoch, lr=o.lr, min_lr=o.min_lr,
        warmup_epochs=o.warmup_epochs, weight_decay=o.weight_decay, weight_decay_end=o.weight_decay_end,
        momentum=t.momentum, momentum_end=t.momentum_end, teacher_temp=t.temp, warmup_teacher_temp=t.warmup_temp,
        warmup_teacher_temp_epochs=t.warmup_temp_epochs)

    if ckpt is not None:
        method.load_state_dict(ckpt["method"])
        optimizer.load_state_dict(ckpt["optimizer"])
        restore_rng(ckpt["rng"])
    if fabric.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        summary = dataset.summary() if hasattr(dataset, "summary") else {"num_images": len(dataset)}
        (run_dir / "data.json").write_text(json.dumps(summary, indent=2, default=str))
        if hasattr(dataset, "save_split"):
            dataset.save_split(run_dir / "splits.csv")

    raw_method = method
    if tr.compile:
        method = torch.compile(method)
    method, optimizer = fabric.setup(method, optimizer)
    if buffer is not None:
        loader = (fabric.to_device(batch) for batch in buffer)
    else:
        sampler = ResumableBatchSampler(len(dataset), tr.batch_size, seed=tr.seed,
                                        start_batch=start_step * tr.accumulate_grad_batches,
                                        rank=fabric.global_rank, world_size=world)
        loader = DataLoader(MultiViewDataset(dataset, GlobalLocalViews(**_views_kwargs(cfg))), batch_sampler=sampler,
                            num_workers=tr.num_workers, pin_memory=fabric.device.type == "cuda")
        loader = fabric.setup_dataloaders(loader, use_distributed_sampler=False)

    contract = _data_contract(cfg, raw_method, organs)

    def save(step: int) -> Path:
        state = {"format": "organfm-checkpoint", "version": 1, "step": step, "method": raw_method.state_dict(),
                 "optimizer": optimizer.state_dict(), "rng": capture_rng(), "config": config_to_dict(cfg),
                 "export_prefix": raw_method.export_prefix, "contract": contract}
        path = run_dir / "checkpoints" / f"step-{step:08d}.ckpt"
        if fabric.is_global_zero:
            path = save_checkpoint(state, run_dir, step, keep=tr.keep_checkpoints)
        fabric.barrier()
        return path

    with ProgressReporter(total=max_steps, start=start_step, enabled=tr.progress and fabric.is_global_zero) as progress:
        result = train(fabric, method, optimizer, loader, schedules, start_step=start_step, max_steps=max_steps,
                       accumulate_grad_batches=tr.accumulate_grad_batches, clip_grad=o.clip_grad,
                       freeze_last_layer_steps=math.ceil(o.freeze_last_layer_epochs * steps_per_epoch),
                       save=save, checkpoint_every=tr.checkpoint_every, log_every=tr.log_every,
                       on_log=progress.update)
    for logger in loggers:
        logger.finalize("success")
    export = None
    checkpoint = result.last_checkpoint or latest_checkpoint(run_dir)
    if fabric.is_global_zero and checkpoint is not None:
        export = export_backbone(run_dir, checkpoint=checkpoint)[0]
    num_images = buffer.num_samples(result.step * tr.accumulate_grad_batches) if buffer is not None else len(dataset)
    return PretrainSummary(run_dir=run_dir, result=result, checkpoint=checkpoint, export=export,
                           num_images=num_images, organs=organs)


def _batch_source(cfg: Config) -> str:
    """Where batches come from: ``views`` (multi-view crops of a dataset) unless the method config names another."""
    return getattr(type(cfg.method), "batch_source", "views")


def build_synthetic_buffer(cfg: Config, *, dim: int, size: int, refresh: int | None, steps_per_epoch: int,
                           start_step: int, rank: int = 0) -> SyntheticBuffer:
    """RaSD's online buffer for this run: B = ``trainer.batch_size``, samples a function of (``trainer.seed``, rank)."""
    from organfm.synthesis import RaSDPairs, SyntheticBuffer

    if cfg.data.source != "synthetic":
        raise ValueError(f"{cfg.method_name} pretrains on synthetic data only: data must be 'synthetic', "
                         f"not {cfg.data.source!r}")
    if dim not in (2, 3):
        raise ValueError(f"method.dim must be 2 or 3, got {dim}")
    if steps_per_epoch < 1:
        raise ValueError(f"method.steps_per_epoch must be >= 1, got {steps_per_epoch}")
    # rank 0 draws the stream that `organfm synth --seed` writes; other ranks draw their own
    pairs = RaSDPairs((size,) * dim, num_labels=cfg.method.num_labels, seed=cfg.trainer.seed,
                      stream="rasd" if rank == 0 else f"rasd/rank{rank}")
    return SyntheticBuffer(pairs, batch_size=cfg.trainer.batch_size, start_step=start_step, refresh=refresh,
                           num_workers=cfg.trainer.num_workers)


def _views_kwargs(cfg: Config) -> dict[str, Any]:
    kwargs = asdict(cfg.views)
    for key in ("global_scale", "local_scale", "gamma", "blur_probs", "blur_sigma"):
        kwargs[key] = tuple(kwargs[key])
    return kwargs


def _data_contract(cfg: Config, method, organs: list[str]) -> dict[str, Any]:
    """What a user of the exported backbone must feed it (timm's pretrained_cfg habit)."""
    backbone = method.exported_backbone()
    input_size, mean, std = [1, cfg.views.global_size, cfg.views.global_size], cfg.views.mean, cfg.views.std
    if _batch_source(cfg) == "synthetic_buffer":  # synthetic [0, 1] images, fed without normalisation
        input_size, mean, std = [1] + [cfg.method.size] * cfg.method.dim, 0.0, 1.0
    return {
        "architecture": cfg.backbone.name,
        "backbone_args": getattr(backbone, "backbone_args", {}),
        "in_chans": 1,
        "num_features": int(backbone.num_features),
        "spatial_dims": int(getattr(backbone, "spatial_dims", 2)),
        "input_size": input_size,
        "interpolation": "bilinear" if len(input_size) == 3 else "trilinear",
        "mean": [mean],
        "std": [std],
        "intensity": {"mode": cfg.data.intensity, "window": cfg.data.window,
                      "note": "intensities scaled to [0, 1] by this mode, then (x - mean) / std"},
        "organs": organs,
        "method": cfg.method_name,
        "pretrained_cfg": {"input_size": input_size, "mean": [mean], "std": [std], "num_classes": 0},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
