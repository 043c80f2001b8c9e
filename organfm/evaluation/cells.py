"""One result as text: a table cell (``0.812 ± 0.010``), a headline line, a model's training-health cell.

Shared by the Markdown tables, the HTML report, the suite's progress lines and ``organfm evaluate``'s summary,
so every place shows a number the same way.
"""
from __future__ import annotations

import math
from typing import Any

__all__ = ["HEADLINE_METRICS", "format_cell", "headline", "health_cell"]


def format_cell(summary: dict[str, Any], digits: int = 3) -> str:
    """``"0.812"`` for one value, ``"0.812 ± 0.010"`` for repeats, ``"–"`` for NaN."""
    mean = summary.get("mean")
    if mean is None or not math.isfinite(float(mean)):
        return "–"
    if int(summary.get("n", 1)) > 1:
        return f"{mean:.{digits}f} ± {float(summary.get('sd', 0.0)):.{digits}f}"
    return f"{mean:.{digits}f}"


HEADLINE_METRICS = ("accuracy", "mean_dice", "knn_accuracy", "i2t_R@1")
"""A row's headline metric: the first of these that it holds."""

# beside a classification row's accuracy: the scores an imbalanced test set cannot inflate
_BESIDE_ACCURACY = (("balanced_accuracy", "balanced accuracy"), ("auc", "AUC"))


def headline(row: dict[str, Any]) -> str:
    """One row's result in a line: ``accuracy 0.768 (majority 0.768), balanced accuracy 0.500, AUC 0.612``.

    Accuracy alone reads well on an imbalanced set where it only repeats the majority class's share (a 3D
    task with 77% normal volumes gives every model 0.768), so a classification row is shown with its balanced
    accuracy, its AUC and the majority rate of the set it was scored on.

    Args:
        row: a results row (``metrics``: metric -> summary with ``mean``, ``sd``, ``n``).

    Returns:
        The line, or ``""`` for a row with no headline metric.
    """
    metrics = row.get("metrics", {})
    key = next((m for m in HEADLINE_METRICS if m in metrics), None)
    if key is None:
        return ""
    text = f"{key} {format_cell(metrics[key])}"
    if key != "accuracy":
        return text
    if "majority_accuracy" in metrics:
        text += f" (majority {format_cell(metrics['majority_accuracy'])})"
    return ", ".join([text] + [f"{name} {format_cell(metrics[m])}" for m, name in _BESIDE_ACCURACY if m in metrics])


def health_cell(model: dict[str, Any]) -> str:
    """The pretraining run's health verdict (``health.json``), or why there is none."""
    health = model.get("health")
    if health:
        return f"{health.get('verdict')} (step {health.get('step')})"
    return "random init" if str(model.get("spec", "")).startswith("random:") else "not monitored"
