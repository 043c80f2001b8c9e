"""The command line as a user drives it, including crashes: kill -9 and Ctrl-C, then --resume."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from organfm.cli.main import main

TINY = ["backbone.name=test_convnext", "views.global_size=32", "views.local_size=32", "views.num_local_views=2",
        "method.out_dim=64", "method.hidden_dim=32", "method.bottleneck_dim=16", "trainer.batch_size=8",
        "trainer.num_workers=0", "trainer.deterministic=true", "trainer.seed=0", "trainer.log_every=1"]
SYNTH = ["data.synthetic_organs=4", "data.synthetic_images_per_organ=16", "data.synthetic_size=32"]


def organfm(*args: str, **kw) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "organfm.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, **kw)


def weights(run: Path) -> dict:
    return load_file(next((run / "export").glob("*.safetensors")))


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def wait_for_checkpoint(run: Path, proc: subprocess.Popen, timeout: float = 600) -> None:
    # a deadline against a hung child, not a speed check: a loaded machine reads MedNIST for minutes
    t0 = time.time()
    while not list((run / "checkpoints").glob("step-*.ckpt")):
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() - t0 < timeout, "no checkpoint appeared"
        time.sleep(0.05)


def test_unknown_key_is_an_error_listing_valid_keys(capsys):
    assert main(["pretrain", "--method", "coda", "trainer.max_step=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'trainer.max_step'" in err and "trainer.max_steps" in err


def test_resume_refuses_to_change_the_recipe(tmp_path, capsys):
    assert main(["pretrain", *TINY, *SYNTH, "trainer.max_steps=1", f"trainer.out_dir={tmp_path / 'r'}"]) == 0
    assert main(["pretrain", "--resume", str(tmp_path / "r"), "optim.lr=1"]) == 2
    assert "only trainer.* keys may change" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing")]) == 2


def test_a_fresh_run_never_overwrites_a_run_with_checkpoints(tmp_path, capsys):
    args = ["pretrain", *TINY, *SYNTH, "trainer.max_steps=1", f"trainer.out_dir={tmp_path / 'r'}"]
    assert main(args) == 0
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes_identically(tmp_path):
    common = ["pretrain", *TINY, *SYNTH, "trainer.checkpoint_every=1000"]
    assert main([*common, "trainer.max_steps=8", f"trainer.out_dir={tmp_path / 'full'}"]) == 0
    run = tmp_path / "int"
    proc = organfm(*common, "trainer.max_steps=8", f"trainer.out_dir={run}", "trainer.progress=true")
    for line in proc.stdout:  # interrupt once a few steps are logged
        if line.startswith("step 3/"):
            proc.send_signal(signal.SIGINT)
            break
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out
    ckpts = sorted((run / "checkpoints").glob("*.ckpt"))
    assert ckpts and "interrupted at step" in out
    assert main(["pretrain", "--resume", str(run), "trainer.max_steps=8"]) == 0
    assert max_diff(weights(tmp_path / "full"), weights(run)) <= 1e-6


@pytest.mark.slow
def test_real_mednist_run_survives_kill_9(tmp_path, mednist_archive):
    """A short Coda run on real MedNIST (tar.gz read in place), killed hard, resumes to the same weights."""
    common = ["pretrain", "--method", "coda", f"data={mednist_archive}", *TINY, "trainer.checkpoint_every=2"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert main([*common, "trainer.max_steps=6", f"trainer.out_dir={full}"]) == 0
    proc = organfm(*common, "trainer.max_steps=1000", f"trainer.out_dir={killed}")
    wait_for_checkpoint(killed, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    from organfm.engine.checkpoint import latest_checkpoint, load_checkpoint

    assert load_checkpoint(latest_checkpoint(killed))["step"] < 6  # killed mid-run, before the end
    assert main(["pretrain", "--resume", str(killed), "trainer.max_steps=6"]) == 0
    assert max_diff(weights(full), weights(killed)) <= 1e-6
    import json

    data = json.loads((full / "data.json").read_text())
    assert data["duplicates_removed"] == 440 and len(json.loads((full / "export" / "backbone.json").read_text())["organs"]) == 6


def test_two_process_ddp_on_cpu_runs_the_same_loop(tmp_path):
    """Lightning Fabric launches 2 gloo ranks from the same command; the run finishes and exports once."""
    run = tmp_path / "ddp"
    proc = organfm("pretrain", *TINY, *SYNTH, "trainer.max_steps=2", "trainer.accelerator=cpu", "trainer.devices=2",
                   "trainer.strategy=ddp", f"trainer.out_dir={run}")
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    assert "done, step 2" in out
    # one export (rank 0's): organfm's weights and the same bytes under timm's name
    assert sorted(p.name for p in (run / "export").glob("*.safetensors")) == ["backbone.safetensors",
                                                                              "model.safetensors"]


def test_list_names_every_registered_method_protocol_and_text_tower(capsys):
    from organfm.evaluation.protocol import list_protocols
    from organfm.methods import list_methods

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert f"methods: {', '.join(list_methods())}" in out and "imagetext" in out
    assert f"evaluation protocols: {', '.join(list_protocols())}" in out and "zeroshot" in out
    assert "text towers: hash, hf, small" in out
