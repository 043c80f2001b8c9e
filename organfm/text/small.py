"""A small trainable text tower (stage 1 CLIP's when no pretrained biomedical one is available).

Word embeddings + learned positions + a Transformer encoder + masked mean pooling, over a word tokenizer built
from the training corpus. It is a :class:`~organfm.text.tower.TextTower` (``tokenize`` + ``forward``, trains
inside a CLIP loss) and meets the frozen :class:`organfm.text.TextEncoder` contract (``encode``, ``dim``).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from organfm.text.tokenizer import WordTokenizer
from organfm.text.tower import TextTower, register_text_tower

__all__ = ["SmallTextEncoder"]

_TOKENIZER = "tokenizer.json"


@register_text_tower("small")
class SmallTextEncoder(TextTower):
    """Args:
        tokenizer: the corpus tokenizer.
        width: token embedding width, also the output size (``width`` and ``dim``).
        depth: Transformer layers.
        heads: attention heads.
        max_len: longest text in tokens (longer ones are cut).
    """

    def __init__(self, tokenizer: WordTokenizer, *, width: int = 128, depth: int = 2, heads: int = 4,
                 max_len: int = 64) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"text width {width} is not divisible by {heads} heads")
        self.tokenizer, self.width, self.dim, self.max_len = tokenizer, width, width, max_len
        self.depth, self.heads = depth, heads
        self.embed = nn.Embedding(len(tokenizer), width, padding_idx=0)
        self.pos = nn.Parameter(torch.zeros(max_len, width))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """N strings -> ``{"ids": (N, L) int64}`` (0 pads)."""
        return {"ids": self.tokenizer(list(texts), self.max_len)}

    def forward(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """``{"ids": (N, L)}`` -> (N, width); a text with no known word pools over its padding (a constant)."""
        ids = tokens["ids"]
        mask = ids != 0
        x = self.embed(ids) + self.pos[: ids.shape[1]]
        # a row that is all padding would make attention NaN: let such rows attend everywhere
        pad = ~mask & mask.any(1, keepdim=True)
        x = self.encoder(x, src_key_padding_mask=pad)
        w = mask.unsqueeze(-1).to(x.dtype)
        return (x * w).sum(1) / w.sum(1).clamp(min=1.0)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "width": self.width, "depth": self.depth, "heads": self.heads,
                "max_len": self.max_len, "vocab_size": len(self.tokenizer)}

    def write_files(self, folder: Path) -> None:
        self.tokenizer.save(folder / _TOKENIZER)

    @classmethod
    def from_spec(cls, spec: str, *, tokenizer_file: str, width: int) -> SmallTextEncoder:
        """A fresh tower over the corpus tokenizer ``tokenizer_file``.

        Raises:
            ValueError: no tokenizer file (it is written by the batch source).
        """
        if not tokenizer_file:
            raise ValueError("a small text tower needs the corpus tokenizer (method.tokenizer_file), which the "
                             "batch source writes; build the method through `organfm pretrain`")
        return cls(WordTokenizer.load(tokenizer_file), width=width)

    @classmethod
    def from_description(cls, description: dict[str, Any], folder: Path | None) -> SmallTextEncoder:
        if folder is None or not (folder / _TOKENIZER).is_file():
            raise FileNotFoundError(f"{folder}: a small text tower needs its {_TOKENIZER}")
        tokenizer = WordTokenizer.load(folder / _TOKENIZER)
        if len(tokenizer) != description["vocab_size"]:
            raise ValueError(f"{folder / _TOKENIZER}: {len(tokenizer)} words, the tower was built for "
                             f"{description['vocab_size']}")
        return cls(tokenizer, width=description["width"], depth=description["depth"], heads=description["heads"],
                   max_len=description["max_len"])
