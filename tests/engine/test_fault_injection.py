"""kill -9 at seeded random moments, one of them inside a checkpoint write, then resume: bit-identical weights."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from safetensors.torch import load_file

from organfm.config import load_config
from organfm.engine.checkpoint import latest_checkpoint
from organfm.engine.pretrain import pretrain

TINY = ["backbone.name=test_convnext", "data.synthetic_organs=3", "data.synthetic_images_per_organ=4",
        "data.synthetic_size=32", "views.global_size=32", "views.local_size=32", "views.num_local_views=1",
        "trainer.batch_size=4", "trainer.num_workers=0", "trainer.progress=false", "trainer.deterministic=true",
        # bit-identity holds at one thread count: pinned, so the in-process run and the children agree
        "trainer.torch_threads=1",
        "trainer.checkpoint_every=1", "trainer.keep_checkpoints=2", "method.out_dim=32", "method.hidden_dim=16",
        "method.bottleneck_dim=8"]
STEPS = 6

# The child trains; with HOLD_IN_FSYNC set it announces the checkpoint write of that step and then blocks
# inside it (after the temp file is written, before the rename), so the parent's SIGKILL lands mid-write.
CHILD = textwrap.dedent("""
    import os, sys, time
    from organfm.config import load_config
    from organfm.outputs import atomic
    from organfm.engine.pretrain import pretrain
    hold = int(os.environ.get("HOLD_IN_FSYNC", "0"))
    real_fsync = os.fsync
    def fsync(fd):
        real_fsync(fd)
        name = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
        if hold and name.endswith(".tmp") and f"step-{hold:08d}" in name:
            print("in-write", flush=True); time.sleep(60)
    atomic.os.fsync = fsync  # the checkpoint's temp file is fsynced by the shared atomic writer
    args = sys.argv[1:]
    if args[0] == "--resume":
        pretrain(load_config(None, args[1] + "/config.yaml", args[2:]), resume_dir=args[1])
    else:
        pretrain(load_config("coda", None, args))
""")


def _child(args, env=None):
    return subprocess.Popen([sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env={**os.environ, **(env or {})})


def _resume_until_done(run):
    if latest_checkpoint(run).name == f"step-{STEPS:08d}.ckpt":
        return  # the kill came after the end: nothing left to resume
    subprocess.run([sys.executable, "-c", CHILD, "--resume", str(run), f"trainer.max_steps={STEPS}"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)


@pytest.mark.slow
def test_kill_9_anywhere_then_resume_is_bit_identical(tmp_path):
    full = pretrain(load_config("coda", None, TINY + [f"trainer.max_steps={STEPS}",
                                                       f"trainer.out_dir={tmp_path / 'full'}"]))
    expected = load_file(full.export)
    rng = random.Random(0)

    # 1. killed inside the write of checkpoint 3: step-3's temp file is left, step 2 is the latest whole one
    run = tmp_path / "in-write"
    child = _child(TINY + [f"trainer.max_steps={STEPS}", f"trainer.out_dir={run}"], env={"HOLD_IN_FSYNC": "3"})
    assert child.stdout.readline().strip() == "in-write"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert latest_checkpoint(run).name == "step-00000002.ckpt"
    _resume_until_done(run)

    # 2. killed at a seeded random moment of the run
    run2 = tmp_path / "random"
    child = _child(TINY + [f"trainer.max_steps={STEPS}", f"trainer.out_dir={run2}"])
    deadline = time.time() + 120
    while latest_checkpoint(run2) is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 1.0))
    child.send_signal(signal.SIGKILL)
    child.wait()
    _resume_until_done(run2)

    for r in (run, run2):
        got = load_file(r / "export" / "backbone.safetensors")
        assert got.keys() == expected.keys()
        assert max((got[k] - expected[k]).abs().max().item() for k in got) == 0.0
