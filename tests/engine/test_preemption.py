"""A SIGTERM to the whole process group (SLURM preemption, ``timeout -s TERM``) ends a run cleanly.

The DataLoader workers ignore it (``ignore_stop_signals``); the main process stops at a step boundary, writes
that step's checkpoint and export, ends its workers and exits without a traceback. ``organfm embed`` stops at
a shard boundary and resumes.
"""
from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ORGANFM = str(Path(sys.executable).parent / "organfm")
ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")


def _start(args, tmp_path):
    return subprocess.Popen([ORGANFM, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=ENV, start_new_session=True)  # its own process group, as under SLURM


def _wait_for(path: Path, proc, timeout=240.0):
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None or time.time() > deadline:
            out, err = proc.communicate()
            pytest.fail(f"{path} never appeared: {err[-2000:]}")
        time.sleep(0.2)


@pytest.mark.slow
def test_sigterm_to_the_process_group_stops_with_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    proc = _start(["pretrain", "--method", "coda", "backbone.name=test_convnext", "views.global_size=32",
                   "views.local_size=32", "views.num_local_views=2", "trainer.batch_size=8", "trainer.num_workers=2",
                   "trainer.progress=false", "trainer.max_steps=100000", "trainer.checkpoint_every=100000",
                   "trainer.monitor_every=0", f"trainer.out_dir={run}"], tmp_path)
    _wait_for(run / "config.yaml", proc)
    time.sleep(4)  # the loader's two workers are up and feeding steps
    os.killpg(proc.pid, signal.SIGTERM)  # what `timeout -s TERM` and SLURM do: every process of the group
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err and "killed by signal" not in err
    step = int(re.search(r"interrupted at step (\d+)", out).group(1))
    assert [p.name for p in (run / "checkpoints").glob("*.ckpt")] == [f"step-{step:08d}.ckpt"]
    assert (run / "export" / "model.safetensors").is_file()


@pytest.mark.slow
def test_sigterm_stops_embed_at_a_shard_boundary_and_it_resumes(tmp_path):
    images = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for organ in ("lung", "hand"):
        (images / organ).mkdir(parents=True)
        for i in range(150):
            Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(images / organ / f"{i:03d}.png")
    out = tmp_path / "feats"
    args = ["embed", "--model", "random:test_convnext", "--image-size", "32", "--shard-size", "1", "--out", str(out),
            f"data={images}"]
    proc = _start(args, tmp_path)
    _wait_for(out / "index.json", proc)
    os.killpg(proc.pid, signal.SIGTERM)
    stdout, err = proc.communicate(timeout=240)
    assert proc.returncode == 143 and "Traceback" not in err, err[-2000:]
    assert "interrupted after" in stdout and "run the same command again" in stdout
    done = subprocess.run([ORGANFM, *args, "--quiet"], capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "300 images" in done.stdout and re.search(r"[1-9]\d* reused", done.stdout)
    rows = list(csv.DictReader(open(out / "index.csv")))
    assert len(rows) == 300 and rows[0]["path"] == "hand/000.png"


def test_workers_ignore_the_stop_signals():
    code = ("import os, signal; from organfm.engine.loop import ignore_stop_signals; ignore_stop_signals(0); "
            "os.kill(os.getpid(), signal.SIGTERM); os.kill(os.getpid(), signal.SIGINT); print('alive')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "alive"
