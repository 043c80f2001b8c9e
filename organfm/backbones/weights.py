"""Weights files of organfm's own backbones: safetensors whose metadata carries the constructor arguments.

``organfm export`` writes ``backbone_args`` (JSON) into the safetensors metadata, so
``create_backbone(name, pretrained_file=path)`` rebuilds the exported architecture without being told
its spatial dims or widths again.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["BACKBONE_ARGS_KEY", "load_backbone_weights", "read_backbone_args", "resolve_backbone_args"]

BACKBONE_ARGS_KEY = "backbone_args"


def read_backbone_args(path: str | Path) -> dict[str, Any]:
    """The constructor arguments stored in a weights file's metadata (empty if none, or not safetensors).

    Args:
        path: ``.safetensors`` (or ``.pth``/``.pt``, which hold no metadata).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights {path} do not exist")
    if path.suffix != ".safetensors":
        return {}
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return json.loads(meta[BACKBONE_ARGS_KEY]) if BACKBONE_ARGS_KEY in meta else {}


def resolve_backbone_args(given: dict[str, Any], defaults: dict[str, Any], pretrained_file: str | None) -> dict[str, Any]:
    """Architecture arguments: the explicit ones, else the weights file's, else the defaults.

    Args:
        given: Arguments the caller passed; ``None`` means "not given".
        defaults: Built-in defaults for every architecture argument.
        pretrained_file: Weights whose metadata may hold stored arguments.

    Returns:
        One value per key of ``defaults``; sequences become tuples.
    """
    stored = read_backbone_args(pretrained_file) if pretrained_file else {}
    out = {}
    for key, default in defaults.items():
        value = given.get(key)
        value = stored.get(key, default) if value is None else value
        out[key] = tuple(value) if isinstance(value, list) else value
    return out


def load_backbone_weights(model: nn.Module, path: str | Path) -> None:
    """Load a state dict saved by ``organfm export`` (or ``torch.save``) into ``model``, strictly.

    Raises:
        ValueError: The file's tensors do not fit the architecture (names or shapes).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path} does not fit this architecture: {e}") from None
