"""A word tokenizer built from the training corpus (no downloaded vocabulary exists here).

Lower-cased words (letters, digits, dots) become ids by corpus frequency; rare words map to ``[UNK]``.
Saved as JSON beside the text encoder, so a trained model carries its own vocabulary.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import torch

from organfm.outputs.atomic import write_atomic

__all__ = ["WordTokenizer"]

_WORD = re.compile(r"[a-z0-9.]+")
PAD, UNK = "[PAD]", "[UNK]"


class WordTokenizer:
    """Word ids by corpus frequency: id 0 pads, id 1 is unknown, then the words seen >= ``min_count`` times.

    Args:
        vocab: the words, in id order (specials first).
    """

    def __init__(self, vocab: list[str]) -> None:
        if vocab[:2] != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD}, {UNK}")
        self.vocab = list(vocab)
        self.ids = {w: i for i, w in enumerate(self.vocab)}

    @classmethod
    def from_corpus(cls, texts: Iterable[str], *, max_words: int = 8000, min_count: int = 1) -> WordTokenizer:
        """The ``max_words`` most frequent words of ``texts`` seen at least ``min_count`` times (ties: alphabetical)."""
        counts = Counter(w for t in texts for w in _WORD.findall(t.lower()))
        words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls([PAD, UNK, *words[:max_words]])

    def __len__(self) -> int:
        return len(self.vocab)

    def __call__(self, texts: list[str], max_len: int = 64) -> torch.Tensor:
        """N texts -> (N, L) int64 ids, right-padded with 0, L = min(max_len, longest text)."""
        rows = [[self.ids.get(w, 1) for w in _WORD.findall(t.lower())][:max_len] for t in texts]
        out = torch.zeros(len(rows), max(1, max((len(r) for r in rows), default=1)), dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        return out

    def save(self, path: str | Path) -> None:
        """Write the vocabulary to ``path`` as JSON, atomically (a failed write keeps the previous file).

        Args:
            path: the ``.json`` file to write.
        """
        write_atomic(path, json.dumps({"format": "organfm-word-tokenizer", "vocab": self.vocab}))

    @classmethod
    def load(cls, path: str | Path) -> WordTokenizer:
        data = json.loads(Path(path).read_text())
        if data.get("format") != "organfm-word-tokenizer":
            raise ValueError(f"{path}: not an organfm word tokenizer")
        return cls(data["vocab"])
