"""``organfm embed``'s library: sharded features equal to a direct extraction, reused, resumed, hash-checked."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from organfm.data.errors import DataError
from organfm.evaluation.embed import embed_dataset, image_digests, load_features, set_hash
from organfm.evaluation.features import extract_features
from organfm.evaluation.models import load_encoder

SPEC = "random:test_resnet"


class Images(torch.utils.data.Dataset):
    """n seeded 1x32x32 images in [0, 1] with organ ids i % 3."""

    organs = ["a", "b", "c"]

    def __init__(self, n: int = 10, seed: int = 0) -> None:
        self.images = torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "organ": i % 3, "index": i}


def _mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_features_equal_a_direct_extraction_and_the_index_describes_them(tmp_path):
    data = Images(10)
    r = embed_dataset(SPEC, data, tmp_path / "f", shard_size=4, batch_size=3, data_identity={"source": "toy"})
    assert (r.num_images, r.written, r.reused) == (10, 3, 0)
    feats, index = load_features(tmp_path / "f")
    make, contract = load_encoder(SPEC)
    direct = extract_features(make(), data.images, mean=contract["mean"], std=contract["std"])
    assert torch.allclose(feats, direct, atol=1e-5)
    assert [s["file"] for s in index["shards"]] == ["shard-00000.npy", "shard-00001.npy", "shard-00002.npy"]
    assert index["num_images"] == 10 and index["feature_dim"] == feats.shape[1]
    assert index["model"]["model_hash"] == contract["model_hash"] and index["data"]["identity"] == {"source": "toy"}
    assert index["image_hash"] == set_hash(image_digests(data))
    assert index["shards"][1]["organ"] == [4 % 3, 5 % 3, 6 % 3, 7 % 3]


def test_a_second_call_rewrites_nothing_and_runs_no_model(tmp_path, monkeypatch):
    data = Images(10)
    embed_dataset(SPEC, data, tmp_path, shard_size=4)
    before = _mtimes(tmp_path)
    import organfm.evaluation.features as features

    monkeypatch.setattr(features, "extract_features", lambda *a, **k: pytest.fail("the model ran again"))
    r = embed_dataset(SPEC, data, tmp_path, shard_size=4)
    assert (r.written, r.reused, r.changed) == (0, 3, 0)
    assert _mtimes(tmp_path) == before


def test_an_interrupted_call_resumes_with_only_the_missing_shard(tmp_path):
    data = Images(10)
    embed_dataset(SPEC, data, tmp_path, shard_size=4)
    full, _ = load_features(tmp_path)
    (tmp_path / "shard-00001.npy").unlink()
    before = _mtimes(tmp_path)
    r = embed_dataset(SPEC, data, tmp_path, shard_size=4)
    assert (r.written, r.reused) == (1, 2)
    after = _mtimes(tmp_path)
    assert after["shard-00000.npy"] == before["shard-00000.npy"] and after["shard-00002.npy"] == before["shard-00002.npy"]
    assert torch.equal(load_features(tmp_path)[0], full)


def test_changed_images_are_detected_by_their_hash(tmp_path):
    data = Images(10)
    first = embed_dataset(SPEC, data, tmp_path, shard_size=4)
    data.images[5] = 1.0 - data.images[5]  # one image of shard 1 changes
    with pytest.raises(ValueError, match=r"shard-00001\.npy.*changed"):
        embed_dataset(SPEC, data, tmp_path, shard_size=4, on_change="error")
    r = embed_dataset(SPEC, data, tmp_path, shard_size=4)
    assert (r.written, r.changed, r.reused) == (1, 1, 2)
    assert r.image_hash != first.image_hash
    assert json.loads((tmp_path / "index.json").read_text())["image_hash"] == r.image_hash


def test_a_folder_of_another_model_is_never_overwritten(tmp_path):
    embed_dataset(SPEC, Images(4), tmp_path)
    with pytest.raises(ValueError, match="another model"):
        embed_dataset("random:test_convnext", Images(4), tmp_path)


def test_nan_and_dimension_mismatch_are_errors_naming_the_file(tmp_path):
    embed_dataset(SPEC, Images(6), tmp_path, shard_size=3)
    good = np.load(tmp_path / "shard-00001.npy")
    bad = good.copy()
    bad[1, 0] = np.nan
    np.save(tmp_path / "shard-00001.npy", bad)
    with pytest.raises(DataError, match=r"teacher x: .*shard-00001\.npy: 1 feature rows hold NaN"):
        load_features(tmp_path, who="teacher x: ")
    np.save(tmp_path / "shard-00001.npy", good[:, :-1])
    with pytest.raises(DataError, match=r"shard-00001\.npy.*dimension mismatch"):
        load_features(tmp_path)


def test_cli_embed_twice_on_the_embedded_synthetic_data(tmp_path, capsys):
    from organfm.cli.main import main

    args = ["embed", "--model", SPEC, "--out", str(tmp_path / "f"), "--shard-size", "16",
            "data.synthetic_organs=2", "data.synthetic_images_per_organ=8", "data.synthetic_size=32"]
    assert main(args) == 0
    first = capsys.readouterr().out
    before = _mtimes(tmp_path / "f")
    assert main(args) == 0
    second = capsys.readouterr().out
    assert "0 reused" in first and "0 shards written" in second and _mtimes(tmp_path / "f") == before
    assert main(["embed", "--model", SPEC, "--out", str(tmp_path / "g"), "trainer.seed=1"]) == 2
    assert "data.* keys only" in capsys.readouterr().err
