"""A deterministic hash embedding of text: no model file, identical on every machine and process.

Each word unigram and bigram is hashed (BLAKE2b, so independent of ``PYTHONHASHSEED``) to a bucket and
a sign; a text is the L2-normalised signed count vector (the "hashing trick"). Texts that share words are
close, texts that share none are near-orthogonal: enough geometry for tests and for descriptions built
from a small vocabulary of acquisition fields.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from organfm.text.tower import TextTower, register_text_tower

__all__ = ["HashTextEncoder"]

_TOKEN = re.compile(r"[a-z0-9.]+")


@register_text_tower("hash")
class HashTextEncoder(TextTower):
    """``encode(texts) -> (N, dim)``: signed hashed counts of lower-cased word unigrams and bigrams, unit norm.

    A text tower without parameters: ``tokenize`` hashes the words into counts, ``forward`` normalises them.

    Args:
        dim: D, the number of buckets (also ``width``).
        seed: salts the hash (another seed gives an unrelated embedding).
    """

    def __init__(self, dim: int = 256, seed: int = 0) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"dim must be >= 2, got {dim}")
        self.dim = self.width = dim
        self.seed = seed

    @classmethod
    def from_spec(cls, spec: str, *, tokenizer_file: str, width: int) -> HashTextEncoder:
        """``width`` buckets, seed 0 (no tokenizer: the hash needs no vocabulary)."""
        return cls(dim=width)

    def _bucket(self, token: str) -> tuple[int, float]:
        digest = hashlib.blake2b(f"{self.seed}|{token}".encode(), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        return value % self.dim, 1.0 if (value >> 63) & 1 else -1.0

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """N strings -> ``{"counts": (N, dim) float32}``, the signed bucket counts of each text's words."""
        out = torch.zeros(len(texts), self.dim)
        for row, text in enumerate(texts):
            words = _TOKEN.findall(str(text).lower())
            for token in words + [f"{a} {b}" for a, b in zip(words, words[1:])]:
                bucket, sign = self._bucket(token)
                out[row, bucket] += sign
        return {"counts": out}

    def forward(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """``{"counts": (N, dim)}`` -> (N, dim), each row unit-norm (a text with no word is the zero vector)."""
        return torch.nn.functional.normalize(tokens["counts"], dim=1)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "dim": self.dim, "seed": self.seed}

    @classmethod
    def from_description(cls, description: dict[str, Any], folder: Path | None) -> HashTextEncoder:
        return cls(dim=int(description["dim"]), seed=int(description["seed"]))

    def __repr__(self) -> str:
        return f"HashTextEncoder(dim={self.dim}, seed={self.seed})"
