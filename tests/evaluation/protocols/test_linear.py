"""The linear protocol: the probe gets train to fit, val to choose and test to score (in that order, with the task's
seed and grid), the row holds test metrics and the chosen head; separable points are classified perfectly."""
from __future__ import annotations

import pytest
import torch

import organfm.evaluation.protocols.linear as module
from tests.evaluation.conftest import feature_task


def _points(n: int, shift: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n points of 3 classes, class c around 4 * e_c (linearly separable), plus ``shift`` to tell splits apart."""
    labels = torch.arange(n) % 3
    noise = 0.3 * torch.randn(n, 3, generator=torch.Generator().manual_seed(seed))
    return 4 * torch.eye(3)[labels] + noise + shift, labels


SPLITS = {"train": _points(30, 0.0, 0), "val": _points(12, 0.01, 1), "test": _points(12, 0.02, 2)}


def test_train_fits_val_chooses_and_test_is_scored(tmp_path, monkeypatch):
    seen = {}
    # right on the first 6 test points, "class 0" on the last 6 (labels 0, 1, 2, 0, 1, 2: right twice)
    fixed = torch.cat([torch.eye(3)[SPLITS["test"][1][:6]], torch.eye(3)[[0] * 6]])

    def spy(train_f, train_y, val_f, val_y, test_f, **kwargs):
        seen.update(train=(train_f, train_y), val=(val_f, val_y), test=test_f, kwargs=kwargs)
        return {"lr": 0.3, "weight_decay": 1e-4, "val_accuracy": 0.75, "test_probs": fixed}

    monkeypatch.setattr(module, "linear_probe", spy)
    run, data, task = feature_task(tmp_path, SPLITS, ["a", "b", "c"], "seed=7", "linear.lrs=[0.1,0.3]",
                                   "linear.weight_decays=[0,1e-4]", "linear.epochs=3", "linear.batch_size=8")
    (row,) = module.linear(run, data, task.linear)
    for split in ("train", "val"):
        torch.testing.assert_close(seen[split][0], SPLITS[split][0])
        assert torch.equal(seen[split][1], SPLITS[split][1])
    torch.testing.assert_close(seen["test"], SPLITS["test"][0])
    assert seen["kwargs"] == {"seed": 7, "num_classes": 3, "lrs": [0.1, 0.3], "weight_decays": [0.0, 1e-4],
                              "epochs": 3, "batch_size": 8, "device": "cpu"}
    assert (row["protocol"], row["setting"]) == ("linear", "grid")
    assert row["chosen"] == {"lr": 0.3, "weight_decay": 1e-4, "val_accuracy": 0.75}
    assert row["metrics"]["accuracy"]["mean"] == pytest.approx(8 / 12)  # scored on the probe's test output


def test_separable_points_are_classified_perfectly(tmp_path):
    run, data, task = feature_task(tmp_path, SPLITS, ["a", "b", "c"], "linear.lrs=[0.1]",
                                   "linear.weight_decays=[0.0]", "linear.epochs=20")
    (row,) = module.linear(run, data, task.linear)
    assert row["metrics"]["accuracy"]["mean"] == 1.0 and row["chosen"]["val_accuracy"] == 1.0
    assert row["chosen"]["lr"] == 0.1 and row["chosen"]["weight_decay"] == 0.0
