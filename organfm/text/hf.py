"""A user's local Hugging Face text model (e.g. BiomedBERT) behind the TextEncoder contract, offline only."""
from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["HFTextEncoder"]


class HFTextEncoder:
    """``encode(texts) -> (N, hidden)``: the [CLS] vector of a local ``transformers`` model folder.

    Args:
        folder: a folder holding ``config.json``, the weights and the tokenizer files (never downloaded).
        max_len: context length in tokens (MMKD-CLIP: 256).
        device: where the model runs.

    Raises:
        FileNotFoundError: ``folder`` has no ``config.json``.
        ImportError: ``transformers`` is not installed (it is optional).
    """

    def __init__(self, folder: str | Path, *, max_len: int = 256, device: str = "cpu") -> None:
        folder = Path(folder).expanduser()
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder}: no config.json (expected a local Hugging Face model folder)")
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError as e:
            raise ImportError(f"{folder}: reading a Hugging Face text model needs `pip install transformers`") from e
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True).eval().to(device)
        self.dim, self.max_len, self.device = int(self.model.config.hidden_size), max_len, device

    @torch.no_grad()
    def encode(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_len,
                               return_tensors="pt").to(self.device)
        return self.model(**batch).last_hidden_state[:, 0].float().cpu()
