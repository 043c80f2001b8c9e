"""Weighted kNN on frozen features (DINO's protocol): train features vote for each test image."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from organfm.evaluation.knn import knn_classify
from organfm.evaluation.protocol import ModelRun, classification_values, make_row, metric_lists, register_protocol
from organfm.evaluation.task_data import TaskData

__all__ = ["KNNConfig", "knn"]


@dataclass
class KNNConfig:
    """Weighted kNN (``knn_classify``): one result row per k."""

    k: list[int] = field(default_factory=lambda: [10, 20])
    temperature: float = 0.07


@register_protocol("knn", config=KNNConfig, inputs="features", splits=("train", "test"))
def knn(run: ModelRun, data: TaskData) -> list[dict[str, Any]]:
    """kNN accuracy/AUC on test for every ``knn.k`` not larger than the training set."""
    s = run.task.knn
    train, test = data.splits["train"], data.splits["test"]
    f_train = run.features(train)
    ks = [k for k in s.k if k <= len(f_train)]
    if not ks:  # every k is larger than the training set: vote with all of it rather than fail
        ks = [len(f_train)]
        warnings.warn(f"knn.k={list(s.k)} is larger than the {len(f_train)} training images: using k={len(f_train)} "
                      f"(set knn.k to at most {len(f_train)}, or add training images)", stacklevel=2)
    probs = knn_classify(f_train, train.labels, run.features(test), k=ks, temperature=s.temperature,
                         num_classes=len(data.class_names), device=run.device)
    return [make_row(run.name, "knn", f"k={k}", metric_lists(classification_values(test.labels, p)))
            for k, p in probs.items()]
