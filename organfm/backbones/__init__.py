"""Encoders behind one contract; ``create_backbone`` resolves registered names first, then timm names.

Registered here:
- ``unet_small`` (a small 2D/3D U-Net for CPU) and ``swin_unetr`` (MONAI SwinUNETR, RaSD's network), both
  dense: ``forward_features(x)["dense"]`` is a per-pixel/voxel feature map;
- ``plainconv3d`` (nnU-Net's PlainConvEncoder) and ``swin3d`` (MONAI SwinViT), 3D encoders with a learnable
  mask for masked-volume pretraining (Triad);
- ``organ_set_vit``, a transformer over the tokens of a subject's available organs (Pan-FM).

Every backbone ``create_backbone`` returns carries a :class:`BackboneContract` as ``backbone.contract`` (its
identity; pretraining and loading an export fill in the input side), as timm models carry ``pretrained_cfg``.
"""
from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from organfm.backbones.base import Backbone
from organfm.backbones.contract import BackboneContract, attach_contract, build_contract
from organfm.backbones.organ_set import OrganSetBackbone
from organfm.backbones.plainconv3d import PlainConv3DBackbone
from organfm.backbones.swin import SwinUNETRBackbone
from organfm.backbones.swin3d import Swin3DBackbone
from organfm.backbones.timm import TimmBackbone
from organfm.backbones.unet import UNetBackbone
from organfm.registry import Registry

__all__ = ["Backbone", "BackboneContract", "OrganSetBackbone", "PlainConv3DBackbone", "Swin3DBackbone", "SwinUNETRBackbone",
           "TimmBackbone", "UNetBackbone", "create_backbone", "list_backbone_arguments", "list_backbones",
           "register_backbone"]

_BACKBONES: Registry[nn.Module] = Registry("backbone")
register_backbone = _BACKBONES.register
register_backbone("unet_small")(UNetBackbone)
register_backbone("swin_unetr")(SwinUNETRBackbone)
register_backbone("plainconv3d")(PlainConv3DBackbone)
register_backbone("swin3d")(Swin3DBackbone)
register_backbone("organ_set_vit")(OrganSetBackbone)


def create_backbone(name: str, **kwargs: Any) -> nn.Module:
    """Build the backbone ``name``: an organfm-registered network, else any timm architecture, with its
    ``contract`` (a :class:`BackboneContract`) attached.

    ``strict=False`` (partial loading of ``pretrained_file``, reported) is for timm architectures; organfm's own
    backbones always load their exports strictly.
    """
    if name in _BACKBONES:
        if kwargs.pop("strict", True) is False:
            raise ValueError(f"backbone.strict_load=false (partial weight loading) is for timm architectures, not "
                             f"{name!r}: set backbone.strict_load=true and give weights of this architecture")
        backbone = _BACKBONES.create(name, **kwargs)
    else:
        backbone = TimmBackbone(name, **{k: v for k, v in kwargs.items() if v is not None})
    return attach_contract(backbone, build_contract(backbone, architecture=name))


def list_backbone_arguments(name: str) -> list[str]:
    """The keyword arguments backbone ``name``'s constructor takes (organfm backbones; [] for a timm name, whose
    size comes from the name itself)."""
    if name not in _BACKBONES:
        return []
    params = inspect.signature(_BACKBONES.get(name)).parameters.values()
    return [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def list_backbones() -> list[str]:
    """organfm's own backbones (every ``timm.list_models()`` name works too)."""
    return _BACKBONES.names()
