"""Class-stratified random subsets: the same labels and seed always give the same items, whatever the model.

Used wherever a split is capped (a task's ``data.max_*``, few-shot fractions and k-shot sets, a cluster map's
points), so every model is scored on the same items.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["stratified_subset"]


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
