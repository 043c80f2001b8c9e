"""The ``volumes`` source: batches a pure function of (seed, step), resume-exact; no identifier reaches a run."""
from __future__ import annotations

import json

import numpy as np
import torch

from organfm.batches import SourceContext, create_batch_source
from organfm.config import new_config
from tests.data.conftest import make_dicom  # noqa: F401  (the fixture, shared with the data tests)

IDENTIFIERS = ("Doe^Jane", "SECRET-4711", "St Elsewhere", "LIVER", "tumour")


def _ctx(data, start_batch: int = 0, **options) -> SourceContext:
    cfg = new_config("triad")
    cfg.data = data
    opts = {k: getattr(cfg.method, k) for k in type(cfg.method).__dataclass_fields__}
    opts.update(cube=16, mask_patch_size=4, **options)
    return SourceContext(data=cfg.data, views=cfg.views, batch_size=2, seed=3, start_batch=start_batch,
                         options=opts)


def _npz_data(tmp_path):
    cfg = new_config("triad")
    np.savez(tmp_path / "v.npz", train_images=np.random.default_rng(0).random((6, 10, 12, 8)).astype(np.float32))
    cfg.data.source = str(tmp_path / "v.npz")
    return cfg.data


def test_batches_are_deterministic_and_resume_exactly(tmp_path):
    data = _npz_data(tmp_path)
    source = create_batch_source("volumes", _ctx(data))
    stream = iter(source.batches)
    first = [next(stream) for _ in range(5)]
    assert first[0]["image"].shape == (2, 1, 16, 16, 16) and first[0]["mask"].shape == (2, 8, 8, 8)
    assert all(int(b["mask"][k].sum()) == 39 * 8 for b in first for k in range(2))  # ceil(64*0.6) cells of 2^3
    resumed = iter(create_batch_source("volumes", _ctx(data, start_batch=3)).batches)
    for expected in first[3:]:
        got = next(resumed)
        assert all(torch.equal(got[k], expected[k]) for k in ("image", "mask", "text", "index"))
    assert source.contract["input_size"] == [1, 16, 16, 16] and source.backbone_kwargs == {"spatial_dims": 3}
    # epoch 1 (batches 3..5) reshuffles and redraws flips and masks
    assert not torch.equal(first[0]["mask"], first[3]["mask"])


def test_synthetic_volumes_are_added_with_their_own_description(tmp_path):
    data = _npz_data(tmp_path)
    source = create_batch_source("volumes", _ctx(data, synthetic_volumes=2))
    summary = source.summary(0)
    assert summary["num_volumes"] == 8 and summary["synthetic_volumes"] == 2
    assert summary["descriptions"] == ["synthetic volume, spacing 1 x 1 x 1 mm", "unknown acquisition"]


def test_no_dicom_identifier_reaches_descriptions_logs_or_exports(tmp_path, make_dicom):  # noqa: F811
    from organfm.config import load_config
    from organfm.engine.pretrain import pretrain

    for s in range(2):
        for k in range(4):
            make_dicom(tmp_path / "data" / f"series{s}" / f"{k}.dcm", np.full((8, 8), 10 * k + s, np.uint16),
                       ImagePositionPatient=[0.0, 0.0, 2.0 * k], ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
                       PixelSpacing=[1.0, 1.0], SeriesInstanceUID=f"1.2.3.{s}", Manufacturer="GE MEDICAL SYSTEMS",
                       InstitutionName="St Elsewhere", SeriesDescription="LIVER tumour", BodyPartExamined="LIVER",
                       MagneticFieldStrength=1.5 + s, Modality="MR")
    run = tmp_path / "run"
    summary = pretrain(load_config("triad", None, [
        f"data={tmp_path / 'data'}", "trainer.batch_size=2", "trainer.max_steps=1", "trainer.num_workers=0",
        "trainer.progress=false", "trainer.log_every=1", "method.cube=16", "method.mask_patch_size=4",
        f"trainer.out_dir={run}"]))
    descriptions = json.loads((run / "data.json").read_text())["descriptions"]
    assert descriptions == ["MR, 1.5 T, vendor ge, axial, spacing 2 x 1 x 1 mm",
                            "MR, 2.5 T, vendor ge, axial, spacing 2 x 1 x 1 mm"]
    texts = [p.read_bytes() for p in run.rglob("*") if p.is_file()]
    assert summary.export is not None and len(texts) > 3
    for word in IDENTIFIERS:
        assert not any(word.encode() in t for t in texts), word


def test_one_shared_description_is_warned_about_unless_the_text_term_is_off(tmp_path):
    import warnings

    import pytest

    data = _npz_data(tmp_path)  # npz volumes carry no acquisition metadata: one description for all
    with pytest.warns(UserWarning, match="share one acquisition description.*text term"):
        create_batch_source("volumes", _ctx(data))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_batch_source("volumes", _ctx(data, text_weight=0.0))
