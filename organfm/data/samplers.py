"""A resumable, rank-aware batch sampler whose batches are a pure function of (seed, step)."""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["ResumableBatchSampler"]


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields batches of ``(index, sample_seed)`` forever, epoch after epoch.

    Epoch ``e`` is a permutation drawn from ``seed + e``; rank ``r`` of ``world_size`` takes every
    ``world_size``-th batch-sized chunk of it, so ranks never share an image within an epoch. Each item
    carries a seed derived from (seed, epoch, index) that fixes its augmentation draws, so the batches
    after a resume, and their views, are exactly those an uninterrupted run would have drawn, whatever
    the number of DataLoader workers.

    Args:
        num_items: dataset length.
        batch_size: items per batch on this rank.
        seed: run seed.
        start_batch: number of this rank's batches already consumed (resume point).
        rank: this process's global rank.
        world_size: number of processes.
    """

    def __init__(self, num_items: int, batch_size: int, *, seed: int = 0, start_batch: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        self.batches_per_epoch = num_items // (batch_size * world_size)
        if self.batches_per_epoch < 1:
            raise ValueError(f"{num_items} images cannot fill one batch of {batch_size} x {world_size} ranks; "
                             "lower trainer.batch_size or add data")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start_batch, self.rank, self.world_size = start_batch, rank, world_size

    def _epoch(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_items, generator=g)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        batch = self.start_batch
        while True:
            epoch, within = divmod(batch, self.batches_per_epoch)
            perm = self._epoch(epoch)
            for b in range(within, self.batches_per_epoch):
                chunk = (b * self.world_size + self.rank) * self.batch_size
                ids = perm[chunk:chunk + self.batch_size].tolist()
                yield [(i, _sample_seed(self.seed, epoch, i)) for i in ids]
                batch += 1

    def __len__(self) -> int:  # one epoch; the iterator itself never ends
        return self.batches_per_epoch


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    # 63-bit mix: distinct (seed, epoch, index) triples give distinct, well-spread seeds
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & (2**63 - 1)
    x ^= x >> 31
    return (x * 0xD6E8FEB86659FD93) & (2**63 - 1)
