"""The ``features`` source: teacher parsing, seeded sampling among available teachers, the organ filter,
stored features reused and checked (hash, NaN, a teacher that does not load), exact resume."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from organfm.batches import SourceContext, create_batch_source
from organfm.batches.images import load_images
from organfm.batches.teachers import organ_filter, parse_teachers, sample_teacher, teacher_features
from organfm.config import DataConfig, ViewsConfig
from organfm.data.errors import DataError
from organfm.features.store import embed_dataset, image_digests, set_hash
from tests.features.test_store import Images


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


def stored_targets(store, names=None):
    """The one ``projected-*`` folder of ``store`` as dense tensors, teachers in ``names``' order (default: as
    stored, sorted): ``projected`` (K, N, D), ``available`` (N, K), ``projected_text`` (K, U, D) with texts."""
    from organfm.batches.features import open_targets

    (folder,) = [p for p in store.glob("projected-*") if p.is_dir()]
    saved = open_targets(folder)
    order = [saved["names"].index(n) for n in (names or saved["names"])]
    out = dict(saved, folder=folder, names=[saved["names"][j] for j in order],
               projected=torch.stack([saved["projected"][j].read(0, len(saved["projected"][j])) for j in order]),
               available=saved["available"][:, order])
    if "has_text" in saved:
        texts = [saved["projected_text"][j] for j in order]
        width = out["projected"].shape[-1]
        u = max((len(t) for t in texts if t is not None), default=0)
        out.update(has_text=saved["has_text"][order],
                   projected_text=torch.stack([torch.zeros(u, width) if t is None else t.read(0, len(t))
                                               for t in texts]))
    return out


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
    stored = stored_targets(tmp_path / "teacher_features")
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
    stored = stored_targets(tmp_path / "teacher_features")
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


def _targets_by_name(store, names):
    stored = stored_targets(store, names)
    return {n: stored["projected"][k] for k, n in enumerate(names)}, stored


def test_reordering_teachers_relabels_the_targets_by_name_and_refits_nothing(tmp_path):
    shared = tmp_path / "features"
    runs = {}
    ta, tb = "a=random:test_resnet", "b=random:test_convnext"
    for order in ((ta, tb), (tb, ta)):
        ctx = _ctx(tmp_path / order[0][0], teachers=order)
        ctx.options["features_dir"] = str(shared)
        src = create_batch_source("features", ctx)
        runs[order[0][0]] = (src, next(iter(src.batches)))
    by_name, _ = _targets_by_name(shared, ["a", "b"])  # one stored fit serves both orders
    for first, (src, b) in runs.items():
        names = list(src.summary(0)["distillation"]["teachers"])
        assert names == (["a", "b"] if first == "a" else ["b", "a"])
        for row, (i, k) in enumerate(zip(b["index"].tolist(), b["teacher_id"].tolist())):
            assert torch.equal(b["teacher"][row], by_name[names[k]][i])  # teacher_id k: the k-th listed teacher


def test_editing_the_manifests_teachers_column_gives_new_targets(tmp_path):
    from organfm.config import DataConfig

    manifest = _teacher_manifest(tmp_path / "data", ["a", "b"] * 4)
    ctx = _ctx(tmp_path / "run")
    ctx.data = DataConfig(source=str(manifest), split=None, dedup=False)
    ctx.options["teacher_filter"] = "column"
    create_batch_source("features", ctx)
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(lines[:1] + [line.rsplit(",", 1)[0] + ",a" for line in lines[1:]]) + "\n")
    b = next(iter(create_batch_source("features", ctx).batches))
    folders = [p for p in (tmp_path / "run" / "teacher_features").glob("projected-*") if p.is_dir()]
    assert len(folders) == 2  # a new key, not the old mask
    assert (b["teacher_id"] == 0).all() and b["available"][:, 1].logical_not().all()


def test_a_new_image_size_gives_new_features_and_targets_equal_to_a_fresh_run(tmp_path):
    from organfm.batches.features import open_targets

    store = tmp_path / "run" / "teacher_features"
    create_batch_source("features", _ctx(tmp_path / "run"))
    (first,) = [p for p in store.glob("projected-*") if p.is_dir()]
    runs = []
    for run in ("run", "fresh"):  # the same run at 48 px, and a fresh run at 48 px
        ctx = _ctx(tmp_path / run)
        ctx.views = ViewsConfig(global_size=48, num_local_views=0)
        runs.append(create_batch_source("features", ctx).summary(0)["distillation"]["projected_file"])
    assert runs[0] != str(first)  # a new key: the teachers' features were re-embedded at 48 px

    def dense(folder):
        return torch.stack([r.read(0, len(r)) for r in open_targets(Path(folder))["projected"]])

    assert torch.equal(dense(runs[0]), dense(runs[1]))
    assert not torch.allclose(dense(runs[0]), dense(first))


def test_only_rank_0_embeds_and_fits_the_others_wait_at_the_barrier_then_read(tmp_path, monkeypatch):
    import organfm.batches.features as features
    import organfm.features.store as embed

    events = []
    real_embed = embed.embed_dataset

    def spy(*args, **kwargs):
        events.append("embed")
        return real_embed(*args, **kwargs)

    def rank_ctx(rank):
        ctx = _ctx(tmp_path)
        ctx.rank, ctx.world_size = rank, 2
        return ctx

    def barrier(ctx):
        events.append(f"barrier{ctx.rank}")
        if ctx.rank == 1 and events.count("barrier1") == 1:  # while rank 1 waits, rank 0 prepares
            create_batch_source("features", rank_ctx(0))

    monkeypatch.setattr(embed, "embed_dataset", spy)
    monkeypatch.setattr(features, "_barrier", barrier)
    src = create_batch_source("features", rank_ctx(1))
    assert events == ["barrier1", "embed", "embed", "barrier0"]  # rank 1 ran no model and fitted nothing
    stored = stored_targets(tmp_path / "teacher_features")
    b = next(iter(src.batches))
    assert torch.equal(b["teacher"], stored["projected"][b["teacher_id"], b["index"]])
    # a rank that finds nothing after the barrier says so, instead of fitting on its own
    monkeypatch.setattr(features, "_barrier", lambda ctx: None)
    lonely = _ctx(tmp_path / "lonely")
    lonely.rank, lonely.world_size = 1, 2
    with pytest.raises((RuntimeError, DataError), match="rank 0|incomplete|no index"):
        create_batch_source("features", lonely)


def test_the_source_never_reads_all_features_at_once_and_an_item_reads_one_target_row(tmp_path, monkeypatch):
    import organfm.batches.features as features
    import organfm.features.shards as shards

    reads = []
    real_read = shards.ShardRows.read
    monkeypatch.setattr(shards.ShardRows, "read", lambda self, a, b: reads.append(b - a) or real_read(self, a, b))
    monkeypatch.setattr(features, "CHUNK", 4)
    ctx = _ctx(tmp_path)
    ctx.options["teacher_filter"] = "organ"
    src = create_batch_source("features", ctx)
    assert reads and max(reads) <= 4  # 16 images, read 4 rows at a time (the projector draws minibatches)
    del src
    prepared = features._prepare(ctx, load_images(ctx), tmp_path / "teacher_features", None)
    assert all(isinstance(p, shards.ShardRows) for p in prepared["projected"])
    preads = []
    real_pread = shards.os.pread
    monkeypatch.setattr(shards.os, "pread", lambda fd, n, at: preads.append(n) or real_pread(fd, n, at))
    item = features.TeacherViewsDataset(_NoViews(), prepared["projected"], prepared["available"])[(5, 7)]
    assert preads == [8 * 4] and item["teacher"].shape == (8,)  # one row of D = 8 float32, nothing more


class _NoViews:
    def __len__(self):
        return 16

    def __getitem__(self, key):
        return {}
