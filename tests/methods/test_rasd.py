"""RaSD: the method on a dense backbone, its configs, and pretraining from the synthetic buffer end to end."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from organfm.backbones import create_backbone
from organfm.config import load_config
from organfm.engine.checkpoint import load_checkpoint
from organfm.engine.pretrain import pretrain
from organfm.methods import RaSD
from organfm.synthesis import RaSDPairs, SyntheticBuffer
from tests.methods.helpers import state

REPO = Path(__file__).resolve().parents[2]
TINY = ["data.synthetic_size=16", "method.num_labels=3", "trainer.batch_size=4", "trainer.num_workers=0",
        "trainer.progress=false", "trainer.deterministic=true", "trainer.log_every=1", "optim.lr=1e-3",
        "optim.min_lr=1e-3"]


def run(tmp: Path, name: str, extra=(), resume: bool = False):
    if resume:
        return pretrain(load_config(None, tmp / name / "config.yaml", list(extra)), resume_dir=tmp / name)
    return pretrain(load_config("rasd", None, TINY + list(extra) + [f"trainer.out_dir={tmp / name}"]))


def test_every_parameter_learns_from_a_buffer_batch():
    torch.manual_seed(0)
    method = RaSD(create_backbone("unet_small", channels=[8, 16]), num_labels=3)
    batch = SyntheticBuffer(RaSDPairs((16, 16), num_labels=3), batch_size=2).batch(0)
    out = method(batch, state(0.04))
    assert set(out.logs) == {"loss", "loss_seg", "loss_proto"} and torch.isfinite(out.loss)
    assert out.loss.item() == pytest.approx(out.logs["loss_seg"].item() + out.logs["loss_proto"].item(), rel=1e-6)
    out.loss.backward()
    for name, p in method.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert method.exported_backbone() is method.student["backbone"]


def test_a_backbone_without_dense_features_is_refused():
    method = RaSD(create_backbone("test_convnext", in_chans=1), num_labels=3)
    batch = SyntheticBuffer(RaSDPairs((32, 32), num_labels=3), batch_size=2).batch(0)
    with pytest.raises(ValueError, match="dense backbone"):
        method(batch, state(0.04))


def test_configs_hold_the_paper_and_cpu_recipes():
    default = load_config("rasd")
    assert default.backbone.name == "unet_small" and default.optim.lr == default.optim.min_lr == 1e-5
    paper = load_config(None, REPO / "configs" / "rasd_paper.yaml")
    assert paper.method_name == "rasd" and paper.backbone.name == "swin_unetr"
    assert (paper.data.synthetic_dim, paper.data.synthetic_size, paper.trainer.batch_size) == (2, 512, 16)
    assert paper.method.num_labels == 512 // 32 and paper.trainer.steps_per_epoch == 200
    assert paper.optim.lr == paper.optim.min_lr == 1e-5 and paper.optim.warmup_epochs == 0
    assert paper.optim.weight_decay == paper.optim.weight_decay_end == 0.01 and paper.optim.clip_grad is None
    cpu = load_config(None, REPO / "configs" / "rasd.yaml")
    assert (cpu.backbone.name, cpu.data.synthetic_size, cpu.trainer.batch_size) == ("unet_small", 64, 8)


def test_resumed_run_matches_uninterrupted_run(tmp_path):
    full = run(tmp_path, "full", ["trainer.max_steps=6"])
    part = run(tmp_path, "part", ["trainer.max_steps=3"])
    resumed = run(tmp_path, "part", ["trainer.max_steps=6"], resume=True)
    assert resumed.result.start_step == 3 and resumed.result.step == 6
    a, b = load_file(full.export), load_file(resumed.export)
    assert a.keys() == b.keys() and max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    ca, cb = load_checkpoint(full.checkpoint), load_checkpoint(resumed.checkpoint)
    assert all(torch.equal(ca["method"][k], cb["method"][k]) for k in ca["method"])
    assert part.result.last_logs["loss"] != resumed.result.last_logs["loss"]
    assert full.num_images == 4 + 5  # B, then one fresh sample per step


def test_export_loads_back_by_its_registered_name(tmp_path):
    s = run(tmp_path, "r", ["trainer.max_steps=1", "data.synthetic_dim=3"])
    contract = json.loads((s.export.parent / "backbone.json").read_text())
    assert contract["architecture"] == "unet_small" and contract["method"] == "rasd"
    assert contract["input_size"] == [1, 16, 16, 16] and contract["spatial_dims"] == 3
    assert contract["mean"] == [0.0] and contract["std"] == [1.0]
    loaded = create_backbone(contract["architecture"], pretrained_file=str(s.export))
    assert loaded.spatial_dims == 3
    student = {k[len("student.backbone.model."):]: v for k, v in load_checkpoint(s.checkpoint)["method"].items()
               if k.startswith("student.backbone.model.")}
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, student[k]), k


def test_rasd_refuses_real_data(tmp_path):
    with pytest.raises(ValueError, match="synthetic image/label pairs only"):
        run(tmp_path, "r", ["trainer.max_steps=1", f"data={tmp_path}"])
