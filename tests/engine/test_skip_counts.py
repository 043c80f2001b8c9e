"""Skips are counted once, for every batch source: ``data.json``'s ``skipped_logged`` and the summary line."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from organfm.config import load_config
from organfm.engine.pretrain import pretrain

RUN = ["trainer.max_steps=1", "trainer.num_workers=0", "trainer.progress=false", "trainer.torch_threads=1",
       "data.on_error=skip"]


def _check(summary, run_dir, method):
    data = json.loads((run_dir / "data.json").read_text())
    assert data["skipped_logged"] == summary.skipped == 1
    assert "(1 unreadable, skipped: see skips/)" in summary.line(method, "x")


def test_triad_counts_an_unreadable_volume_in_data_json_and_the_summary(tmp_path):
    import nibabel as nib

    rng = np.random.default_rng(0)
    (tmp_path / "vol").mkdir()
    for i in range(4):
        nib.save(nib.Nifti1Image(rng.random((12, 12, 12)).astype(np.float32), np.eye(4)),
                 str(tmp_path / "vol" / f"v{i}.nii.gz"))
    (tmp_path / "vol" / "broken.nii.gz").write_bytes(b"\x1f\x8b not a volume")
    run = tmp_path / "run"
    summary = pretrain(load_config("triad", None, RUN + [
        f"data={tmp_path / 'vol'}", "data.split=null", "trainer.batch_size=2", "method.cube=16",
        "method.mask_patch_size=4", f"trainer.out_dir={run}"]))
    _check(summary, run, "triad")


def test_panfm_counts_a_read_time_skip_in_data_json_and_the_summary(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for s in range(4):
        for organ in ("heart", "liver"):
            Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(tmp_path / f"{organ}{s}.png")
            rows.append(f"s{s},{organ},{organ}{s}.png,train,{s % 2}")
    (tmp_path / "liver2.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")  # exists: fails only when read
    (tmp_path / "subjects.csv").write_text("subject,organ,path,split,disease\n" + "\n".join(rows) + "\n")
    run = tmp_path / "run"
    summary = pretrain(load_config("panfm", None, RUN + [
        f"data={tmp_path / 'subjects.csv'}", "trainer.batch_size=4", "data.synthetic_size=16",
        "trainer.monitor_every=0", f"trainer.out_dir={run}"]))
    _check(summary, run, "panfm")
