"""A user's local Hugging Face text model (e.g. BiomedBERT), read offline only.

:class:`HFTextTower` is the trainable :class:`~organfm.text.tower.TextTower` (registered ``hf``): the [CLS]
vector of the model's last layer, with gradient, so it trains inside a CLIP loss. An export holds its
architecture and tokenizer in ``<text>/hf/`` (config and tokenizer files, no weights: those are part of
``text.safetensors``), so a trained model is read back without the original folder.

Frozen (``.eval().requires_grad_(False)``), the same tower meets the :class:`organfm.text.TextEncoder`
contract (``encode`` + ``dim``), e.g. for Triad's per-volume descriptions (``method.text_encoder=<folder>``).

``transformers`` is optional (``pip install organfm[text]``); nothing here ever downloads.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from organfm.text.tower import TextTower, register_text_tower

__all__ = ["HF_DIR", "HFTextTower"]

HF_DIR = "hf"  # inside an export's text folder: the model config and tokenizer files
_CONFIG = "config.json"


def _transformers(folder: Path):
    """The ``transformers`` module; a clear ImportError naming ``folder`` when it is not installed."""
    try:
        import transformers
    except ImportError as e:
        raise ImportError(f"{folder}: reading a Hugging Face text model needs `pip install transformers` "
                          "(or `pip install organfm[text]`)") from e
    return transformers


@register_text_tower("hf")
class HFTextTower(TextTower):
    """The [CLS] vector of a local Hugging Face model, trainable.

    Args:
        folder: a folder holding ``config.json``, the tokenizer files and (when ``pretrained``) the weights.
        max_len: context length in tokens; longer texts are cut (MMKD-CLIP: 256). A model with a shorter
            position table (or tokenizer limit) cuts at that length instead.
        pretrained: load the folder's weights; False builds the architecture from its config with random
            weights (for :meth:`from_description`, whose weights come from ``text.safetensors``).
        source: the original model folder, recorded by :meth:`describe` (default: ``folder``).

    Attributes:
        width: the model's ``hidden_size`` (also ``dim``).

    Raises:
        FileNotFoundError: ``folder`` has no ``config.json``.
        ImportError: ``transformers`` is not installed.
    """

    def __init__(self, folder: str | Path, *, max_len: int = 256, pretrained: bool = True,
                 source: str | Path | None = None) -> None:
        super().__init__()
        folder = Path(folder).expanduser()
        if not (folder / _CONFIG).is_file():
            raise FileNotFoundError(f"{folder}: no {_CONFIG} (expected a local Hugging Face model folder)")
        tf = _transformers(folder)
        self.tokenizer = tf.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        if pretrained:
            model = tf.AutoModel.from_pretrained(folder, local_files_only=True)
        else:
            model = tf.AutoModel.from_config(tf.AutoConfig.from_pretrained(folder, local_files_only=True))
        # transformers 5 loads in the checkpoint's dtype ("auto"); a trained tower keeps float32 master weights
        self.model = model.float()
        if getattr(self.model, "pooler", None) is not None:
            # forward reads [CLS] from the last layer, not the pooler: parameters without gradient would break
            # DistributedDataParallel (unused parameters) and waste optimizer state; they stay in the weights
            self.model.pooler.requires_grad_(False)
        # a model reads at most its position table (and its tokenizer's limit; a huge sentinel when unset)
        positions = getattr(self.model.config, "max_position_embeddings", None) or max_len
        self.max_len = int(min(max_len, positions, self.tokenizer.model_max_length))
        self.width = self.dim = int(self.model.config.hidden_size)
        self.source = str(source if source is not None else folder)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """N strings -> the tokenizer's ``input_ids``, ``attention_mask`` (and ``token_type_ids`` if the model
        uses them), each (N, L) on the CPU, padded to the longest text, L <= ``max_len``."""
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_len,
                               return_tensors="pt")
        return {k: v for k, v in batch.items()}

    def forward(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """Token tensors (N, L) -> (N, width): the last layer's [CLS] (first) vector."""
        return self.model(**tokens).last_hidden_state[:, 0]

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "max_len": self.max_len, "source": self.source}

    def write_files(self, folder: Path) -> None:
        """Write the model config and the tokenizer into ``folder/hf`` (the weights go to text.safetensors)."""
        out = Path(folder) / HF_DIR
        out.mkdir(parents=True, exist_ok=True)
        self.model.config.save_pretrained(out)
        self.tokenizer.save_pretrained(out)

    @classmethod
    def from_spec(cls, spec: str, *, tokenizer_file: str, width: int) -> HFTextTower:
        """The pretrained model in the folder ``spec`` (its own width; no tokenizer file is needed)."""
        return cls(Path(spec).expanduser())

    @classmethod
    def from_description(cls, description: dict[str, Any], folder: Path | None) -> HFTextTower:
        """From ``folder/hf`` (architecture only) when there, else from the original ``source`` folder.

        Raises:
            FileNotFoundError: neither holds ``config.json``.
        """
        source = str(description.get("source", ""))
        max_len = int(description.get("max_len", 256))
        if folder is not None and (Path(folder) / HF_DIR / _CONFIG).is_file():
            return cls(Path(folder) / HF_DIR, max_len=max_len, pretrained=False, source=source)
        if source and (Path(source).expanduser() / _CONFIG).is_file():
            return cls(source, max_len=max_len, source=source)
        where = f"{Path(folder) / HF_DIR}" if folder is not None else "(no text folder)"
        raise FileNotFoundError(f"{where}: no {_CONFIG} for the Hugging Face text tower, and its source folder "
                                f"{source!r} has none either; re-export the model, or restore the source folder")
