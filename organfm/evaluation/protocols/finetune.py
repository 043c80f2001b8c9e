"""Full fine-tuning for classification: fresh backbone + linear layer per seed, test at the best val epoch.

The recipe is ``organfm.evaluation.finetuning`` (shared with ``fewshot``'s fine-tuning learner).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from organfm.data.subsets import stratified_subset
from organfm.evaluation.finetuning import FinetuneConfig, finetune_once
from organfm.evaluation.protocol import ModelRun, make_row, register_protocol
from organfm.evaluation.task_data import TaskData

__all__ = ["finetune"]


@register_protocol("finetune", config=FinetuneConfig, inputs="images", splits=("train", "val", "test"))
def finetune(run: ModelRun, data: TaskData, settings: FinetuneConfig) -> list[dict[str, Any]]:
    """One row over ``finetune.seeds`` fits on (at most ``finetune.max_train`` of) the train split."""
    s, seed0 = settings, run.seed
    labels = data.splits["train"].labels.numpy()
    idx = np.arange(len(labels))
    if s.max_train is not None and len(idx) > s.max_train:
        idx = stratified_subset(labels, fraction=s.max_train / len(idx), seed=seed0)
    values: dict[str, list[float]] = {}
    for k in range(s.seeds):
        for m, v in finetune_once(run, data, idx, seed0 + k, s).items():
            values.setdefault(m, []).append(v)
    epochs = [int(e) for e in values.pop("best_epoch")]
    return [make_row(run.name, "finetune", f"{len(idx)} train", values, best_epoch=epochs)]
