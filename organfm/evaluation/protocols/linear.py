"""Linear probe on frozen features: a grid of (lr, weight decay) chosen on val, scored once on test."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from organfm.evaluation.linear_probe import linear_probe
from organfm.evaluation.protocol import ModelRun, classification_values, make_row, metric_lists, register_protocol
from organfm.evaluation.task_data import TaskData

__all__ = ["LinearConfig", "linear", "linear_kwargs"]


@dataclass
class LinearConfig:
    """Linear-probe grid (``linear_probe``)."""

    lrs: list[float] = field(default_factory=lambda: [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0])
    weight_decays: list[float] = field(default_factory=lambda: [0.0, 1e-4, 1e-3, 1e-2])
    epochs: int = 100
    batch_size: int = 256


def linear_kwargs(run: ModelRun, num_classes: int) -> dict[str, Any]:
    """``linear_probe`` keyword arguments from the task's ``linear.*`` section (shared with few-shot)."""
    s = run.task.linear
    return dict(num_classes=num_classes, lrs=s.lrs, weight_decays=s.weight_decays, epochs=s.epochs,
                batch_size=s.batch_size, device=run.device)


@register_protocol("linear", config=LinearConfig, inputs="features", splits=("train", "val", "test"))
def linear(run: ModelRun, data: TaskData) -> list[dict[str, Any]]:
    """One row: test metrics of the probe with the best validation accuracy, and the chosen lr/wd."""
    train, val, test = data.splits["train"], data.splits["val"], data.splits["test"]
    out = linear_probe(run.features(train), train.labels, run.features(val), val.labels, run.features(test),
                       seed=run.task.seed, **linear_kwargs(run, len(data.class_names)))
    return [make_row(run.name, "linear", "grid", metric_lists(classification_values(test.labels, out["test_probs"])),
                     chosen={"lr": out["lr"], "weight_decay": out["weight_decay"],
                             "val_accuracy": out["val_accuracy"]})]
