"""3D classification: npz volumes as cubes following the contract's intensity, the finetune3d protocol end to end."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from organfm.backbones import create_backbone
from organfm.data.errors import DataError
from organfm.data.labelled import load_npz_volumes, volume_input
from tests.evaluation.conftest import model_run, run_protocol


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
    from organfm.features.extraction import FeatureCache
    from organfm.evaluation.task import load_task

    path = _npz(tmp_path)
    task = load_task(None, ["protocols=[finetune3d]", f"data.source={path}", "finetune3d.epochs=8",
                            "finetune3d.batch_size=8", "finetune3d.lr=0.003", "finetune3d.image_size=8"])
    make = lambda: create_backbone("plainconv3d", in_chans=1, channels=[4, 8], strides=[1, 2])  # noqa: E731
    run = model_run("m", make, {"mean": [0.0], "std": [1.0], "model_hash": "x"}, task, "cpu",
                   FeatureCache(tmp_path / "cache"))
    (row,) = run_protocol("finetune3d", run, task)
    assert row["protocol"] == "finetune3d" and row["volumes"] == [24, 24, 24]
    assert row["values"]["auc"][0] > 0.9  # a bright cube in half of the volumes


def test_finetune3d_volumes_follow_the_contracts_intensity(tmp_path):
    path = _npz(tmp_path)  # values 0-250
    x, _ = load_npz_volumes(str(path), "val", 8, limit=4)
    assert float(x.max()) > 0.9  # no contract: the percentile clip of pretraining (then the resize smooths)
    windowed, _ = load_npz_volumes(str(path), "val", 8, limit=4,
                                   prep=volume_input({"intensity": {"mode": "window", "window": [500, 1000]}}))
    assert float(windowed.max()) < 0.26  # 250 in a 0-1000 window
    with pytest.warns(UserWarning, match=r"no 'val_spacing' array"):
        load_npz_volumes(str(path), "val", 8, limit=1, prep=volume_input({"intensity": {"spacing": [1, 1, 1]}}))


def test_finetune3d_linear_mode_probes_frozen_features(tmp_path):
    from organfm.features.extraction import FeatureCache
    from organfm.evaluation.task import load_task

    path = _npz(tmp_path)
    task = load_task(None, ["protocols=[finetune3d]", f"data.source={path}", "finetune3d.mode=linear",
                            "finetune3d.image_size=8"])
    torch.manual_seed(0)
    built = []

    def make():
        built.append(create_backbone("plainconv3d", in_chans=1, channels=[4, 8], strides=[1, 2]))
        built[-1].load_state_dict(reference)
        return built[-1]

    reference = create_backbone("plainconv3d", in_chans=1, channels=[4, 8], strides=[1, 2]).state_dict()
    reference = {k: v.clone() for k, v in reference.items()}
    run = model_run("m", make, {"mean": [0.0], "std": [1.0], "model_hash": "x"}, task, "cpu",
                   FeatureCache(tmp_path / "cache"))
    (row,) = run_protocol("finetune3d", run, task)
    assert row["setting"].startswith("linear probe (frozen), 24 train volumes") and "lr" in row["chosen"]
    assert row["values"]["auc"][0] > 0.9  # a bright cube is linearly visible in random pooled features
    assert set(row["values"]) >= {"accuracy", "balanced_accuracy", "auc", "majority_accuracy"}
    assert all(torch.equal(v, reference[k]) for k, v in built[0].state_dict().items())  # the encoder stayed frozen
    with pytest.raises(ValueError, match="finetune3d.mode"):
        run_protocol("finetune3d", run, load_task(None, ["protocols=[finetune3d]", f"data.source={path}",
                                                         "finetune3d.mode=probe", "finetune3d.image_size=8"]))
