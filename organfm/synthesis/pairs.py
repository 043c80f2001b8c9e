"""RaSDPairs: the endless stream of RaSD image/label-map pairs, item n a pure function of (seed, n).

Both the online buffer (``buffer.py``) and the offline writer (``export.py``) read this stream, so
a pair written to disk is the same pair the online trainer would have drawn at that index.
"""
from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from organfm.data.sample import IMAGE, INDEX
from organfm.synthesis.appearance import labels_to_image
from organfm.synthesis.fields import _default_num_labels, draw_label_map
from organfm.synthesis.organs import LABEL_MAP, _seeded_generator

__all__ = ["RaSDPairs", "NonFiniteSampleError"]


class NonFiniteSampleError(RuntimeError):
    """Every allowed attempt at one sample produced NaN or Inf."""


class RaSDPairs(Dataset):
    """Random RaSD pairs [0]: ``draw_label_map`` → ``labels_to_image``, keyed by index.

    Item n is drawn from a generator seeded by a hash of (seed, stream, attempt, n), so it is
    identical across calls, processes and DataLoader workers, and independent of the global RNG.
    An image that holds NaN or Inf is drawn again with the next attempt number, as the reference
    regenerates such samples (the retry is itself a pure function of (seed, n)).

    The stream has no natural end; ``__len__`` is ``length`` (default 2**62) only so that samplers
    and ``len()`` work.

    Args:
        shape: Spatial shape, (H, W) or (D, H, W).
        num_labels: K; ``None`` gives RaSD's S//32 in 2D and S//16 in 3D (at least 2).
        seed: Seed of the stream.
        stream: Name of the stream; different names give unrelated streams for one seed (the
            online buffer uses one per distributed rank).
        max_attempts: Draws tried per item before ``NonFiniteSampleError``.
        length: What ``len()`` reports.

    Items:
        ``{"image": float32 (1, *S) in [0, 1], "label_map": int64 (1, *S) in [0, K), "index": n}``.

    [0] Wei et al., RaSD, arXiv 2602.12317; code: github.com/yweibs/RaSD (``DatasetGEN3D``).
    """

    def __init__(self, shape: Sequence[int], *, num_labels: int | None = None, seed: int = 0,
                 stream: str = "rasd", max_attempts: int = 8, length: int = 2**62) -> None:
        self.shape = tuple(int(n) for n in shape)
        if len(self.shape) not in (2, 3) or min(self.shape) < 2:
            raise ValueError(f"shape must be 2 or 3 sizes >= 2, got {tuple(shape)}")
        self.num_labels = _default_num_labels(self.shape) if num_labels is None else int(num_labels)
        if self.num_labels < 2:
            raise ValueError(f"num_labels must be >= 2, got {self.num_labels}")
        self.seed, self.stream, self.max_attempts, self.length = seed, stream, max_attempts, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = operator.index(index)
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range [0, {self.length})")
        for attempt in range(self.max_attempts):
            generator = _seeded_generator(self.seed, f"{self.stream}/{attempt}", index)
            label_map = draw_label_map(self.shape, self.num_labels, generator)
            image = self.render(label_map, generator)
            if torch.isfinite(image).all():
                return {IMAGE: image, LABEL_MAP: label_map, INDEX: index}
        raise NonFiniteSampleError(f"sample {index} of seed {self.seed} was non-finite in {self.max_attempts} draws")

    def render(self, label_map: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The appearance step, ``labels_to_image`` with the reference defaults (a hook for tests).

        Args:
            label_map: int64 (1, *S).
            generator: Source of randomness.

        Returns:
            float32 image (1, *S).
        """
        return labels_to_image(label_map, self.num_labels, generator)

    def summary(self) -> dict[str, Any]:
        """Generator settings for logs and manifests."""
        return {"source": "rasd", "procedural": True, "shape": list(self.shape), "dim": len(self.shape),
                "num_labels": self.num_labels, "seed": self.seed, "stream": self.stream}

    def __repr__(self) -> str:
        return f"RaSDPairs(shape={self.shape}, num_labels={self.num_labels}, seed={self.seed}, stream={self.stream!r})"
