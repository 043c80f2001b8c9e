"""Few-shot: label fractions and k-shot subsets of the train split, repeated over seeds, per learner."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from organfm.evaluation.few_shot import run_few_shot
from organfm.evaluation.linear_probe import linear_probe
from organfm.evaluation.protocol import ModelRun, classification_values, make_row, register_protocol
from organfm.evaluation.protocols.finetune import finetune_once
from organfm.evaluation.protocols.linear import linear_kwargs
from organfm.evaluation.task_data import TaskData

__all__ = ["FewShotConfig", "fewshot"]


@dataclass
class FewShotConfig:
    """Few-shot subsets (``run_few_shot``) and the learners run on them (settings of ``linear.*``/``finetune.*``)."""

    fractions: list[float] = field(default_factory=lambda: [0.01, 0.1, 0.2, 0.5])
    shots: list[int] = field(default_factory=lambda: [1, 5, 10])
    seeds: int = 10
    methods: list[Literal["linear", "finetune"]] = field(default_factory=lambda: ["linear", "finetune"])


@register_protocol("fewshot", config=FewShotConfig, inputs="images", splits=("train", "val", "test"))
def fewshot(run: ModelRun, data: TaskData) -> list[dict[str, Any]]:
    """Rows ``fewshot-<method>`` per setting (``1%``, ``5-shot``, ...), one value per seed."""
    s = run.task.fewshot
    train, val, test = data.splits["train"], data.splits["val"], data.splits["test"]
    seeds = [run.task.seed + k for k in range(s.seeds)]
    rows: list[dict[str, Any]] = []
    for method in s.methods:
        if method == "linear":
            f_train, f_val, f_test = run.features(train), run.features(val), run.features(test)
            kwargs = linear_kwargs(run, len(data.class_names))

            def evaluate(idx: np.ndarray, seed: int) -> dict[str, float]:
                out = linear_probe(f_train[idx], train.labels[idx], f_val, val.labels, f_test, seed=seed, **kwargs)
                return classification_values(test.labels, out["test_probs"])
        else:
            def evaluate(idx: np.ndarray, seed: int) -> dict[str, float]:
                out = finetune_once(run, data, idx, seed)
                out.pop("best_epoch")
                return out
        summary = run_few_shot(train.labels.numpy(), evaluate, fractions=s.fractions, shots=s.shots, seeds=seeds)
        rows += [make_row(run.name, f"fewshot-{method}", setting, r["values"], n_train=r["n_train"])
                 for setting, r in summary.items()]
    return rows
