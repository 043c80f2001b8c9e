"""The text side of a CLIP-style model: a trainable text tower, two heads into a joint space, a logit scale.

A *text tower* is an ``nn.Module`` that turns strings into vectors in two steps, so that it can train
inside a CLIP loss: ``tokenize(list[str]) -> dict of (N, L) tensors`` (on the CPU) and
``forward(tokens) -> (N, width)``; frozen, the same tower is a :class:`organfm.text.TextEncoder`
(``encode(list[str]) -> (N, width)``). Three are built in, registered by kind (``@register_text_tower``) and
built by :func:`create_text_tower` from the name a config holds:

- ``small`` (:class:`organfm.text.small.SmallTextEncoder`): a 2-layer Transformer over a word tokenizer
  built from the training corpus (no biomedical text weights exist in the package registries);
- ``hf`` (:class:`organfm.text.hf.HFTextTower`): a user's local Hugging Face folder (BiomedBERT or similar),
  read offline with ``transformers``; a config names it by the folder's path;
- ``hash`` (:class:`organfm.text.hashing.HashTextEncoder`): a deterministic hash embedding without
  parameters or files (Triad's frozen description encoder).

:class:`JointText` puts a tower, a text head (width -> D), an image head (E -> D, on top of the pooled
backbone feature) and the learnable logit scale together. Methods that train texts (``imagetext``, ``mmkd`` with
texts) keep it under ``<network>.text``; ``organfm export`` writes it to ``export/text/`` (``text.json``
describes it, ``text.safetensors`` holds its weights, plus the tower's own files, e.g. the tokenizer), and
:func:`load_joint_text` reads it back for zero-shot evaluation, retrieval and distillation.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from organfm.outputs.atomic import atomic_path, write_atomic
from organfm.registry import Registry

__all__ = ["JointText", "TEXT_DIR", "TEXT_TOWERS", "TextTower", "create_text_tower", "load_joint_text",
           "register_text_tower", "save_joint_text", "text_folder"]

TEXT_DIR = "text"  # beside backbone.safetensors in an export folder
_DESC, _WEIGHTS, FORMAT = "text.json", "text.safetensors", "organfm-text"

TEXT_TOWERS: Registry = Registry("text tower", builtins=("organfm.text.small", "organfm.text.hf",
                                                         "organfm.text.hashing"))


def register_text_tower(kind: str):
    """Class decorator: register a :class:`TextTower` subclass under ``kind`` (its ``describe()["kind"]``)."""

    def wrap(cls: type) -> type:
        cls.kind = kind
        return TEXT_TOWERS.register(kind)(cls)

    return wrap


class TextTower(nn.Module):
    """Contract of a trainable text tower.

    Attributes:
        kind: the registered name.
        width: size of ``forward``'s output.
        dim: the same size, under the name of the frozen :class:`organfm.text.TextEncoder` contract.
    """

    kind: ClassVar[str]
    width: int
    dim: int

    @classmethod
    def from_spec(cls, spec: str, *, tokenizer_file: str, width: int) -> TextTower:  # pragma: no cover - abstract
        """The tower a config's ``spec`` names (its kind, or for ``hf`` a folder), with fresh or pretrained weights.

        Args:
            spec: the config value (``small``, ``hash``, a Hugging Face folder).
            tokenizer_file: the corpus tokenizer the batch source wrote (towers that need one).
            width: the output size, for towers whose size is chosen (a pretrained model has its own).
        """
        raise NotImplementedError

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        """N strings -> token tensors (N, L) on the CPU, ready for :meth:`forward`."""
        raise NotImplementedError

    def forward(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:  # pragma: no cover - abstract
        """Token tensors -> (N, width)."""
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """N strings -> (N, width) float32 on the CPU, without gradient (the frozen TextEncoder contract)."""
        device = next((p.device for p in self.parameters()), torch.device("cpu"))
        return self({k: v.to(device) for k, v in self.tokenize(texts).items()}).float().cpu()

    def describe(self) -> dict[str, Any]:  # pragma: no cover - abstract
        """JSON-able arguments that rebuild this tower's architecture (``kind`` included)."""
        raise NotImplementedError

    def write_files(self, folder: Path) -> None:
        """Write the files :meth:`from_description` needs besides the weights (tokenizer, model config)."""

    @classmethod
    def from_description(cls, description: dict[str, Any], folder: Path | None) -> TextTower:  # pragma: no cover
        """The architecture of ``description`` (random weights), reading the tower's files from ``folder``."""
        raise NotImplementedError


def create_text_tower(spec: str, *, tokenizer_file: str = "", width: int = 128) -> TextTower:
    """The tower a method's ``text_tower`` (or Triad's ``text_encoder``) key names.

    Args:
        spec: a registered kind (``small``, ``hash``), or a local Hugging Face model folder (kind ``hf``).
        tokenizer_file: the corpus tokenizer of a ``small`` tower (written by the batch source).
        width: the output size of a ``small`` or ``hash`` tower.

    Raises:
        ValueError: ``spec`` is neither a registered kind nor a folder; ``small`` without a tokenizer file.
        FileNotFoundError: a folder without ``config.json``.
    """
    # a folder is how a config names a Hugging Face model; every other spec is a kind
    kind = spec if spec in TEXT_TOWERS else "hf"
    if kind == "hf" and spec != "hf" and not Path(spec).expanduser().is_dir():
        raise ValueError(f"unknown text tower {spec!r}; valid: {', '.join(TEXT_TOWERS.names())}, or a local "
                         "Hugging Face model folder")
    return TEXT_TOWERS.get(kind).from_spec(spec, tokenizer_file=tokenizer_file, width=width)


