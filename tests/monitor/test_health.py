"""The monitor inside a pretraining run: files, verdicts that tell a frozen run from a learning one, resume,
no effect on the trained weights, and the config-time input-size check."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from organfm.config import ConfigError, load_config
from organfm.engine.pretrain import pretrain
from organfm.monitor import LEARNING, NOT_LEARNING, read_health

TINY = ["backbone.name=test_convnext", "data.synthetic_organs=4", "data.synthetic_images_per_organ=16",
        "data.synthetic_size=32", "views.global_size=32", "views.local_size=32", "views.num_local_views=2",
        "trainer.batch_size=8", "trainer.num_workers=0", "trainer.progress=false", "trainer.deterministic=true",
        "trainer.log_every=1", "trainer.monitor_images=32", "method.out_dim=64", "method.hidden_dim=32",
        "method.bottleneck_dim=16"]


def run(tmp_path, name, *extra, method="coda"):
    return pretrain(load_config(method, None, TINY + list(extra) + [f"trainer.out_dir={tmp_path / name}"]))


def test_a_run_writes_health_files_with_a_step_zero_reference(tmp_path):
    s = run(tmp_path, "a", "trainer.max_steps=4", "trainer.monitor_every=2")
    h = read_health(s.run_dir)
    assert h is not None and (s.run_dir / "health.png").stat().st_size > 1000
    assert [r["step"] for r in h["history"]] == [0, 2, 4]
    assert h["reference"]["step"] == 0 and h["reference"]["distance"] == 0.0
    for key in ("knn", "embed_std_ratio", "rankme", "distance", "teacher_entropy", "teacher_batch_entropy",
                "log_k", "alignment", "uniformity"):
        assert key in h["signals"], key
    assert h["verdict"] in (LEARNING, NOT_LEARNING, "collapsed") and h["reason"]
    assert s.health["verdict"] == h["verdict"] and "health: " in s.line("coda", "test_convnext")
    # the export says it too, so an evaluation of it can
    exported = json.loads((s.run_dir / "export" / "backbone.json").read_text())["health"]
    assert exported == {"verdict": h["verdict"], "reason": h["reason"], "step": 4}
    # the scalars reach the run's CSV log too
    csv = next((s.run_dir / "logs" / "csv").rglob("metrics.csv")).read_text()
    assert "health/knn" in csv.splitlines()[0]


def test_lr_zero_is_not_learning_and_says_the_weights_did_not_move(tmp_path):
    s = run(tmp_path, "frozen", "optim.lr=0", "trainer.max_steps=3", "trainer.monitor_every=3")
    assert s.health["verdict"] == NOT_LEARNING
    assert s.health["signals"]["distance"] == 0.0 and "initial weights" in s.health["reason"]
    assert s.warning() is not None and "NOT LEARNING YET" in s.warning()


def test_the_monitor_does_not_change_what_is_trained(tmp_path):
    on = run(tmp_path, "on", "trainer.max_steps=3", "trainer.monitor_every=1")
    off = run(tmp_path, "off", "trainer.max_steps=3", "trainer.monitor_every=0")
    assert off.health is None and read_health(off.run_dir) is None
    a, b = load_file(on.export), load_file(off.export)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_resumed_run_keeps_its_history_and_step_zero_weights(tmp_path):
    run(tmp_path, "r", "trainer.max_steps=2", "trainer.monitor_every=1")
    cfg = load_config(None, tmp_path / "r" / "config.yaml", ["trainer.max_steps=4"])
    s = pretrain(cfg, resume_dir=tmp_path / "r")
    h = read_health(s.run_dir)
    assert [r["step"] for r in h["history"]] == [0, 1, 2, 3, 4]
    assert h["signals"]["distance"] > 0  # measured against the saved step-0 weights, not the resumed ones
    straight = run(tmp_path, "s", "trainer.max_steps=4", "trainer.monitor_every=1")
    assert h["signals"]["distance"] == pytest.approx(straight.health["signals"]["distance"], rel=1e-5)


@pytest.mark.parametrize("key,value", [("views.local_size", 16), ("views.global_size", 16)])
def test_a_view_smaller_than_convnext_accepts_is_a_config_error_naming_the_key(tmp_path, key, value):
    with pytest.raises(ConfigError) as e:
        run(tmp_path, "small", f"{key}={value}", "trainer.max_steps=1")
    assert f"{key}={value}" in str(e.value) and "32" in str(e.value)
    assert not (tmp_path / "small" / "checkpoints").exists()


def test_the_cli_prints_the_verdict_and_a_warning_before_the_export(tmp_path, capsys):
    from organfm.cli.main import main

    assert main(["pretrain", *TINY, "optim.lr=0", "trainer.max_steps=2", "trainer.monitor_every=2",
                 f"trainer.out_dir={tmp_path / 'cli'}"]) == 0
    out, err = capsys.readouterr()
    assert "health: not learning yet" in out and "warning: this run is NOT LEARNING YET" in err
    assert json.loads((tmp_path / "cli" / "health.json").read_text())["verdict"] == NOT_LEARNING
