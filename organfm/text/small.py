"""A small trainable text encoder (stage 1 CLIP's text tower when no pretrained biomedical one is available).

Word embeddings + a 2-layer Transformer encoder + masked mean pooling + a linear map to D. Meets the
:class:`organfm.text.TextEncoder` contract (``encode(list[str]) -> (N, D)``, ``dim``); its ``forward`` takes
token ids so it trains inside a CLIP loss.
"""
from __future__ import annotations

import torch
from torch import nn

from organfm.text.tokenizer import WordTokenizer

__all__ = ["SmallTextEncoder"]


class SmallTextEncoder(nn.Module):
    """Args:
        tokenizer: the corpus tokenizer.
        dim: D, the output size.
        width: token embedding width.
        depth: Transformer layers.
        heads: attention heads.
        max_len: longest text in tokens (longer ones are cut).
    """

    def __init__(self, tokenizer: WordTokenizer, *, dim: int = 128, width: int = 128, depth: int = 2,
                 heads: int = 4, max_len: int = 64) -> None:
        super().__init__()
        self.tokenizer, self.dim, self.max_len = tokenizer, dim, max_len
        self.embed = nn.Embedding(len(tokenizer), width, padding_idx=0)
        self.pos = nn.Parameter(torch.zeros(max_len, width))
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=2 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.proj = nn.Linear(width, dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(N, L) token ids (0 = padding) -> (N, D); an all-padding row pools to the zero vector before proj."""
        mask = ids != 0
        x = self.embed(ids) + self.pos[: ids.shape[1]]
        x = self.encoder(x, src_key_padding_mask=~mask if mask.any(1).all() else None)
        w = mask.unsqueeze(-1).float()
        return self.proj((x * w).sum(1) / w.sum(1).clamp(min=1.0))

    def encode(self, texts: list[str]) -> torch.Tensor:
        """N strings -> (N, D) float32 (the TextEncoder contract; no gradient)."""
        with torch.no_grad():
            return self(self.tokenizer(texts, self.max_len).to(self.pos.device)).float()
