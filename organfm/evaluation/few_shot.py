"""Few-shot evaluation: stratified training subsets by fraction or by shots per class, repeated over seeds.

A subset depends only on the labels and the seed, never on the model, so every model is scored on the
same subsets. Each setting (``"10%"``, ``"5-shot"``) runs once per seed and is reported as mean ± sd
with a 95% t-interval (the Coda paper's 1/10/20/50% protocol with 10 repeats).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from organfm.evaluation.metrics import summarize

__all__ = ["few_shot_settings", "run_few_shot", "stratified_subset"]


def stratified_subset(labels: np.ndarray | Sequence[int], *, fraction: float | None = None,
                      shots: int | None = None, seed: int = 0) -> np.ndarray:
    """Indices of a class-stratified random subset.

    Args:
        labels: (N,) class ids.
        fraction: keep ``round(fraction * n_c)`` items of each class c (at least 1).
        shots: keep ``min(shots, n_c)`` items of each class. Exactly one of fraction/shots.
        seed: the same seed and labels always give the same subset.

    Returns:
        Sorted int64 indices into ``labels``.
    """
    if (fraction is None) == (shots is None):
        raise ValueError("pass exactly one of fraction and shots")
    if fraction is not None and not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    if shots is not None and shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    y = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(y):  # sorted classes: the draw order, and so the subset, is fixed by the seed
        members = np.flatnonzero(y == c)
        take = min(len(members), shots if shots is not None else max(1, round(fraction * len(members))))
        chosen.append(members[rng.permutation(len(members))[:take]])
    return np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.zeros(0, dtype=np.int64)


def few_shot_settings(fractions: Sequence[float] = (0.01, 0.1, 0.2, 0.5),
                      shots: Sequence[int] = (1, 5, 10)) -> list[tuple[str, dict[str, Any]]]:
    """Named settings: ``[("1%", {"fraction": 0.01}), ..., ("5-shot", {"shots": 5}), ...]``."""
    named = [(f"{100 * f:g}%", {"fraction": float(f)}) for f in fractions]
    return named + [(f"{int(s)}-shot", {"shots": int(s)}) for s in shots]


def run_few_shot(labels: np.ndarray | Sequence[int], evaluate: Callable[[np.ndarray, int], dict[str, float]], *,
                 fractions: Sequence[float] = (0.01, 0.1, 0.2, 0.5), shots: Sequence[int] = (1, 5, 10),
                 seeds: Sequence[int] = tuple(range(10))) -> dict[str, dict[str, Any]]:
    """Score ``evaluate`` on every setting x seed and summarise each metric over the seeds.

    Args:
        labels: (N,) training labels the subsets are drawn from.
        evaluate: ``(subset indices, seed) -> {metric: float}``, e.g. a linear probe or a fine-tune on
            the subset (the seed also seeds that training).
        fractions, shots: the settings (see :func:`few_shot_settings`).
        seeds: one repeat per seed.

    Returns:
        ``{setting: {"metrics": {metric: summarize(values)}, "values": {metric: [per seed]},
        "n_train": [subset size per seed], "seeds": [...]}}``.
    """
    results: dict[str, dict[str, Any]] = {}
    for name, kwargs in few_shot_settings(fractions, shots):
        values: dict[str, list[float]] = {}
        sizes = []
        for seed in seeds:
            subset = stratified_subset(labels, seed=int(seed), **kwargs)
            sizes.append(int(len(subset)))
            for metric, value in evaluate(subset, int(seed)).items():
                values.setdefault(metric, []).append(float(value))
        results[name] = {"metrics": {m: summarize(v) for m, v in values.items()}, "values": values,
                         "n_train": sizes, "seeds": [int(s) for s in seeds]}
    return results
