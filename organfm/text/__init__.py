"""Frozen text encoders behind one contract: ``encode(list[str]) -> (N, D)`` and ``dim``.

Built in: ``HashTextEncoder`` (``organfm.text.hashing``), a deterministic hash embedding that needs no
model file. Another encoder (a local Hugging Face folder, a CLIP text tower) only has to meet
:class:`TextEncoder`.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

__all__ = ["TextEncoder"]


@runtime_checkable
class TextEncoder(Protocol):
    """A frozen map from strings to vectors.

    Attributes:
        dim: D, the embedding size.
    """

    dim: int

    def encode(self, texts: list[str]) -> torch.Tensor:
        """N strings -> (N, D) float32, the same vectors for the same strings in every process."""
        ...
