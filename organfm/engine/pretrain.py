"""The boundary between config and objects: build everything for a pretraining run, then call ``train``.

This is the only place below the CLI that reads the whole config; every object gets plain kwargs. It knows
no method by name: the method's class declares its batch source, its schedules and its exports
(``organfm.methods.base``), and this module builds what is declared.
"""
from __future__ import annotations

import functools
import json
import math
import os
import sys
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from organfm.backbones import create_backbone, list_backbone_arguments
from organfm.backbones.base import check_input_sizes
from organfm.backbones.contract import build_contract
from organfm.batches import BatchSource, SourceContext, create_batch_source
from organfm.config import Config, ConfigError, config_to_dict, dump_config
from organfm.data.errors import count_skips
from organfm.engine.checkpoint import (capture_rng, export_backbone, latest_checkpoint, load_latest_readable,
                                       restore_rng, save_checkpoint)
from organfm.engine.loop import StopRequest, TrainResult, ignore_stop_signals, train
from organfm.engine.optim import build_optimizer
from organfm.engine.progress import ProgressReporter, TimedBatches
from organfm.engine.runlock import RunLock
from organfm.engine.schedules import ScheduleContext, build_schedules
from organfm.methods import get_method
from organfm.methods.base import StepState
from organfm.monitor import LEARNING, HealthMonitor
from organfm.monitor.views import VIEWS_FILE, ViewsSnapshot
from organfm.outputs.atomic import write_atomic

__all__ = ["PretrainSummary", "pretrain"]


@dataclass
class PretrainSummary:
    run_dir: Path
    result: TrainResult
    checkpoint: Path | None
    export: Path | None
    num_images: int
    organs: list[str]
    skipped: int = 0
    health: dict[str, Any] | None = None
    splits: dict[str, int] | None = None  # images per split of the source; training reads ``split``
    split: str | None = None
    method: str = ""
    backbone: str = ""

    def health_text(self) -> str:
        """``learning (kNN 0.612 -> 0.934)``: the verdict, and the kNN monitor where labels exist."""
        if not self.health:
            return "not monitored"
        sig, ref = self.health.get("signals") or {}, self.health.get("reference") or {}
        knn = f" (kNN {ref['knn']:.3f} -> {sig['knn']:.3f})" if "knn" in sig and "knn" in ref else ""
        return f"{self.health['verdict']}{knn}"

    def warning(self) -> str | None:
        """A warning for a run that is not learning (printed before its export path), else None."""
        if not self.health or self.health.get("verdict") == LEARNING:
            return None
        tips = "; ".join(self.health.get("next") or [])
        return (f"this run is {self.health['verdict'].upper()}: {self.health.get('reason')}. "
                f"Its export may be no better than its initial weights. Try: {tips} (see {self.run_dir}/health.png)")

    def line(self, method: str | None = None, backbone: str | None = None) -> str:
        """The one summary line ``organfm pretrain`` prints (method and backbone: the run's own by default)."""
        method, backbone = method or self.method, backbone or self.backbone
        r = self.result
        first, last = r.first_logs.get("loss", float("nan")), r.last_logs.get("loss", float("nan"))
        ips = (r.step - r.start_step) / max(r.seconds, 1e-9)
        state = "interrupted at" if r.interrupted else "done,"
        skipped = f" ({self.skipped} unreadable, skipped: see skips/)" if self.skipped else ""
        if self.splits:  # said out loud: what training read and what it held out
            held = ", ".join(f"{k} {v}" for k, v in self.splits.items())
            skipped += f" (split {self.split or 'all'}; the source's splits: {held})"
        return (f"organfm pretrain {method} ({backbone}) {state} step {r.step}: {self.num_images} images{skipped}, "
                f"{len(self.organs)} organs, loss {first:.4f} -> {last:.4f}, {r.seconds:.1f} s ({ips:.2f} steps/s); "
                f"health: {self.health_text()}; checkpoint {self.checkpoint}; export {self.export}")


def _resolve_device_settings(cfg: Config) -> dict[str, Any]:
    precision = cfg.trainer.precision
    if precision == "auto":
        # bf16 autocast is ~16x slower than fp32 on CPUs without native bf16
        precision = "bf16-mixed" if torch.cuda.is_available() and cfg.trainer.accelerator != "cpu" else "32-true"
    if cfg.trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        # Fabric's own words ("No supported gpu backend found!") name neither the key nor the way out
        raise ConfigError(f"trainer.accelerator={cfg.trainer.accelerator}: no CUDA GPU is visible on this machine; "
                          "use trainer.accelerator=cpu (or auto, which picks the GPU where there is one)")
    return dict(accelerator=cfg.trainer.accelerator, devices=cfg.trainer.devices, num_nodes=cfg.trainer.num_nodes,
                strategy=cfg.trainer.strategy, precision=precision)


