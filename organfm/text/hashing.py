"""A deterministic hash embedding of text: no model file, identical on every machine and process.

Each word unigram and bigram is hashed (BLAKE2b, so independent of ``PYTHONHASHSEED``) to a bucket and
a sign; a text is the L2-normalised signed count vector (the "hashing trick"). Texts that share words are
close, texts that share none are near-orthogonal: enough geometry for tests and for descriptions built
from a small vocabulary of acquisition fields.
"""
from __future__ import annotations

import hashlib
import re

import torch

__all__ = ["HashTextEncoder"]

_TOKEN = re.compile(r"[a-z0-9.]+")


class HashTextEncoder:
    """``encode(texts) -> (N, dim)``: signed hashed counts of lower-cased word unigrams and bigrams, unit norm.

    Args:
        dim: D, the number of buckets.
        seed: salts the hash (another seed gives an unrelated embedding).
    """

    def __init__(self, dim: int = 256, seed: int = 0) -> None:
        if dim < 2:
            raise ValueError(f"dim must be >= 2, got {dim}")
        self.dim, self.seed = dim, seed

    def _bucket(self, token: str) -> tuple[int, float]:
        digest = hashlib.blake2b(f"{self.seed}|{token}".encode(), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        return value % self.dim, 1.0 if (value >> 63) & 1 else -1.0

    def encode(self, texts: list[str]) -> torch.Tensor:
        """N strings -> (N, dim) float32, each row unit-norm (a text with no word is the zero vector)."""
        out = torch.zeros(len(texts), self.dim)
        for row, text in enumerate(texts):
            words = _TOKEN.findall(str(text).lower())
            for token in words + [f"{a} {b}" for a, b in zip(words, words[1:])]:
                bucket, sign = self._bucket(token)
                out[row, bucket] += sign
        return torch.nn.functional.normalize(out, dim=1)

    def __repr__(self) -> str:
        return f"HashTextEncoder(dim={self.dim}, seed={self.seed})"
