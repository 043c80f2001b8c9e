"""Encoders behind one contract; ``create_backbone`` resolves registered names first, then timm names."""
from __future__ import annotations

from typing import Any

from torch import nn

from organfm.backbones.base import Backbone
from organfm.backbones.timm import TimmBackbone
from organfm.registry import Registry

__all__ = ["Backbone", "TimmBackbone", "create_backbone", "list_backbones", "register_backbone"]

_BACKBONES: Registry[nn.Module] = Registry("backbone")
register_backbone = _BACKBONES.register


def create_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Build the backbone ``name``: an organfm-registered network, else any timm architecture."""
    if name in _BACKBONES:
        return _BACKBONES.create(name, **kwargs)
    return TimmBackbone(name, **{k: v for k, v in kwargs.items() if v is not None})


def list_backbones() -> list[str]:
    """organfm's own backbones (every ``timm.list_models()`` name works too)."""
    return _BACKBONES.names()
