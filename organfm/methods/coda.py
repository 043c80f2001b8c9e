"""Coda [0]: inter-organ supervised contrast + intra-organ self-distillation, one student, one EMA teacher.

[0] Hosseinzadeh Taher et al., "Learning Foundation Models from Multi-Organ Medical Images by Capturing
    Consistency and Diversity of Anatomical Structures".
"""
from __future__ import annotations

import torch
from torch import nn

from organfm.heads import DINOHead
from organfm.losses import DINOLoss, SupConLoss
from organfm.methods.base import StepOutput, StepState
from organfm.methods.registry import register_method
from organfm.methods.teacher import EMATeacherMethod, build_ema_teacher, prototype_health
from organfm.monitor.signals import alignment, uniformity

__all__ = ["Coda", "organ_targets"]


def organ_targets(organ: torch.Tensor) -> torch.Tensor:
    """Organ ids with unknown organs (-1) made unique, so an unlabelled image is positive only with itself.

    Args:
        organ: (B,) organ ids, -1 for unknown.
    """
    unique = -1 - torch.arange(organ.numel(), device=organ.device)
    return torch.where(organ >= 0, organ, unique)


@register_method("coda")
class Coda(EMATeacherMethod):
    """Coda: L = w_inter · L_inter + w_intra · L_intra.

    Inter-organ branch: SupCon between student embeddings of view 1 (anchors) and teacher embeddings of
    view 2 (contrasts); images of the same organ are positives, the same image's other view included.
    Intra-organ branch: the teacher's centred, sharpened distribution of view 2 is the target of the
    student's distributions of every local crop (DINO cross-entropy, Eq. 2 with its sign fixed).
    The teacher backbone runs once on view 2 and feeds both teacher heads.

    Args:
        backbone: encoder with ``num_features`` (a fresh copy becomes the teacher).
        use_inter: keep the inter-organ branch (ablation switch).
        use_intra: keep the intra-organ branch (ablation switch).
        out_dim: prototypes K of each DINO head (the paper's 65,536 is in configs/coda_paper.yaml; it costs
            1.5-2.5x per step on CPU).
        hidden_dim: MLP width of the heads.
        bottleneck_dim: L2-normalised bottleneck of the heads.
        norm_last_layer: freeze the weight-norm gain of the prototype layer.
        supcon_temp: SupCon temperature.
        supcon_denominator: "all" (Khosla) or "negatives" (the paper's Eq. 1).
        inter_embedding: "logits" (the head's K-dim output) or "bottleneck" (its normalised bottleneck).
        student_temp: DINO student temperature.
        center_momentum: DINO center momentum.
        inter_weight: weight of L_inter.
        intra_weight: weight of L_intra.
    """

    card_summary = "Coda: DINO-style self-distillation with organ-aware multi-crop views (EMA teacher exported)"

    export_prefix = "teacher.backbone.model."

    def __init__(self, backbone: nn.Module, *, use_inter: bool = True, use_intra: bool = True,
                 out_dim: int = 4096, hidden_dim: int = 512, bottleneck_dim: int = 256,
                 norm_last_layer: bool = True, supcon_temp: float = 0.07, supcon_denominator: str = "all",
                 inter_embedding: str = "logits", student_temp: float = 0.1, center_momentum: float = 0.9,
                 inter_weight: float = 1.0, intra_weight: float = 1.0) -> None:
        super().__init__()
        if not (use_inter or use_intra):
            raise ValueError("Coda needs at least one branch: use_inter or use_intra")
        if inter_embedding not in ("logits", "bottleneck"):
            raise ValueError(f"inter_embedding must be 'logits' or 'bottleneck', got {inter_embedding!r}")
        self.use_inter, self.use_intra = use_inter, use_intra
        self.inter_embedding = inter_embedding
        self.inter_weight, self.intra_weight = inter_weight, intra_weight
        head_kwargs = dict(out_dim=out_dim, hidden_dim=hidden_dim, bottleneck_dim=bottleneck_dim,
                           norm_last_layer=norm_last_layer)
        student = nn.ModuleDict({"backbone": backbone})
        if use_inter:
            student["org_head"] = DINOHead(backbone.num_features, **head_kwargs)
            self.inter_loss = SupConLoss(temp=supcon_temp, denominator=supcon_denominator)
        if use_intra:
            student["ins_head"] = DINOHead(backbone.num_features, **head_kwargs)
            self.intra_loss = DINOLoss(out_dim, student_temp=student_temp, center_momentum=center_momentum)
        self.student = student
        self.teacher = build_ema_teacher(student)

    def _inter_embed(self, head: nn.Module, feats: torch.Tensor) -> torch.Tensor:
        logits, bottleneck = head(feats, return_bottleneck=True)
        return logits if self.inter_embedding == "logits" else bottleneck

    def forward(self, batch: dict, state: StepState) -> StepOutput:
        """Args:
            batch: ``global`` [view1 (B,C,H,W), view2 (B,C,H,W), ...], ``local`` [(B,C,h,w)] * N,
                ``organ`` (B,) organ ids (-1 unknown).
            state: the step; ``state["teacher_temp"]`` is the intra branch's scheduled teacher temperature.
        """
        view1, view2 = batch["global"][0], batch["global"][1]
        with torch.no_grad():
            teacher_feats = self.teacher["backbone"](view2)
        loss = view2.new_zeros(())
        logs: dict[str, torch.Tensor] = {}
        if self.use_inter:
            targets = organ_targets(batch["organ"])
            student_emb = self._inter_embed(self.student["org_head"], self.student["backbone"](view1))
            with torch.no_grad():
                teacher_emb = self._inter_embed(self.teacher["org_head"], teacher_feats)
            inter = self.inter_loss(student_emb, teacher_emb, targets, targets)
            loss = loss + self.inter_weight * inter
            logs["loss_inter"] = inter.detach()
        if self.use_intra:
            crops = batch["local"]
            if not crops:
                raise ValueError("Coda's intra-organ branch needs local crops (views.num_local_views > 0)")
            with torch.no_grad():
                teacher_out = self.teacher["ins_head"](teacher_feats).unsqueeze(0)  # (1, B, K)
            student_out = self.student["ins_head"](self.student["backbone"](torch.cat(crops)))
            student_out = student_out.view(len(crops), view2.shape[0], -1)  # (N, B, K)
            teacher_temp = state["teacher_temp"]
            intra = self.intra_loss(teacher_out, student_out, teacher_temp=teacher_temp, skip_same_view=False)
            logs["teacher_entropy"] = self.intra_loss.entropy(teacher_out, teacher_temp=teacher_temp).detach()
            self.intra_loss.update(teacher_out)
            loss = loss + self.intra_weight * intra
            logs["loss_intra"] = intra.detach()
        logs["loss"] = loss.detach()
        return StepOutput(loss=loss, logs=logs)

    @torch.no_grad()
    def health_signals(self, batch: dict, state: StepState) -> dict[str, float]:
        """Intra branch: the teacher's prototype entropies on the clean monitor images; inter branch:
        alignment and uniformity of its SupCon embeddings (student view 1 vs teacher view 2)."""
        out: dict[str, float] = {}
        if self.use_intra:
            feats = self.teacher["backbone"](batch["monitor_input"])
            out.update(prototype_health(self.intra_loss, self.teacher["ins_head"](feats), state["teacher_temp"]))
        if self.use_inter:
            view1, view2 = batch["global"][0], batch["global"][1]
            a = self._inter_embed(self.student["org_head"], self.student["backbone"](view1))
            b = self._inter_embed(self.teacher["org_head"], self.teacher["backbone"](view2))
            out["alignment"], out["uniformity"] = alignment(a, b), uniformity(a)
        return out

    def last_layer_parameters(self) -> list[nn.Parameter]:
        return [p for name in ("org_head", "ins_head") if name in self.student
                for p in self.student[name].last_layer.parameters() if p.requires_grad]
