"""Pure training objectives: ``nn.Module`` losses; hyperparameters in ``__init__``, tensors in."""

from __future__ import annotations

from organfm.losses.dice_ce import dice_ce_loss
from organfm.losses.dino import DINOLoss
from organfm.losses.prototype import PrototypeDisentanglementLoss, region_prototypes
from organfm.losses.supcon import SupConLoss, supcon_multiview

__all__ = ["DINOLoss", "PrototypeDisentanglementLoss", "SupConLoss", "dice_ce_loss", "region_prototypes",
           "supcon_multiview"]
