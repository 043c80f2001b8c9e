"""Weighted kNN on frozen features (DINO's protocol): train features vote for each test image.

The classifier is ``organfm.evaluation.probes.knn_classify`` (shared with ``clusters``' leave-one-out kNN).
"""
from __future__ import annotations

import warnings
from typing import Any

from organfm.evaluation.probes import KNNConfig, knn_classify
from organfm.evaluation.protocol import ModelRun, classification_values, make_row, metric_lists, register_protocol
from organfm.evaluation.task_data import TaskData

__all__ = ["knn"]


@register_protocol("knn", config=KNNConfig, inputs="features", splits=("train", "test"))
def knn(run: ModelRun, data: TaskData, settings: KNNConfig) -> list[dict[str, Any]]:
    """kNN accuracy/AUC on test for every ``knn.k`` not larger than the training set."""
    s = settings
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
