"""The ``features`` source: teacher parsing, seeded sampling among available teachers, the organ filter,
stored features reused and checked (hash, NaN, a teacher that does not load), exact resume."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from organfm.batches import SourceContext, create_batch_source
from organfm.batches.teachers import organ_filter, parse_teachers, sample_teacher, teacher_features
from organfm.config import DataConfig, ViewsConfig
from organfm.data.errors import DataError
from organfm.evaluation.embed import embed_dataset, image_digests, set_hash
from tests.evaluation.test_embed import Images


def test_parse_teachers_and_its_errors_name_method_teachers():
    assert parse_teachers(["coda=runs/a", " dino = runs/b "]) == {"coda": "runs/a", "dino": "runs/b"}
    for bad, msg in (([], "method.teachers is empty"), (["runs/a"], "not NAME=SPEC"), (["a=x", "a=y"], "twice")):
        with pytest.raises(ValueError, match=msg):
            parse_teachers(bad)


def test_sampling_respects_available_is_seeded_and_roughly_uniform():
    available = torch.tensor([True, False, True, True, False])
    draws = [sample_teacher(available, seed) for seed in range(3000)]
    assert set(draws) == {0, 2, 3}
    counts = np.bincount(draws, minlength=5)[[0, 2, 3]]
    assert (np.abs(counts - 1000) < 120).all(), counts
    assert draws == [sample_teacher(available, seed) for seed in range(3000)]
    assert sample_teacher(torch.tensor([False, False, True]), 5) == 2
    with pytest.raises(ValueError, match="no available teacher"):
        sample_teacher(torch.zeros(3, dtype=torch.bool), 0)


def test_organ_filter_by_hand():
    organ = torch.tensor([0, 0, 1, 1, -1])
    # teacher 0 separates the organs; teacher 1 puts image 1 beside organ 1
    t0 = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0], [5.0, 5.0]])
    t1 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    keep = organ_filter([t0, t1], organ)
    assert keep.tolist() == [[True, True], [True, False], [True, True], [True, True], [True, True]]
    # an image that no teacher passes keeps all teachers (the seed's fall-back)
    keep = organ_filter([t1], organ)
    assert keep[:, 0].tolist() == [True, True, True, True, True]


def test_stored_features_are_reused_and_other_images_are_rejected(tmp_path):
    data = Images(8)
    folder = tmp_path / "feats"
    embed_dataset("random:test_resnet", data, folder, shard_size=4)
    h = set_hash(image_digests(data))
    feats, _ = teacher_features("t", str(folder), data, tmp_path / "unused", image_hash=h, image_size=32)
    assert feats.shape[0] == 8 and not (tmp_path / "unused").exists()  # read, not recomputed
    other = Images(8, seed=1)
    with pytest.raises(ValueError, match=r"teacher t: .*feats/index\.json holds features of other images"):
        teacher_features("t", str(folder), other, tmp_path / "unused", image_hash=set_hash(image_digests(other)),
                         image_size=32)


def test_nan_features_and_a_broken_export_are_errors_naming_the_teacher_and_file(tmp_path):
    data = Images(4)
    h = set_hash(image_digests(data))
    folder = tmp_path / "feats"
    embed_dataset("random:test_resnet", data, folder)
    a = np.load(folder / "shard-00000.npy")
    a[0, 0] = np.nan
    np.save(folder / "shard-00000.npy", a)
    with pytest.raises(DataError, match=r"teacher nanny: .*shard-00000\.npy: 1 feature rows hold NaN"):
        teacher_features("nanny", str(folder), data, tmp_path / "x", image_hash=h, image_size=32)
    export = tmp_path / "export"
    export.mkdir()
    (export / "backbone.safetensors").write_bytes(b"not safetensors")
    (export / "backbone.json").write_text(json.dumps({"architecture": "test_resnet", "in_chans": 1}))
    with pytest.raises(ValueError, match=r"teacher broken: cannot embed with .*export"):
        teacher_features("broken", str(export), data, tmp_path / "y", image_hash=h, image_size=32)


def _ctx(tmp_path, start_batch=0, teachers=("a=random:test_resnet", "b=random:test_convnext")):
    data = DataConfig(synthetic_organs=2, synthetic_images_per_organ=8, synthetic_size=32)
    views = ViewsConfig(global_size=32, num_local_views=0)
    options = {"teachers": list(teachers), "embed_dim": 8, "projector_hidden": 16, "projector_noise": 0.01,
               "projector_dropout": 0.2, "projector_steps": 10, "projector_lr": 1e-3, "teacher_filter": "all",
               "features_dir": ""}
    return SourceContext(data=data, views=views, batch_size=4, seed=3, start_batch=start_batch, run_dir=tmp_path,
                         options=options)


def test_source_batches_carry_the_sampled_teachers_projected_feature_and_resume_exactly(tmp_path):
    src = create_batch_source("features", _ctx(tmp_path))
    stream = iter(src.batches)
    batches = [next(stream) for _ in range(3)]
    b = batches[2]
    stored = torch.load(next((tmp_path / "teacher_features").glob("projected-*.pt")), weights_only=True)
    assert b["teacher"].shape == (4, 8) and b["available"].shape == (4, 2)
    assert torch.equal(b["teacher"], stored["projected"][b["teacher_id"], b["index"]])
    assert torch.allclose(b["teacher"].norm(dim=-1), torch.ones(4), atol=1e-5)
    summary = src.summary(0)["distillation"]
    assert set(summary["teachers"]) == {"a", "b"} and summary["teachers"]["b"]["available_images"] == 16
    # a resumed source reuses every stored file and yields the batch the uninterrupted stream yields
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "teacher_features").rglob("*") if p.is_file()}
    resumed = next(iter(create_batch_source("features", _ctx(tmp_path, start_batch=2)).batches))
    assert {p: p.stat().st_mtime_ns for p in files} == files
    for key in ("teacher", "teacher_id", "index"):
        assert torch.equal(resumed[key], b[key])
    assert torch.equal(resumed["global"][0], b["global"][0])


def test_no_teachers_is_a_clear_error_before_any_image_is_read(tmp_path):
    with pytest.raises(ValueError, match="method.teachers is empty"):
        create_batch_source("features", _ctx(tmp_path, teachers=()))


def test_organ_filter_source_draws_only_available_teachers(tmp_path):
    ctx = _ctx(tmp_path)
    ctx.options["teacher_filter"] = "organ"
    stream = iter(create_batch_source("features", ctx).batches)
    for _ in range(4):
        b = next(stream)
        assert b["available"][torch.arange(4), b["teacher_id"]].all()
    stored = torch.load(next((tmp_path / "teacher_features").glob("projected-*.pt")), weights_only=True)
    assert stored["available"].any(1).all()  # every image keeps at least one teacher


def _teacher_manifest(root, rows):
    from PIL import Image

    root.mkdir(parents=True)
    lines = ["path,organ,split,teachers"]
    for i, teachers in enumerate(rows):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 32), dtype=np.uint8)).save(root / f"{i}.png")
        lines.append(f"{i}.png,{'ab'[i % 2]},train,{teachers}")
    (root / "m.csv").write_text("\n".join(lines) + "\n")
    return root / "m.csv"


def test_column_filter_reads_each_images_teachers_from_the_manifest(tmp_path):
    from organfm.batches.teachers import column_filter
    from organfm.data import build_dataset

    ds = build_dataset(_teacher_manifest(tmp_path / "ok", ["a", "b", "", "a;b", "b | a", "a"]), split=None,
                       dedup=False)
    keep = column_filter(ds, ["a", "b"])
    by_row = {r.path.rsplit("/", 1)[-1]: keep[i].tolist() for i, r in enumerate(ds.records)}
    assert by_row == {"0.png": [True, False], "1.png": [False, True], "2.png": [True, True], "3.png": [True, True],
                      "4.png": [True, True], "5.png": [True, False]}
    bad = build_dataset(_teacher_manifest(tmp_path / "bad", ["a", "c"]), split=None, dedup=False)
    with pytest.raises(DataError, match=r"1\.png: its 'teachers' column names 'c', not among method.teachers"):
        column_filter(bad, ["a", "b"])
    with pytest.raises(DataError, match="the data has none"):
        column_filter(Images(4), ["a", "b"])


def test_column_filter_source_draws_only_the_listed_teachers(tmp_path):
    from organfm.config import DataConfig

    manifest = _teacher_manifest(tmp_path / "data", ["a", "b"] * 4)
    ctx = _ctx(tmp_path / "run")
    ctx.data = DataConfig(source=str(manifest), split=None, dedup=False)
    ctx.options["teacher_filter"] = "column"
    stream = iter(create_batch_source("features", ctx).batches)
    for _ in range(2):
        b = next(stream)
        assert b["available"].sum(1).tolist() == [1, 1, 1, 1]
        assert b["available"][torch.arange(4), b["teacher_id"]].all()
