"""The uint8 shard cache: built once, reused while the source is unchanged, rebuilt when it changes."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from organfm.batches import SourceContext, create_batch_source
from organfm.batches.views import build_image_dataset
from organfm.cli.cache import cache
from organfm.cli.main import main
from organfm.config import load_config
from organfm.data.errors import DataError
from organfm.data.shards import ShardDataset, build_shards, is_shard_dir, to_uint8


def _folder(root, n_per_organ=3, size=24):
    """organ folders of 8-bit PNGs with distinct, known content."""
    rng = np.random.default_rng(0)
    for organ in ("liver", "lung"):
        (root / organ).mkdir(parents=True)
        for i in range(n_per_organ):
            Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(root / organ / f"p{i}.png")
    return root


def _data(source, *extra):
    return load_config(None, None, [f"data={source}", "data.split=null", "data.dedup=false", *extra]).data


def test_cache_round_trips_the_images_stores_the_contract_and_is_reused(tmp_path):
    src = _folder(tmp_path / "src")
    data = _data(src, "data.intensity=dtype")
    meta, reused = cache(data, tmp_path / "shards")
    assert not reused and is_shard_dir(tmp_path / "shards")
    ds = ShardDataset(tmp_path / "shards", verify=True)
    ref = build_image_dataset(data)
    assert len(ds) == len(ref) == 6 and ds.organs == list(ref.organs)
    for i in range(len(ds)):  # the stored bytes are the decoded item, as uint8
        assert ds[i]["image"].dtype == torch.uint8
        assert torch.equal(ds[i]["image"], to_uint8(ref[i]["image"]))
        assert ds[i]["organ"] == ref[i]["organ"]
    assert meta["contract"]["mode"] == "dtype" and meta["shape"] == [1, 24, 24]
    assert ShardDataset(tmp_path / "shards", as_float=True)[0]["image"].dtype == torch.float32
    stamp = (tmp_path / "shards" / "images.npy").stat().st_mtime_ns
    meta2, reused = cache(data, tmp_path / "shards")
    assert reused and meta2["content_hash"] == meta["content_hash"]
    assert (tmp_path / "shards" / "images.npy").stat().st_mtime_ns == stamp  # not rewritten


def test_a_changed_image_set_is_cached_again_with_another_hash(tmp_path):
    src = _folder(tmp_path / "src")
    data = _data(src, "data.intensity=dtype")
    first, _ = cache(data, tmp_path / "shards")
    png = src / "lung" / "p1.png"
    pixels = np.asarray(Image.open(png)).copy()
    pixels[0, 0] ^= 0xFF
    Image.fromarray(pixels).save(png)
    os.utime(png, ns=(png.stat().st_atime_ns, png.stat().st_mtime_ns + 10**9))  # a new mtime on coarse clocks
    second, reused = cache(data, tmp_path / "shards")
    assert not reused and second["content_hash"] != first["content_hash"]
    # other settings make another cache too
    third, reused = cache(data, tmp_path / "shards", size=16)
    assert not reused and third["shape"] == [1, 16, 16]


def test_a_damaged_cache_is_detected_by_verify(tmp_path):
    cache(_data(_folder(tmp_path / "src")), tmp_path / "shards")
    images = np.load(tmp_path / "shards" / "images.npy", mmap_mode="r+")
    images[0, 0, 0, 0] ^= 1
    images.flush()
    del images
    ShardDataset(tmp_path / "shards")  # opening without verify stays cheap
    with pytest.raises(DataError, match="content hash"):
        ShardDataset(tmp_path / "shards", verify=True)
    with pytest.raises(DataError, match="not an organfm shard folder"):
        ShardDataset(tmp_path / "src")


def test_build_shards_resizes_to_one_size_and_refuses_an_empty_set(tmp_path):
    items = [{"image": torch.rand(1, 20, 30), "organ": 0}, {"image": torch.rand(1, 16, 16), "organ": 1}]
    meta = build_shards(items, tmp_path / "s", size=8)
    assert meta["shape"] == [1, 8, 8] and ShardDataset(tmp_path / "s")[1]["organ"] == 1
    with pytest.raises(DataError, match="empty"):
        build_shards([], tmp_path / "e")


def test_cli_cache_then_both_view_paths_read_it(tmp_path, capsys):
    out = tmp_path / "shards"
    args = ["cache", "data=synthetic", "data.synthetic_organs=2", "data.synthetic_images_per_organ=4",
            "data.synthetic_size=32", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    assert capsys.readouterr().out.startswith("cached 8 images of 1x32x32")
    assert main(args) == 0
    assert capsys.readouterr().out.startswith("reused 8 images")
    assert main(["cache", "data=synthetic", "trainer.max_steps=3", "--out", str(out)]) == 2  # only data.* keys
    assert "only data.* settings" in capsys.readouterr().err
    meta = json.loads((out / "meta.json").read_text())
    for on_device in (True, False):
        cfg = load_config("coda", None, [f"data={out}", f"views.on_device={str(on_device).lower()}",
                                         "views.global_size=32", "views.local_size=16", "views.num_local_views=1"])
        source = create_batch_source("views", SourceContext(data=cfg.data, views=cfg.views, batch_size=4))
        batch = next(iter(source.batches))
        assert (batch["image"].dtype == torch.uint8) if on_device else (batch["global"][0].shape == (4, 1, 32, 32))
        assert source.summary(0)["content_hash"] == meta["content_hash"]
        assert source.contract["organs"] == ["organ_00", "organ_01"]
