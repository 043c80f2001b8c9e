"""``organfm embed``'s library: sharded features equal to a direct extraction, reused, resumed, hash-checked."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from organfm.data.errors import DataError
from organfm.features.store import embed_dataset, image_digests, load_features, set_hash
from organfm.features.extraction import extract_features
from organfm.features.encoders import load_encoder

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
    import organfm.features.extraction as features

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


class Relabelled(Images):
    """Images whose organ ids are shifted by ``shift`` (a manifest whose organ column changed)."""

    def __init__(self, n: int = 10, shift: int = 0) -> None:
        super().__init__(n)
        self.shift = shift

    def __getitem__(self, i: int) -> dict:
        return {**super().__getitem__(i), "organ": (i + self.shift) % 3}


class WithUnreadable(Images):
    """Item ``bad`` is unreadable: like ``OrganDataset(on_error="skip")`` it returns another item instead."""

    def __init__(self, n: int = 10, bad: int = 5) -> None:
        super().__init__(n)
        self.bad = bad

    def __getitem__(self, i: int) -> dict:
        return super().__getitem__(0 if i == self.bad else i)


def _index_csv(folder):
    import csv

    return list(csv.DictReader(open(folder / "index.csv")))


def test_a_change_of_organ_labels_writes_the_new_labels(tmp_path):
    embed_dataset(SPEC, Relabelled(10, 0), tmp_path / "f", shard_size=4)
    r = embed_dataset(SPEC, Relabelled(10, 1), tmp_path / "f", shard_size=4)
    fresh = embed_dataset(SPEC, Relabelled(10, 1), tmp_path / "fresh", shard_size=4)
    assert (r.rekeyed, r.reused, r.changed) == (3, 0, 0)  # no shard kept with the old labels
    assert _index_csv(tmp_path / "f") == _index_csv(tmp_path / "fresh")
    assert [row["organ"] for row in _index_csv(tmp_path / "f")] == [Relabelled.organs[(i + 1) % 3] for i in range(10)]
    index = json.loads((tmp_path / "f" / "index.json").read_text())
    assert index["shards"][0]["organ"] == [1, 2, 0, 1]
    assert torch.equal(load_features(tmp_path / "f")[0], load_features(tmp_path / "fresh")[0])
    assert "3 labels, settings or skipped rows changed" in r.line() and fresh.written == 3


def test_a_changed_preprocessing_setting_recomputes_and_a_moved_folder_does_not(tmp_path):
    data = Images(8)
    embed_dataset(SPEC, data, tmp_path, shard_size=4, data_identity={"source": "a", "intensity": "minmax"})
    r = embed_dataset(SPEC, data, tmp_path, shard_size=4, data_identity={"source": "b", "intensity": "minmax"})
    assert (r.reused, r.written) == (2, 0)  # where the data lies is not what a row holds
    r = embed_dataset(SPEC, data, tmp_path, shard_size=4, data_identity={"source": "b", "intensity": "dtype"})
    assert (r.rekeyed, r.reused) == (2, 0)
    r = embed_dataset(SPEC, data, tmp_path, shard_size=4, image_size=16,
                      data_identity={"source": "b", "intensity": "dtype"})
    assert (r.rekeyed, r.reused) == (2, 0)  # another input size


def test_a_skipped_row_is_zeros_flagged_and_counted_never_another_images_features(tmp_path):
    r = embed_dataset(SPEC, WithUnreadable(10, bad=5), tmp_path, shard_size=4)
    feats, index = load_features(tmp_path)
    assert r.skipped == 1 and index["skipped"] == [5] and index["shards"][1]["skipped"] == [5]
    assert torch.count_nonzero(feats[5]) == 0 and not torch.equal(feats[5], feats[0])
    assert torch.count_nonzero(feats[4]) > 0
    assert [row["skipped"] for row in _index_csv(tmp_path)] == ["1" if i == 5 else "0" for i in range(10)]
    assert "1 unreadable, skipped: zero rows flagged in index.csv" in r.line()
    direct = embed_dataset(SPEC, Images(10), tmp_path / "clean", shard_size=4)
    assert torch.allclose(feats[[4, 6]], load_features(tmp_path / "clean")[0][[4, 6]], atol=1e-5)
    r = embed_dataset(SPEC, Images(10), tmp_path, shard_size=4)  # the image became readable: its shard only
    assert (r.written, r.reused, r.skipped) == (1, 2, 0) and direct.skipped == 0


@pytest.mark.parametrize("damage", ["truncate", "nan", "flip"])
def test_a_damaged_shard_is_recomputed_not_reused(tmp_path, damage):
    data = Images(8)
    embed_dataset(SPEC, data, tmp_path, shard_size=4)
    good, _ = load_features(tmp_path)
    path = tmp_path / "shard-00001.npy"
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[:-7]
    elif damage == "nan":  # same size, a NaN in the first feature
        header = len(raw) - 4 * 4 * good.shape[1]
        raw[header:header + 4] = np.array([np.nan], np.float32).tobytes()
    else:
        raw[-1] ^= 0x40  # one bit of the last feature: still finite, same size
    path.write_bytes(bytes(raw))
    r = embed_dataset(SPEC, data, tmp_path, shard_size=4)
    assert (r.repaired, r.written, r.reused) == (1, 1, 1)
    assert "1 damaged or missing on disk" in r.line()
    assert torch.equal(load_features(tmp_path)[0], good)


def test_embed_refuses_a_folder_it_did_not_write_and_a_file(tmp_path):
    from organfm.outputs import OutputFolderError

    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(b"mine")
    with pytest.raises(OutputFolderError, match="did not write"):
        embed_dataset(SPEC, Images(4), tmp_path / "imgs")
    assert sorted(p.name for p in (tmp_path / "imgs").iterdir()) == ["a.png"]
    (tmp_path / "f.npy").write_bytes(b"x")
    with pytest.raises(OutputFolderError, match="is a file, not a folder"):
        embed_dataset(SPEC, Images(4), tmp_path / "f.npy")


def test_a_full_disk_while_embedding_is_one_line_and_keeps_the_finished_shards(tmp_path, monkeypatch):
    import errno

    import organfm.outputs.npy as npy
    from organfm.outputs import DiskFullError

    calls = []
    real = npy.write_npy

    def fill(f, array):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(f, array)

    monkeypatch.setattr(npy, "write_npy", fill)
    import organfm.outputs as outputs

    monkeypatch.setattr(outputs, "write_npy", fill)
    with pytest.raises(DiskFullError, match=r"no space left on the device of .*: organfm embed stopped; the shards "
                                            r"finished so far are kept"):
        embed_dataset(SPEC, Images(8), tmp_path, shard_size=4)
    assert sorted(p.name for p in tmp_path.glob("shard-*")) == ["shard-00000.npy"]  # no temp file left
    monkeypatch.undo()
    r = embed_dataset(SPEC, Images(8), tmp_path, shard_size=4)
    assert (r.written, r.reused) == (1, 1)


def test_should_stop_ends_at_a_shard_boundary_and_the_next_call_completes(tmp_path):
    data = Images(10)
    calls = []
    r = embed_dataset(SPEC, data, tmp_path / "f", shard_size=4, should_stop=lambda: calls.append(1) or True)
    assert r.interrupted and r.written == 1 and "interrupted after 1 shards" in r.line()
    assert not json.loads((tmp_path / "f" / "index.json").read_text())["complete"]
    r = embed_dataset(SPEC, data, tmp_path / "f", shard_size=4)
    assert not r.interrupted and (r.written, r.reused) == (2, 1)


def test_one_random_model_at_two_image_sizes_gives_each_sizes_fresh_features(tmp_path):
    data = Images(6)
    embed_dataset(SPEC, data, tmp_path / "f", image_size=32)
    at_32, _ = load_features(tmp_path / "f")
    r = embed_dataset(SPEC, data, tmp_path / "f", image_size=48)
    at_48, index = load_features(tmp_path / "f")
    assert r.reused == 0 and index["model"]["input_size"] == [1, 48, 48]
    assert not torch.allclose(at_32, at_48)
    for size, feats in ((32, at_32), (48, at_48)):
        embed_dataset(SPEC, data, tmp_path / f"fresh{size}", image_size=size)
        assert torch.equal(feats, load_features(tmp_path / f"fresh{size}")[0])
