"""Applies a view recipe to a dataset with per-item seeded randomness."""
from __future__ import annotations

from typing import Callable

import torch
from torch.utils.data import Dataset

from organfm.data.sample import IMAGE, ORGAN

__all__ = ["MultiViewDataset"]


class MultiViewDataset(Dataset):
    """Wraps an image dataset: item ``(index, seed)`` -> ``{"global": [...], "local": [...], "organ": int}``.

    The recipe runs under a forked torch RNG seeded with ``seed``, so an item's views depend only on
    (index, seed): not on the worker that made it, nor on what ran before (exact resume).

    Args:
        dataset: yields ``{"image": (C, H, W), "organ": int, ...}``.
        recipe: image -> ``{"global": [...], "local": [...]}``.
    """

    def __init__(self, dataset: Dataset, recipe: Callable[[torch.Tensor], dict]) -> None:
        self.dataset, self.recipe = dataset, recipe

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, seed = key
        item = self.dataset[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            views = self.recipe(item[IMAGE])
        views[ORGAN] = int(item[ORGAN])
        return views
