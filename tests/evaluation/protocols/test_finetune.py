"""The fine-tuning protocol: one fit per seed (the task's seed, then the next ones), each on the same stratified
subset of at most ``finetune.max_train`` training images, gathered into one row; a real fit learns separable blobs."""
from __future__ import annotations

import numpy as np
import torch

import organfm.evaluation.protocols.finetune as module
from tests.evaluation.conftest import feature_task

LABELS = torch.arange(12) % 3
SPLITS = {name: (torch.eye(3)[LABELS] * 4, LABELS) for name in ("train", "val", "test")}


def test_one_fit_per_seed_on_one_stratified_subset_gathered_into_one_row(tmp_path, monkeypatch):
    calls = []

    def spy(run, data, train_idx, seed, settings):
        calls.append((np.asarray(train_idx).tolist(), seed))
        return {"accuracy": seed / 100, "auc": 0.5, "best_epoch": float(seed % 4)}

    monkeypatch.setattr(module, "finetune_once", spy)
    run, data, task = feature_task(tmp_path, SPLITS, ["a", "b", "c"], "seed=10", "finetune.seeds=3",
                                   "finetune.max_train=6")
    (row,) = module.finetune(run, data, task.finetune)
    assert [seed for _, seed in calls] == [10, 11, 12]
    subset = calls[0][0]
    assert all(idx == subset for idx, _ in calls)  # every seed fits the same images
    assert len(subset) == 6 and np.bincount(LABELS.numpy()[subset]).tolist() == [2, 2, 2]
    assert (row["protocol"], row["setting"]) == ("finetune", "6 train")
    assert row["values"] == {"accuracy": [0.10, 0.11, 0.12], "auc": [0.5, 0.5, 0.5]}
    assert row["best_epoch"] == [2, 3, 0] and all(type(e) is int for e in row["best_epoch"])
    assert row["metrics"]["accuracy"]["n"] == 3


def test_without_a_cap_every_training_image_is_used(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(module, "finetune_once",
                        lambda run, data, idx, seed, s: calls.append(list(idx)) or {"accuracy": 1.0, "best_epoch": 1.0})
    run, data, task = feature_task(tmp_path, SPLITS, ["a", "b", "c"], "finetune.max_train=50")
    (row,) = module.finetune(run, data, task.finetune)
    assert calls == [list(range(12))] and row["setting"] == "12 train"


def test_a_real_fit_learns_separable_points(tmp_path):
    from torch import nn

    run, data, task = feature_task(tmp_path, SPLITS, ["a", "b", "c"], "finetune.epochs=15", "finetune.batch_size=4",
                                   "finetune.augment=false", "finetune.lr=0.05", "finetune.weight_decay=0")
    run.make_backbone = lambda: _Flat(nn.Flatten())
    (row,) = module.finetune(run, data, task.finetune)
    assert row["metrics"]["accuracy"]["mean"] == 1.0


class _Flat(torch.nn.Module):
    """The flattening "backbone" with the contract's ``num_features`` and one trainable scale."""

    num_features = 3

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.scale = inner, torch.nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.inner(x)
