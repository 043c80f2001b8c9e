"""SupCon [0]: supervised contrastive learning over organ labels, Coda's inter-organ-only baseline.

[0] Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020.
"""
from __future__ import annotations

import torch
from torch import nn

from organfm.heads import ProjectionHead
from organfm.losses import SupConLoss
from organfm.methods.base import Method, StepOutput, StepState
from organfm.methods.coda import organ_targets
from organfm.methods.registry import register_method
from organfm.monitor.signals import alignment, uniformity

__all__ = ["SupCon"]


@register_method("supcon")
class SupCon(Method):
    """Every view of every image is an anchor; other views of the same organ are its positives.

    Args:
        backbone: encoder with ``num_features``.
        hidden_dim: projector width.
        out_dim: projector output (L2-normalised inside the loss).
        temp: temperature.
        denominator: "all" (Khosla) or "negatives".
    """

    card_summary = "supervised contrastive learning (student exported)"

    export_prefix = "student.backbone.model."
    section_defaults = {"views.num_local_views": 0}  # two global views, no local crops

    def __init__(self, backbone: nn.Module, *, hidden_dim: int = 512, out_dim: int = 128,
                 temp: float = 0.07, denominator: str = "all") -> None:
        super().__init__()
        self.student = nn.ModuleDict(
            {"backbone": backbone, "head": ProjectionHead(backbone.num_features, hidden_dim=hidden_dim, out_dim=out_dim)})
        self.loss_fn = SupConLoss(temp=temp, base_temp=temp, denominator=denominator)

    def forward(self, batch: dict, state: StepState) -> StepOutput:
        """Args:
            batch: ``global`` [(B,C,H,W)] * V with V >= 2, ``organ`` (B,).
            state: the step (SupCon reads no schedule of its own).
        """
        views = batch["global"]
        if len(views) < 2:
            raise ValueError("SupCon needs at least two global views")
        emb = self.student["head"](self.student["backbone"](torch.cat(views)))  # (V*B, E)
        labels = organ_targets(batch["organ"]).repeat(len(views))
        self_mask = torch.eye(emb.shape[0], dtype=torch.bool, device=emb.device)
        loss = self.loss_fn(emb, emb, labels, labels, self_mask=self_mask)
        return StepOutput(loss=loss, logs={"loss": loss.detach()})

    @torch.no_grad()
    def health_signals(self, batch: dict, state: StepState) -> dict[str, float]:
        """Alignment of the two views' projections and their uniformity (Wang & Isola)."""
        net = self.student
        a, b = (net["head"](net["backbone"](v)) for v in batch["global"][:2])
        return {"alignment": alignment(a, b), "uniformity": uniformity(a)}
