"""SyntheticBuffer: RaSD's online FIFO memory, exactly resumable by step number.

The reference trainer (``Memory`` in ``DatasetGEN3D``) keeps a FIFO of ``B`` synthetic samples; every
step it pushes ``max(1, B // 10)`` fresh ones, pops as many of the oldest, and trains on the whole
buffer, so each sample is seen about 10 times and generation costs a tenth of a batch per step.

Here the samples form one indexed stream (``RaSDPairs``, item n a pure function of (seed, n)) and
the buffer at step s is the window ``n in [s·r, s·r + B)`` with r the refresh count: the new sample
in slot j (0 ≤ j < r) of step s ≥ 1 is item ``B + (s - 1)·r + j``. So a run resumed at step s
rebuilds its buffer from the last ~B/r steps' samples and continues with the very batches an
uninterrupted run would have seen.
"""
from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

from organfm.data.sample import IMAGE, INDEX
from organfm.synthesis.organs import LABEL_MAP
from organfm.synthesis.pairs import RaSDPairs

__all__ = ["SyntheticBuffer"]


class SyntheticBuffer:
    """An endless iterable of RaSD batches: the whole FIFO buffer, refreshed by r samples a step.

    Generation can run in DataLoader worker processes (``num_workers``); the samples and hence the
    batches do not depend on the number of workers.

    Args:
        pairs: The sample stream.
        batch_size: B, the buffer length and the batch size.
        start_step: The step of the first batch yielded (resume point).
        refresh: r, samples replaced per step; ``None`` gives RaSD's max(1, B // 10).
        num_workers: Worker processes generating samples ahead (0: in the calling process).

    Yields:
        ``{"image": float32 (B, 1, *S) in [0, 1], "label_map": int64 (B, 1, *S),
        "index": int64 (B,)}``, oldest sample first.
    """

    def __init__(self, pairs: RaSDPairs, *, batch_size: int, start_step: int = 0, refresh: int | None = None,
                 num_workers: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.pairs = pairs
        self.batch_size = batch_size
        self.refresh = max(1, batch_size // 10) if refresh is None else int(refresh)
        if not 1 <= self.refresh <= batch_size:
            raise ValueError(f"refresh must be in [1, {batch_size}], got {self.refresh}")
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {start_step}")
        self.start_step = start_step
        self.num_workers = num_workers

    def window(self, step: int) -> range:
        """Stream indices held by the buffer at ``step``, oldest first."""
        first = step * self.refresh
        return range(first, first + self.batch_size)

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """The batch of ``step``, built directly (what iteration yields at that step)."""
        return _collate([self.pairs[n] for n in self.window(step)])

    def num_samples(self, steps: int) -> int:
        """Distinct samples drawn by the first ``steps`` steps."""
        return self.window(max(steps, 1) - 1).stop

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        samples = self._samples(self.window(self.start_step).start)
        fifo: deque[dict[str, Any]] = deque((next(samples) for _ in range(self.batch_size)), maxlen=self.batch_size)
        while True:
            yield _collate(fifo)
            fifo.extend(itertools.islice(samples, self.refresh))  # maxlen drops the oldest r

    def _samples(self, first: int) -> Iterator[dict[str, Any]]:
        """Items ``first, first + 1, ...`` of the stream, generated ahead by workers if any."""
        if self.num_workers <= 0:
            return (self.pairs[n] for n in itertools.count(first))
        loader = DataLoader(self.pairs, batch_size=None, sampler=itertools.count(first),
                            num_workers=self.num_workers, prefetch_factor=max(2, self.refresh))
        return iter(loader)

    def summary(self) -> dict[str, Any]:
        """Generator and buffer settings for logs."""
        return {**self.pairs.summary(), "batch_size": self.batch_size, "refresh": self.refresh,
                "image_shape": [1, *self.pairs.shape]}

    def __repr__(self) -> str:
        return (f"SyntheticBuffer({self.pairs!r}, batch_size={self.batch_size}, refresh={self.refresh}, "
                f"start_step={self.start_step})")


def _collate(items) -> dict[str, torch.Tensor]:
    return {IMAGE: torch.stack([it[IMAGE] for it in items]),
            LABEL_MAP: torch.stack([it[LABEL_MAP] for it in items]),
            INDEX: torch.tensor([int(it[INDEX]) for it in items], dtype=torch.long)}
