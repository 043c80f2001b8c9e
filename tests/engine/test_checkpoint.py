"""Checkpoints: atomic save, exact round trip, the newest kept, damaged files named or skipped, RNG restored."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from organfm.engine import checkpoint as ckpt_mod
from organfm.engine.checkpoint import (CheckpointWriteError, capture_rng, export_backbone, latest_checkpoint,
                                       load_checkpoint, load_latest_readable, restore_rng, save_checkpoint)

KEYS = ("step", "method")


def _state(step: int) -> dict:
    g = torch.Generator().manual_seed(step)
    return {"step": step, "method": {"w": torch.randn(3, 4, generator=g), "b": torch.zeros(4, dtype=torch.int64)},
            "logs": [1.5, "text", None]}


def test_save_then_load_round_trips_exactly_and_keeps_the_newest(tmp_path):
    for step in (9, 10, 100):  # zero-padded names: step 100 sorts after 9 and 10
        path = save_checkpoint(_state(step), tmp_path, step, keep=2)
    assert path.name == "step-00000100.ckpt" and latest_checkpoint(tmp_path) == path
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000010.ckpt", "step-00000100.ckpt"]
    loaded = load_checkpoint(path, required=KEYS)
    expected = _state(100)
    assert loaded["step"] == 100 and loaded["logs"] == expected["logs"]
    assert torch.equal(loaded["method"]["w"], expected["method"]["w"])
    assert loaded["method"]["b"].dtype == torch.int64
    assert latest_checkpoint(tmp_path / "elsewhere") is None


def test_a_checkpoint_without_its_keys_is_named(tmp_path):
    bad = tmp_path / "checkpoints" / "step-00000001.ckpt"
    bad.parent.mkdir(parents=True)
    torch.save({"step": 1, "method": {}}, bad)
    with pytest.raises(ValueError, match="not an organfm checkpoint: it lacks export_prefix, contract, optimizer, rng, config"):
        load_checkpoint(bad)
    with pytest.raises(ValueError, match="lacks export_prefix, contract"):
        export_backbone(tmp_path)


class _Arbitrary:
    pass


def test_empty_foreign_and_object_holding_files_are_refused_by_name(tmp_path):
    empty, foreign, objects = tmp_path / "empty.ckpt", tmp_path / "foreign.ckpt", tmp_path / "objects.ckpt"
    empty.write_bytes(b"")
    foreign.write_bytes(b"this is not a checkpoint")
    torch.save({"step": 1, "method": _Arbitrary()}, objects)
    with pytest.raises(ValueError, match="empty.ckpt cannot be read: it is empty"):
        load_checkpoint(empty, required=KEYS)
    with pytest.raises(ValueError, match="foreign.ckpt cannot be read"):
        load_checkpoint(foreign, required=KEYS)
    with pytest.raises(ValueError, match="objects.ckpt refused: it holds objects other than tensors") as e:
        load_checkpoint(objects, required=KEYS)
    assert "weights_only=False" not in str(e.value)  # never advise unpickling arbitrary code


def test_a_failed_write_leaves_the_previous_checkpoint_and_no_temporary(tmp_path, monkeypatch):
    save_checkpoint(_state(1), tmp_path, 1)
    real_save = torch.save

    def half_then_full_disk(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise RuntimeError("PytorchStreamWriter failed writing file: No space left on device")

    monkeypatch.setattr(ckpt_mod.torch, "save", half_then_full_disk)
    with pytest.raises(CheckpointWriteError, match=r"step-00000002.ckpt.*step-00000001.ckpt is intact.*--resume"):
        save_checkpoint(_state(2), tmp_path, 2)
    monkeypatch.setattr(ckpt_mod.torch, "save", real_save)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000001.ckpt"]
    assert torch.equal(load_checkpoint(latest_checkpoint(tmp_path), required=KEYS)["method"]["w"],
                       _state(1)["method"]["w"])


def test_resume_falls_back_past_damaged_checkpoints_and_says_so(tmp_path):
    full = lambda step: {**_state(step), "export_prefix": "", "contract": {}, "optimizer": {}, "rng": {},  # noqa: E731
                         "config": {}}
    for step in (1, 2):
        save_checkpoint(full(step), tmp_path, step)
    newest = latest_checkpoint(tmp_path)
    newest.write_bytes(newest.read_bytes()[:100])  # a power cut inside a non-atomic copy, say
    warnings: list[str] = []
    path, ckpt = load_latest_readable(tmp_path, warn=warnings.append)
    assert path.name == "step-00000001.ckpt" and ckpt["step"] == 1
    assert len(warnings) == 1 and "skipped 1 unreadable checkpoint(s), resuming from" in warnings[0]
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="no readable checkpoint"):
        load_latest_readable(tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        load_latest_readable(tmp_path / "empty_run")


def test_rng_states_survive_a_checkpoint_round_trip(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    save_checkpoint({"step": 0, "method": {}, "rng": capture_rng()}, tmp_path, 0)
    first = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())
    restore_rng(load_checkpoint(latest_checkpoint(tmp_path), required=("rng",))["rng"])  # weights_only load
    assert (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()) == first