def _default_run_dir(cfg: Config) -> Path:
    return Path("runs") / f"{cfg.method_name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def pretrain(cfg: Config, *, resume_dir: str | Path | None = None) -> PretrainSummary:
    """Pretrain ``cfg.method_name`` as configured; resume from ``resume_dir``'s latest checkpoint if given."""
    tr = cfg.trainer
    run_dir = Path(resume_dir or tr.out_dir or _default_run_dir(cfg))
    tr.out_dir = str(run_dir)
    # the thread count and the deterministic mode are process-wide: set for this run, given back after it, so a
    # caller's later work (and the next run in the same process) sees what it had
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    if tr.torch_threads:
        torch.set_num_threads(tr.torch_threads)
    if tr.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    try:
        return _start(cfg, run_dir, resume_dir)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _start(cfg: Config, run_dir: Path, resume_dir: str | Path | None) -> PretrainSummary:
    from lightning.fabric import Fabric
    from lightning.fabric.loggers import CSVLogger, TensorBoardLogger

    tr = cfg.trainer
    ckpt = ckpt_path = None
    if resume_dir is not None:
        ckpt_path, ckpt = load_latest_readable(run_dir, warn=_warn)
    elif latest_checkpoint(run_dir) is not None:
        raise ValueError(f"{run_dir} already holds a run: continue it with --resume {run_dir}, "
                         "or choose another trainer.out_dir")
    start_step = int(ckpt["step"]) if ckpt else 0
    if tr.max_steps is not None and tr.max_steps <= start_step:
        raise ValueError(f"{run_dir} is already at step {start_step} and trainer.max_steps={tr.max_steps}: nothing "
                         "to do; raise trainer.max_steps to continue the run")

    loggers = [CSVLogger(run_dir / "logs", name="csv", version=f"from-step-{start_step}"),
               TensorBoardLogger(run_dir / "logs", name="tensorboard", version="")]
    fabric = Fabric(loggers=loggers, **_resolve_device_settings(cfg))
    fabric.launch()
    fabric.seed_everything(tr.seed, verbose=False)
    lock = RunLock(run_dir).acquire() if fabric.is_global_zero else None
    # from here on SIGINT/SIGTERM end the run at a step boundary with its checkpoint (a signal while the data
    # is still being built: at the first step)
    try:
        with StopRequest() as stop:
            if lock is not None and lock.stale_pid:
                _warn(f"{run_dir} was last used by pid {lock.stale_pid}, which ended without finishing (a crash or "
                      "kill)")
            return _pretrain(cfg, fabric, loggers, run_dir, ckpt_path, ckpt, start_step, stop)
    finally:
        if lock is not None:
            lock.release()


