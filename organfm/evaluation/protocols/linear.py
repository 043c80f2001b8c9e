"""Linear probe on frozen features: a grid of (lr, weight decay) chosen on val, scored once on test.

The probe is ``organfm.evaluation.probes.linear_probe`` (shared with ``fewshot``'s linear learner).
"""
from __future__ import annotations

from typing import Any

from organfm.evaluation.probes import LinearConfig, linear_probe, linear_probe_kwargs
from organfm.evaluation.protocol import ModelRun, classification_values, make_row, metric_lists, register_protocol
from organfm.evaluation.task_data import TaskData

__all__ = ["linear"]


@register_protocol("linear", config=LinearConfig, inputs="features", splits=("train", "val", "test"))
def linear(run: ModelRun, data: TaskData, settings: LinearConfig) -> list[dict[str, Any]]:
    """One row: test metrics of the probe with the best validation accuracy, and the chosen lr/wd."""
    train, val, test = data.splits["train"], data.splits["val"], data.splits["test"]
    out = linear_probe(run.features(train), train.labels, run.features(val), val.labels, run.features(test),
                       seed=run.seed, **linear_probe_kwargs(settings, len(data.class_names), run.device))
    return [make_row(run.name, "linear", "grid", metric_lists(classification_values(test.labels, out["test_probs"])),
                     chosen={"lr": out["lr"], "weight_decay": out["weight_decay"],
                             "val_accuracy": out["val_accuracy"]})]