class JointText(nn.Module):
    """Text tower + heads into a joint D-dimensional space + CLIP's logit scale.

    Args:
        tower: the text tower.
        image_dim: E, the backbone's pooled feature size.
        embed_dim: D, the joint space.
        init_temp: initial temperature: ``logit_scale = ln(1 / init_temp)`` (CLIP: 0.07).
    """

    def __init__(self, tower: TextTower, *, image_dim: int, embed_dim: int, init_temp: float = 0.07) -> None:
        super().__init__()
        self.tower, self.image_dim, self.embed_dim = tower, image_dim, embed_dim
        self.image_head = nn.Linear(image_dim, embed_dim)
        self.text_head = nn.Linear(tower.width, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / init_temp)))

    def image(self, features: torch.Tensor) -> torch.Tensor:
        """(N, E) pooled backbone features -> (N, D) L2-normalised image embeddings."""
        return F.normalize(self.image_head(features), dim=-1)

    def text(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """Token tensors (any device; moved to this module's) -> (N, D) L2-normalised text embeddings."""
        device = self.logit_scale.device
        return F.normalize(self.text_head(self.tower({k: v.to(device) for k, v in tokens.items()})), dim=-1)

    @torch.no_grad()
    def embed_images(self, features: torch.Tensor, *, batch_size: int = 4096) -> torch.Tensor:
        """(N, E) pooled features (moved to this module's device) -> (N, D) normalised float32, no gradient."""
        device = self.logit_scale.device
        chunks = [self.image(chunk.to(device).float()) for chunk in features.split(batch_size)]
        return torch.cat(chunks) if chunks else torch.zeros(0, self.embed_dim, device=device)

    def embed_texts(self, texts: Sequence[str], *, batch_size: int = 256) -> torch.Tensor:
        """N strings -> (N, D) normalised float32 on the CPU, without gradient; repeated strings run once."""
        unique = list(dict.fromkeys(texts))
        was = self.training
        self.eval()
        with torch.no_grad():
            rows = [self.text(self.tower.tokenize(unique[i:i + batch_size])).float().cpu()
                    for i in range(0, len(unique), batch_size)]
        self.train(was)
        table = torch.cat(rows) if rows else torch.zeros(0, self.embed_dim)
        where = {t: i for i, t in enumerate(unique)}
        return table[[where[t] for t in texts]] if texts else table

    def describe(self) -> dict[str, Any]:
        """What :func:`load_joint_text` needs besides the weights."""
        return {"format": FORMAT, "version": 1, "image_dim": self.image_dim, "embed_dim": self.embed_dim,
                "tower": self.tower.describe()}

    @classmethod
    def from_description(cls, description: dict[str, Any], folder: Path | None = None) -> JointText:
        """The architecture of ``description`` with random weights."""
        tower_desc = description["tower"]
        tower = TEXT_TOWERS.get(tower_desc["kind"]).from_description(tower_desc, folder)
        return cls(tower, image_dim=int(description["image_dim"]), embed_dim=int(description["embed_dim"]))


def save_joint_text(joint: JointText, folder: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``joint`` (or its architecture with ``state_dict``'s weights) to ``folder``, atomically per file.

    Returns:
        the folder.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    joint.tower.write_files(folder)
    weights = {k: v.detach().cpu().contiguous() for k, v in (state_dict or joint.state_dict()).items()}
    with atomic_path(folder / _WEIGHTS) as tmp:  # the safetensors writer takes a file name, not an open file
        save_file(weights, str(tmp), metadata={"format": FORMAT})
    write_atomic(folder / _DESC, json.dumps(joint.describe(), indent=2))
    return folder


def text_folder(path: str | Path) -> Path | None:
    """The text folder of an export folder, a run folder, the folder itself, or of the folder holding a weights
    file (``organfm export`` writes both side by side); None when there is none."""
    path = Path(path).expanduser()
    path = path.parent if path.is_file() else path
    for candidate in (path, path / TEXT_DIR, path / "export" / TEXT_DIR):
        if (candidate / _DESC).is_file():
            return candidate
    return None


def load_joint_text(folder: str | Path) -> JointText:
    """The :class:`JointText` written by :func:`save_joint_text`, in eval mode.

    Raises:
        FileNotFoundError: no ``text.json`` there; ValueError: a file that is not an organfm text folder or
            weights that do not fit its description (naming the folder).
    """
    from safetensors.torch import load_file

    found = text_folder(folder)
    if found is None:
        raise FileNotFoundError(f"{folder}: no text tower ({TEXT_DIR}/{_DESC}); only models trained with texts "
                                "(method imagetext, or mmkd with texts) have one")
    try:
        description = json.loads((found / _DESC).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{found / _DESC}: unreadable ({type(e).__name__}: {e})") from e
    if description.get("format") != FORMAT:
        raise ValueError(f"{found / _DESC}: not an organfm text description (format {description.get('format')!r})")
    joint = JointText.from_description(description, found)
    try:
        joint.load_state_dict(load_file(str(found / _WEIGHTS)))
    except (OSError, RuntimeError) as e:
        raise ValueError(f"{found / _WEIGHTS}: does not fit {found / _DESC}: {str(e).splitlines()[0]}") from e
    return joint.eval()
