"""Run-level hardening: one run per folder, named errors instead of tracebacks, no lost checkpoints."""
from __future__ import annotations

import errno
import os

import pytest
import torch

from organfm.config import ConfigError, load_config
from organfm.engine import checkpoint as ckpt_mod
from organfm.engine.checkpoint import CheckpointWriteError, latest_checkpoint, load_checkpoint
from organfm.engine.pretrain import pretrain
from organfm.engine.runlock import RunFolderBusy, RunLock

TINY = ["backbone.name=test_convnext", "data.synthetic_organs=3", "data.synthetic_images_per_organ=4",
        "data.synthetic_size=32", "views.global_size=32", "views.local_size=32", "views.num_local_views=1",
        "trainer.batch_size=4", "trainer.num_workers=0", "trainer.progress=false", "trainer.deterministic=true",
        "method.out_dim=32", "method.hidden_dim=16", "method.bottleneck_dim=8"]


def run(tmp, name, extra=(), resume=False):
    if resume:
        return pretrain(load_config(None, tmp / name / "config.yaml", list(extra)), resume_dir=tmp / name)
    return pretrain(load_config("coda", None, TINY + list(extra) + [f"trainer.out_dir={tmp / name}"]))


def test_a_whole_run_is_refused_before_it_writes_anything_while_another_owns_the_folder(tmp_path):
    # the lock itself is tested in tests/engine/test_runlock.py; here: pretrain takes it before any write
    with RunLock(tmp_path):
        with pytest.raises(RunFolderBusy):
            run(tmp_path, ".", ["trainer.max_steps=1"])
    assert not (tmp_path / "config.yaml").exists()


@pytest.mark.parametrize("override, words", [("trainer.batch_size=0", "trainer.batch_size must be a positive"),
                                             ("trainer.batch_size=-8", "trainer.batch_size"),
                                             ("trainer.max_steps=-5", "trainer.max_steps must be a positive"),
                                             ("views.num_local_views=-1", "views.num_local_views must be >= 0"),
                                             ("optim.clip_mode=sometimes", "optim.clip_mode")])
def test_impossible_settings_are_named_before_anything_runs(override, words):
    with pytest.raises(ConfigError, match=words):
        load_config("coda", None, [override])


def test_resume_problems_are_clear_errors(tmp_path):
    run(tmp_path, "r", ["trainer.max_steps=2"])
    with pytest.raises(ValueError, match="already at step 2 and trainer.max_steps=1"):
        run(tmp_path, "r", ["trainer.max_steps=1"], resume=True)
    cfg_file = tmp_path / "r" / "config.yaml"
    cfg_file.write_text(cfg_file.read_text().replace("test_convnext", "test_resnet"))
    with pytest.raises(ValueError, match="written with backbone 'test_convnext'.*config.yaml edited"):
        run(tmp_path, "r", ["trainer.max_steps=3"], resume=True)


def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    run(tmp_path, "r", ["trainer.max_steps=2", "trainer.checkpoint_every=1"])
    latest = latest_checkpoint(tmp_path / "r")
    latest.write_bytes(latest.read_bytes()[:100])  # a power cut inside a non-atomic copy, say
    resumed = run(tmp_path, "r", ["trainer.max_steps=3"], resume=True)
    assert resumed.result.start_step == 1 and resumed.result.step == 3
    assert "resuming from" in capsys.readouterr().err


def test_a_full_disk_during_a_checkpoint_names_the_file_and_what_is_intact(tmp_path, monkeypatch):
    run(tmp_path, "r", ["trainer.max_steps=1"])
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ckpt_mod.torch, "save", full_disk)
    with pytest.raises(CheckpointWriteError) as e:
        run(tmp_path, "r", ["trainer.max_steps=2"], resume=True)
    monkeypatch.setattr(ckpt_mod.torch, "save", real_save)
    msg = str(e.value)
    assert "step-00000002.ckpt" in msg and "step-00000001.ckpt is intact" in msg and "--resume" in msg
    assert latest_checkpoint(tmp_path / "r").name == "step-00000001.ckpt"
    assert not list((tmp_path / "r" / "checkpoints").glob(".*.tmp"))  # no half-written file left behind
    load_checkpoint(latest_checkpoint(tmp_path / "r"))  # and the old one still loads
