"""3D classification: npz volumes as cubes following the contract's intensity, the finetune3d protocol end to end."""
from __future__ import annotations

import pytest
import torch

from organfm.backbones import create_backbone
from tests.data.test_labelled import _npz
from tests.evaluation.conftest import model_run, run_protocol


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


def test_finetune3d_linear_mode_honours_monitor_and_class_weight(tmp_path):
    from organfm.features.extraction import FeatureCache
    from organfm.evaluation.task import load_task

    path = _npz(tmp_path)
    base = ["protocols=[finetune3d]", f"data.source={path}", "finetune3d.mode=linear", "finetune3d.image_size=8"]
    make = lambda: create_backbone("plainconv3d", in_chans=1, channels=[4, 8], strides=[1, 2])  # noqa: E731
    task = load_task(None, [*base, "finetune3d.monitor=balanced_accuracy", "finetune3d.class_weight=balanced"])
    run = model_run("m", make, {"mean": [0.0], "std": [1.0], "model_hash": "x"}, task, "cpu",
                    FeatureCache(tmp_path / "cache"))
    (row,) = run_protocol("finetune3d", run, task)
    assert row["chosen"]["class_weight"] == "balanced" and 0.5 <= row["chosen"]["val_balanced_accuracy"] <= 1.0
    for bad, match in (("finetune3d.monitor=f1", "chooses its head by"), ("finetune3d.class_weight=inverse",
                                                                            "class_weight must be null or balanced")):
        with pytest.raises(ValueError, match=match):
            run_protocol("finetune3d", run, load_task(None, [*base, bad]))