def _pretrain(cfg: Config, fabric, loggers, run_dir: Path, ckpt_path, ckpt, start_step: int,
              stop: StopRequest) -> PretrainSummary:
    tr = cfg.trainer

    world = fabric.world_size
    method_cls = get_method(cfg.method_name)
    method_kwargs = asdict(cfg.method)
    source = create_batch_source(method_cls.batch_source, SourceContext(
        data=cfg.data, views=cfg.views, batch_size=tr.batch_size, accumulate=tr.accumulate_grad_batches,
        seed=tr.seed, start_batch=start_step * tr.accumulate_grad_batches, rank=fabric.global_rank,
        world_size=world, num_workers=tr.num_workers, steps_per_epoch=tr.steps_per_epoch, run_dir=run_dir,
        options={key: method_kwargs[key] for key in method_cls.source_keys}))
    steps_per_epoch = source.steps_per_epoch
    backbone = create_backbone(cfg.backbone.name, in_chans=1, pretrained_file=cfg.backbone.pretrained_file,
                               drop_path_rate=cfg.backbone.drop_path_rate, **source.backbone_kwargs,
                               **_backbone_size(cfg),
                               **({} if cfg.backbone.strict_load else {"strict": False}))
    check_input_sizes(backbone, source.input_sizes, name=cfg.backbone.name)
    method = method_cls(backbone, **{**method_kwargs, **source.method_kwargs})
    on_cuda = fabric.device.type == "cuda"
    if on_cuda:  # convolutions run NHWC on tensor cores; fused AdamW is one kernel and skips steps on device
        method = method.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(method, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), fused=on_cuda)

    total_steps = max(1, math.ceil(tr.epochs * steps_per_epoch))
    max_steps = tr.max_steps if tr.max_steps is not None else total_steps
    o = cfg.optim
    schedules = build_schedules(method_cls.schedules, ScheduleContext(
        total_steps=total_steps, steps_per_epoch=steps_per_epoch, optim=o, teacher=cfg.teacher, method=cfg.method))

    if ckpt is not None:
        try:
            method.load_state_dict(ckpt["method"])
            optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            saved = ckpt["config"].get("backbone", {}).get("name")
            raise ValueError(f"checkpoint {ckpt_path} does not fit this run's config (it was written with backbone "
                             f"{saved!r}, the config now says {cfg.backbone.name!r}; was {run_dir}/config.yaml "
                             f"edited?): {str(e).splitlines()[0]}") from None
        restore_rng(ckpt["rng"])
    first_summary = source.summary(start_step)
    missing = first_summary.get("organs_missing_from_split") or []
    if missing and fabric.is_global_zero:
        _warn(f"{len(missing)} organ(s) have no image in the {first_summary.get('split')!r} split and are not trained "
              f"on: {', '.join(map(str, missing))} (the source's splits: {first_summary.get('splits')}); use "
              "data.split=all to train on every image, or give those organs more subjects")
    if fabric.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(run_dir / "config.yaml", dump_config(cfg))
        write_atomic(run_dir / "data.json", json.dumps(first_summary, indent=2, default=str))
        source.write_run_files(run_dir)

    raw_method = method
    if tr.compile:
        method = torch.compile(method)
    method, optimizer = fabric.setup(method, optimizer)
    # the progress line's data-wait share: the time the loop spends in next() on the batches
    loader = timed = TimedBatches(_device_batches(fabric, source))
    # views.png once per run folder: a resumed run keeps the picture of the batches the run started with
    if tr.views_png and fabric.is_global_zero and (start_step == 0 or not (run_dir / VIEWS_FILE).exists()):
        snapshot = ViewsSnapshot(run_dir, spatial_dims=len(source.contract["input_size"]) - 1, step=start_step,
                                 log_image=_logged_image(loggers), title=cfg.method_name)
        loader = _tap_first(loader, snapshot)
    contract = _data_contract(cfg, raw_method, source)
    monitor = None
    if tr.monitor_every and source.monitor is not None:
        monitor = HealthMonitor(raw_method, source.monitor(tr.monitor_images), every=tr.monitor_every,
                                run_dir=run_dir, write=fabric.is_global_zero,
                                log=lambda scalars, step: fabric.log_dict(scalars, step=step))
        monitor.start(start_step, StepState(step=start_step, epoch=start_step / max(1, steps_per_epoch),
                                            values=schedules.at(start_step)))

    def save(step: int) -> Path:
        state = {"format": "organfm-checkpoint", "version": 1, "step": step, "method": raw_method.state_dict(),
                 "optimizer": optimizer.state_dict(), "rng": capture_rng(), "config": config_to_dict(cfg),
                 "export_prefix": raw_method.export_prefix, "contract": contract}
        path = run_dir / "checkpoints" / f"step-{step:08d}.ckpt"
        if fabric.is_global_zero:
            path = save_checkpoint(state, run_dir, step, keep=tr.keep_checkpoints)
        fabric.barrier()
        return path

    try:
        with ProgressReporter(total=max_steps, start=start_step, enabled=tr.progress and fabric.is_global_zero,
                              steps_per_epoch=steps_per_epoch, data_seconds=lambda: timed.seconds) as progress:
            result = train(fabric, method, optimizer, loader, schedules, start_step=start_step, max_steps=max_steps,
                           steps_per_epoch=steps_per_epoch, accumulate_grad_batches=tr.accumulate_grad_batches,
                           clip_grad=o.clip_grad, clip_mode=o.clip_mode,
                           freeze_last_layer_steps=math.ceil(o.freeze_last_layer_epochs * steps_per_epoch),
                           save=save, checkpoint_every=tr.checkpoint_every, log_every=tr.log_every,
                           check_finite_every=tr.check_finite_every,
                           on_log=progress.update, on_step=monitor, stop=stop)
    finally:
        loader.close()  # ends the DataLoader workers now (they ignore the signals that stop a run)
    for logger in loggers:
        logger.finalize("success")
    export = None
    checkpoint = result.last_checkpoint or latest_checkpoint(run_dir)
    data_summary = source.summary(result.step)  # again at the end: it now counts the items skipped in training
    # one counter for every batch source: the run's skip log, which every process of every source appends to
    data_summary["skipped_logged"] = count_skips(run_dir / "skips")
    if fabric.is_global_zero:
        write_atomic(run_dir / "data.json", json.dumps(data_summary, indent=2, default=str))
        if checkpoint is not None:
            export = export_backbone(run_dir, checkpoint=checkpoint)[0]
    return PretrainSummary(run_dir=run_dir, result=result, checkpoint=checkpoint, export=export,
                           num_images=source.num_items(result.step), organs=list(source.contract["organs"]),
                           skipped=int(data_summary.get("skipped_logged", 0) or 0),
                           health=monitor.report() if monitor is not None and monitor.records else None,
                           splits=data_summary.get("splits") if isinstance(data_summary.get("splits"), dict) else None,
                           split=data_summary.get("split"), method=cfg.method_name, backbone=cfg.backbone.name)


