"""Pure training objectives: ``nn.Module`` losses; hyperparameters in ``__init__``, tensors in."""

from __future__ import annotations

from organfm.losses.dino import DINOLoss
from organfm.losses.supcon import SupConLoss, supcon_multiview

__all__ = ["DINOLoss", "SupConLoss", "supcon_multiview"]
