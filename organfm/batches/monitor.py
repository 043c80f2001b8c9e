"""The fixed monitor batch of a run (``BatchSource.monitor``): the same items at every measurement.

A monitor batch is a training-style batch of ``n`` items chosen by a seeded permutation (independent of
the run seed, so runs of different seeds are measured on the same images), each drawn with a fixed item
seed, plus ``monitor_input``: what the exported network sees at evaluation (the clean image at the
contract's size and normalisation), and ``monitor_label`` where the data have labels.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

__all__ = ["MONITOR_SEED", "clean_images", "monitor_indices", "collate_items"]

MONITOR_SEED = 20_231_207  # fixed: the monitor subset does not change with trainer.seed


def monitor_indices(length: int, n: int, seed: int = MONITOR_SEED) -> list[int]:
    """``min(n, length)`` distinct indices of a dataset of ``length`` items, a pure function of ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(length, generator=g)[:min(n, length)].sort().values.tolist()


def collate_items(items: Any, indices: Sequence[int], seed: int = MONITOR_SEED) -> dict:
    """One batch of ``items[(index, seed + index)]`` (the keys a resumable loader asks for)."""
    with torch.random.fork_rng(devices=[]):  # a dataset may draw from the global RNG: leave the run's alone
        return default_collate([items[(i, seed + i)] for i in indices])


def clean_images(dataset: Any, indices: Sequence[int], *, size: int, mean: float, std: float,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The unaugmented images (bilinear to ``size``, then ``(x - mean) / std``) and their organ ids.

    Args:
        dataset: yields ``{"image": (C, H, W) float in [0, 1], "organ": int}``.
        indices: which items.
        size: the contract's input size.
        mean, std: the contract's normalisation.

    Returns:
        images (N, C, size, size) float32 and organ ids (N,) int64.
    """
    images, organs = [], []
    with torch.random.fork_rng(devices=[]):
        for i in indices:
            item = dataset[i]
            x = item["image"]
            x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
            if tuple(x.shape[-2:]) != (size, size):
                x = F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False,
                                  antialias=True)[0]
            images.append((x - mean) / std)
            organs.append(int(item["organ"]))
    return torch.stack(images), torch.tensor(organs, dtype=torch.long)