_SIZE_KEYS = ("embed_dim", "depth", "num_heads", "patch_size")


def _backbone_size(cfg: Config) -> dict[str, int]:
    """The ``backbone.embed_dim/depth/num_heads/patch_size`` keys that are set, for a backbone that takes them.

    Unset (None) keys are not passed, so the backbone's default (or its ``pretrained_file``'s) applies; a set key
    the backbone has no argument for is refused here rather than silently ignored.
    """
    given = {k: int(getattr(cfg.backbone, k)) for k in _SIZE_KEYS if getattr(cfg.backbone, k) is not None}
    accepted = set(list_backbone_arguments(cfg.backbone.name))
    refused = [k for k in given if k not in accepted]
    if refused:
        keys = ", ".join(f"backbone.{k}" for k in refused)
        raise ConfigError(f"{keys} cannot size backbone {cfg.backbone.name!r}, which has no such argument (they "
                          "size organ_set_vit; a timm backbone takes its size from its name, e.g. "
                          "vit_small_patch16_224): remove the key(s) or choose another backbone.name")
    return given


def _warn(message: str) -> None:
    print(f"organfm pretrain: warning: {message}", file=sys.stderr, flush=True)


def _device_batches(fabric, source: BatchSource):
    """The source's batches on this process's device, as a generator whose ``close()`` ends loader workers.

    A DataLoader's workers get :func:`ignore_stop_signals` as their ``worker_init_fn``: a SIGTERM to the whole
    process group (a cluster's preemption) then reaches only the main process, which stops at a step boundary
    and ends the workers itself (``close()``).
    """
    from torch.utils.data import DataLoader

    loader = source.batches
    if isinstance(loader, DataLoader):
        if fabric.device.type == "cuda":
            loader.pin_memory = True
        if loader.num_workers > 0:
            loader.worker_init_fn = functools.partial(_worker_init, previous=loader.worker_init_fn)
    iterator = iter(loader)
    try:
        for batch in iterator:
            batch = fabric.to_device(batch)
            yield batch if source.on_device is None else source.on_device(batch)
    finally:
        shutdown = getattr(iterator, "_shutdown_workers", None)  # a multi-worker DataLoader iterator
        if shutdown is not None:
            shutdown()


def _tap_first(batches: Iterator[Any], look: Callable[[Any], Any]) -> Iterator[Any]:
    """``batches`` unchanged, with ``look(first batch)`` called before the first is handed on.

    Closing this generator closes ``batches`` (which ends the loader's workers), as the loop's caller expects.
    """
    try:
        for i, batch in enumerate(batches):
            if i == 0:
                look(batch)
            yield batch
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


def _logged_image(loggers) -> Callable[[str, Any, int], None] | None:
    """``log(tag, (H, W, 3) uint8, step)`` into the run's TensorBoard log, or None without one."""
    from lightning.fabric.loggers import TensorBoardLogger

    board = next((lg for lg in loggers if isinstance(lg, TensorBoardLogger)), None)
    if board is None:
        return None
    return lambda tag, image, step: board.experiment.add_image(tag, image, global_step=step, dataformats="HWC")


def _worker_init(worker_id: int, previous=None) -> None:
    """A loader worker ignores the stop signals, then runs the loader's own ``worker_init_fn``."""
    ignore_stop_signals(worker_id)
    if previous is not None:
        previous(worker_id)


def _data_contract(cfg: Config, method, source: BatchSource) -> dict[str, Any]:
    """What a user of the exported backbone must feed it (timm's pretrained_cfg habit), as the checkpoint's
    plain dict (checkpoints load with ``weights_only=True``)."""
    text = method.exported_text()
    return build_contract(method.exported_backbone(), architecture=cfg.backbone.name, data=source.contract,
                          method=cfg.method_name, text=text.describe() if text is not None else None).to_dict()
