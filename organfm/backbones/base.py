"""The one backbone contract every encoder meets: timm models, organfm's dense and 3D encoders, token-set encoders.

Methods, heads and decoders use only this contract, never an encoder's internals:

- ``num_features`` (E) and ``spatial_dims`` (2 or 3);
- ``forward(x) -> (B, E)``: the pooled embedding, for global use (heads, probes, kNN);
- ``forward_features(x) -> dict``: at least ``"cls"`` (B, E); dense encoders add ``"dense"`` (B, E, *S), a
  per-pixel/voxel map at input resolution; token encoders add ``"tokens"`` (B, N, E);
- ``forward_skips(x) -> list[Tensor]``: multi-scale feature maps for dense use (a U-Net decoder), shallow to
  deep, each (B, C_i, *S_i), with ``skip_channels`` = [C_i]. An encoder with no spatial maps (a token-set
  encoder over organs) raises ``NotImplementedError`` naming itself;
- ``model``: the module whose ``state_dict`` is exported (timm's own keys for timm architectures);
- ``backbone_args``: constructor arguments stored in the export so the same architecture is rebuilt
  (empty for timm names, which rebuild from the name alone).
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["Backbone", "SkipPooledBackbone", "check_input_sizes"]


@runtime_checkable
class Backbone(Protocol):
    """An encoder of channel-first images (or of a set of them).

    Attributes:
        num_features: E, the size of the pooled embedding.
        spatial_dims: 2 or 3.
        skip_channels: channels of each ``forward_skips`` map, shallow to deep.
        model: the exported module.
        backbone_args: constructor arguments stored with an export.
    """

    num_features: int
    spatial_dims: int
    skip_channels: list[int]
    model: nn.Module
    backbone_args: dict[str, Any]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, [D], H, W) -> pooled embedding (B, E)."""
        ...

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, C, [D], H, W) -> ``{"cls": (B, E), ...}`` (``dense``/``tokens`` where the encoder has them)."""
        ...

    def forward_skips(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, [D], H, W) -> multi-scale maps [(B, C_i, [D_i], H_i, W_i)], shallow to deep."""
        ...


class SkipPooledBackbone:
    """Mixin of encoders whose pooled embedding is the global average of their deepest ``forward_skips`` map."""

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, C, *S) -> ``cls`` (B, E), the pooled deepest map, and ``feature_map`` (B, E, *s), that map."""
        deepest = self.forward_skips(x)[-1]
        return {"cls": deepest.mean(dim=tuple(range(2, deepest.dim()))), "feature_map": deepest}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) -> (B, E)."""
        return self.forward_features(x)["cls"]


_CANDIDATE_SIZES = (8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512)


def _accepts(backbone: nn.Module, size: int) -> bool:
    dims = int(getattr(backbone, "spatial_dims", 2))
    x = torch.zeros((1, int(getattr(backbone, "in_chans", 1))) + (size,) * dims)
    try:
        backbone(x)
    except (RuntimeError, ValueError):  # a kernel larger than the map, or a size the encoder refuses
        return False
    return True


@torch.no_grad()
def check_input_sizes(backbone: nn.Module, sizes: dict[str, int], *, name: str = "the backbone") -> None:
    """Refuse, before any step, an input size the backbone cannot take (ConvNeXt needs >= 32 px; a 3D encoder
    a multiple of its stride), naming the config key, its value and the smallest size that works.

    Each size is tried once with a zero input in eval mode (no state changes). Token-set encoders, whose input
    is a set of organ images, are not tried.

    Args:
        backbone: the created backbone.
        sizes: config key -> spatial edge in pixels/voxels (``BatchSource.input_sizes``).
        name: the backbone's config name, for the message.

    Raises:
        ConfigError: a size the backbone does not accept.
    """
    from organfm.configtree import ConfigError

    if hasattr(backbone, "tokens_per_organ") or not sizes:
        return
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            for key, size in sizes.items():
                if _accepts(backbone, int(size)):
                    continue
                works = next((s for s in _CANDIDATE_SIZES if s > size and _accepts(backbone, s)), None)
                hint = f"the smallest size it accepts is {works}" if works else "no size up to 512 worked"
                raise ConfigError(f"{key}={size} is too small for backbone {name}: {hint}; raise {key}"
                                  + (f" to at least {works}" if works else ""))
    finally:
        backbone.train(was_training)
