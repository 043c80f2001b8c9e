"""Full fine-tuning for classification: fresh backbone + linear layer per seed, test at the best val epoch."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from organfm.evaluation.few_shot import stratified_subset
from organfm.evaluation.metrics import CLASSIFICATION_METRICS
from organfm.evaluation.protocol import ModelRun, make_row, register_protocol
from organfm.evaluation.task_data import TaskData

__all__ = ["FinetuneConfig", "finetune", "finetune_once"]


@dataclass
class FinetuneConfig:
    """Full fine-tuning (``finetune_classification`` kwargs), also used by few-shot fine-tuning."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    layer_decay: float | None = None
    patience: int = 5
    seeds: int = 1
    monitor: str = "balanced_accuracy"
    augment: bool = True
    max_train: int | None = None  # a smaller training set for CPU runs


def finetune_once(run: ModelRun, data: TaskData, train_idx: np.ndarray, seed: int) -> dict[str, float]:
    """Fine-tune on ``train_idx`` of the train split (val for selection), return the test metrics."""
    from organfm.evaluation.finetune import finetune_classification

    s = run.task.finetune
    train, val, test = data.splits["train"], data.splits["val"], data.splits["test"]
    idx = torch.as_tensor(train_idx, dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tiny val/test splits: AUC skips are recorded anyway
        out = finetune_classification(
            run.make_backbone, (run.normalized(train.images[idx]), train.labels[idx]),
            (run.normalized(val.images), val.labels), (run.normalized(test.images), test.labels),
            num_classes=len(data.class_names), epochs=s.epochs, batch_size=s.batch_size, lr=s.lr,
            weight_decay=s.weight_decay, layer_decay=s.layer_decay, patience=s.patience, augment=s.augment,
            monitor=s.monitor, seed=seed, device=run.device)
    return {**{m: out["metrics"][m] for m in CLASSIFICATION_METRICS}, "best_epoch": float(out["best_epoch"])}


@register_protocol("finetune", config=FinetuneConfig, inputs="images", splits=("train", "val", "test"))
def finetune(run: ModelRun, data: TaskData) -> list[dict[str, Any]]:
    """One row over ``finetune.seeds`` fits on (at most ``finetune.max_train`` of) the train split."""
    s, seed0 = run.task.finetune, run.task.seed
    labels = data.splits["train"].labels.numpy()
    idx = np.arange(len(labels))
    if s.max_train is not None and len(idx) > s.max_train:
        idx = stratified_subset(labels, fraction=s.max_train / len(idx), seed=seed0)
    values: dict[str, list[float]] = {}
    for k in range(s.seeds):
        for m, v in finetune_once(run, data, idx, seed0 + k).items():
            values.setdefault(m, []).append(v)
    epochs = [int(e) for e in values.pop("best_epoch")]
    return [make_row(run.name, "finetune", f"{len(idx)} train", values, best_epoch=epochs)]
