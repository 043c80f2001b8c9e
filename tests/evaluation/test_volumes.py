"""3D evaluation: npz volumes as cubes, the finetune3d protocol end to end, slabs, 3D U-Net with sliding windows."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from organfm.backbones import create_backbone
from organfm.data.errors import DataError
from organfm.evaluation.volumes import (Segmentation3DConfig, _slabs, load_npz_volumes, train_segmentation3d)


def _npz(tmp_path, n=24, size=12):
    rng = np.random.default_rng(0)
    out = {}
    for split in ("train", "val", "test"):
        labels = np.arange(n) % 2
        images = rng.random((n, size, size, size)) * 50
        images[labels == 1, 3:9, 3:9, 3:9] += 200  # class 1: a bright cube
        out[f"{split}_images"], out[f"{split}_labels"] = images.astype(np.float32), labels[:, None].astype(np.uint8)
    np.savez(tmp_path / "v.npz", **out)
    return tmp_path / "v.npz"


def test_npz_volumes_become_cubes_with_labels(tmp_path):
    path = _npz(tmp_path)
    x, y = load_npz_volumes(str(path), "val", 8, limit=5)
    assert x.shape == (5, 1, 8, 8, 8) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y.tolist() == [0, 1, 0, 1, 0]
    np.savez(tmp_path / "flat.npz", train_images=np.zeros((2, 8, 8)), train_labels=np.zeros((2, 1)))
    with pytest.raises(DataError, match=r"flat.npz: train_images has shape \(2, 8, 8\)"):
        load_npz_volumes(str(tmp_path / "flat.npz"), "train", 8)


def test_finetune3d_protocol_learns_an_easy_task(tmp_path):
    from organfm.evaluation.features import FeatureCache
    from organfm.evaluation.protocol import ModelRun, get_protocol
    from organfm.evaluation.task import load_task

    path = _npz(tmp_path)
    task = load_task(None, ["protocols=[finetune3d]", f"data.source={path}", "finetune3d.epochs=8",
                            "finetune3d.batch_size=8", "finetune3d.lr=0.003", "finetune3d.image_size=8"])
    make = lambda: create_backbone("plainconv3d", in_chans=1, channels=[4, 8], strides=[1, 2])  # noqa: E731
    run = ModelRun("m", make, {"mean": [0.0], "std": [1.0], "model_hash": "x"}, task, "cpu",
                   FeatureCache(tmp_path / "cache"))
    (row,) = get_protocol("finetune3d")(run, None)
    assert row["protocol"] == "finetune3d" and row["volumes"] == [24, 24, 24]
    assert row["values"]["auc"][0] > 0.9  # a bright cube in half of the volumes


def test_slabs_are_contiguous_with_gaps():
    train, val, test = _slabs(112, [0.6, 0.2, 0.2], 2)
    assert (train.start, train.stop, val.start, val.stop, test.start, test.stop) == (0, 64, 66, 87, 89, 112)
    with pytest.raises(ValueError, match="cannot make"):
        _slabs(6, [0.6, 0.2, 0.2], 2)


def test_3d_unet_with_sliding_windows_segments_a_bright_block():
    # labels: a bright block through every slab; the test slab is larger than nothing but the patch covers parts
    image = torch.rand(40, 20, 20) * 0.3
    target = torch.zeros(40, 20, 20, dtype=torch.long)
    image[:, 6:14, 6:14] += 0.6
    target[:, 6:14, 6:14] = 1
    s = Segmentation3DConfig(classes=["block"], patch_size=8, iterations=40, val_every=20, batch_size=2, lr=3e-3,
                             gap=1)
    make = lambda: create_backbone("plainconv3d", in_chans=1, channels=[4, 8], strides=[1, 2])  # noqa: E731
    out = train_segmentation3d(make, lambda x: x, image, target, 2, s, seed=0)
    assert out["slabs"] == [22, 7, 9]
    assert out["metrics"]["dice"][1] > 0.8
