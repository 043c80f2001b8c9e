"""The one backbone contract every encoder follows (timm's, DINOv2's and MONAI's habits combined)."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

__all__ = ["Backbone"]


@runtime_checkable
class Backbone(Protocol):
    """An encoder of channel-first images.

    Attributes:
        num_features: E, the size of the pooled embedding.
        spatial_dims: 2 or 3.
    """

    num_features: int
    spatial_dims: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, [D], H, W) -> pooled embedding (B, E)."""
        ...

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, C, [D], H, W) -> ``{"cls": (B, E), "feature_map": (B, E, [D'], H', W')}``."""
        ...
