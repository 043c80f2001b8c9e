"""Small modules on top of backbone features: DINO prototype head and MLP projector."""

from __future__ import annotations

from organfm.heads.dino import DINOHead
from organfm.heads.projection import ProjectionHead

__all__ = ["DINOHead", "ProjectionHead"]
