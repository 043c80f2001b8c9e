"""Parameter groups beyond ``build_optimizer``'s two: a new head beside a pretrained backbone, layer-wise lr decay.

The weight-decay rule is the engine's (``organfm.engine.optim``): parameters with ``ndim >= 2`` decay,
biases and norm weights do not; a group says so with ``apply_weight_decay``, the key
``set_optimizer_values`` reads. Layer decay adds ``lr_scale`` per group (BEiT / ConvNeXt fine-tuning [0]):
with decay d and L backbone layers, depth i gets ``lr * d ** (L - i)`` and the new head (depth L) ``lr``.
``set_scheduled_values`` writes one step's scheduled lr and weight decay into such groups.

[0] Bao et al. BEiT. ICLR 2022; Liu et al. A ConvNet for the 2020s. CVPR 2022.
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from organfm.engine.optim import set_optimizer_values

__all__ = ["build_param_groups", "layer_ids", "set_scheduled_values", "uses_weight_decay"]


def uses_weight_decay(p: torch.Tensor) -> bool:
    """The engine's rule: weights (``ndim >= 2``) decay; biases and norm scales (``ndim < 2``) do not."""
    return p.ndim >= 2


def layer_ids(backbone: nn.Module) -> dict[str, int]:
    """Depth of every backbone parameter, from its name, for layer-wise lr decay.

    A timm model (``backbone.model`` of a ``TimmBackbone``, or the backbone itself) is split by its own
    ``group_matcher(coarse=False)``, the regexes timm uses for layer decay (ConvNeXt: stem 0, one id per
    block; ResNet: stem 0, one id per residual block; ViT: patch embedding 0, one id per block). Without a
    ``group_matcher``, each top-level child module (registration order) is one layer. A model with neither
    gets one layer for everything (no decay), with a warning.

    Returns:
        backbone parameter name (as in ``backbone.named_parameters()``) -> depth, 0 = closest to the input.
    """
    model = getattr(backbone, "model", backbone)
    prefix = "model." if model is not backbone else ""
    names = [name for name, _ in model.named_parameters()]
    if hasattr(model, "group_matcher"):
        try:
            from timm.models import group_parameters

            groups = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
            return {prefix + name: int(groups[name]) for name in names}
        except Exception as e:  # an unusual matcher; fall back to module order below
            warnings.warn(f"timm group_matcher failed ({type(e).__name__}: {e}); using module order", stacklevel=2)
    children = [child for child, module in model.named_children() if any(True for _ in module.parameters())]
    if not children:
        warnings.warn(f"{type(model).__name__}: no layer structure found; layer decay is not applied", stacklevel=2)
        return {prefix + name: 0 for name in names}
    order = {child: i for i, child in enumerate(children)}
    # a parameter registered directly on the model (e.g. a ViT's cls token) goes with the first layer
    return {prefix + name: order.get(name.split(".")[0], 0) for name in names}


def build_param_groups(backbone: nn.Module, head: nn.Module, *, layer_decay: float | None = None,
                       backbone_prefix: str = "backbone.", head_prefix: str = "head.") -> list[dict[str, Any]]:
    """Optimizer groups for a pretrained ``backbone`` and a new ``head``, split by depth and by weight decay.

    Args:
        backbone: the pretrained encoder.
        head: the newly initialised layers (classifier or decoder), depth L.
        layer_decay: d in (0, 1], or None for one lr everywhere.
        backbone_prefix, head_prefix: prepended to parameter names in the groups' ``names``.

    Returns:
        Groups with ``params``, ``names``, ``apply_weight_decay`` and ``lr_scale``; frozen parameters are left out.
    """
    if layer_decay is not None and not 0 < layer_decay <= 1:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    depth = layer_ids(backbone) if layer_decay is not None else {}
    top = max(depth.values(), default=-1) + 1
    groups: dict[tuple[int, bool], dict[str, Any]] = {}

    def add(name: str, p: nn.Parameter, layer: int) -> None:
        decay = uses_weight_decay(p)
        scale = 1.0 if layer_decay is None else float(layer_decay) ** (top - layer)
        group = groups.setdefault((layer, decay), {"params": [], "names": [], "lr_scale": scale,
                                                   "apply_weight_decay": decay})
        group["params"].append(p)
        group["names"].append(name)

    for name, p in backbone.named_parameters():
        if p.requires_grad:
            add(backbone_prefix + name, p, depth.get(name, 0))
    for name, p in head.named_parameters():
        if p.requires_grad:
            add(head_prefix + name, p, top)
    return [groups[key] for key in sorted(groups)]


def set_scheduled_values(optimizer: torch.optim.Optimizer, *, lr: float, weight_decay: float) -> None:
    """``set_optimizer_values`` (weight decay only where ``apply_weight_decay``), then ``lr * lr_scale`` per group."""
    set_optimizer_values(optimizer, lr=lr, weight_decay=weight_decay)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
