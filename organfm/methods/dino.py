"""DINO [0]: self-distillation with no labels, the intra-organ-only baseline of Coda's ablation.

[0] Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021.
"""
from __future__ import annotations

import torch
from torch import nn

from organfm.heads import DINOHead
from organfm.losses import DINOLoss
from organfm.methods.base import StepOutput, StepState
from organfm.methods.registry import register_method
from organfm.methods.teacher import EMATeacherMethod, build_ema_teacher, prototype_health

__all__ = ["DINO"]


@register_method("dino")
class DINO(EMATeacherMethod):
    """The teacher sees the global views, the student every view; pairs of the same view are skipped.

    Args:
        backbone: encoder with ``num_features``.
        out_dim: prototypes K of the head.
        hidden_dim: MLP width of the head.
        bottleneck_dim: L2-normalised bottleneck of the head.
        norm_last_layer: freeze the weight-norm gain of the prototype layer.
        student_temp: student temperature.
        center_momentum: center momentum.
    """

    card_summary = "DINO self-distillation with an EMA teacher (teacher exported)"

    export_prefix = "teacher.backbone.model."

    def __init__(self, backbone: nn.Module, *, out_dim: int = 4096, hidden_dim: int = 512,
                 bottleneck_dim: int = 256, norm_last_layer: bool = True, student_temp: float = 0.1,
                 center_momentum: float = 0.9) -> None:
        super().__init__()
        head = DINOHead(backbone.num_features, out_dim=out_dim, hidden_dim=hidden_dim,
                        bottleneck_dim=bottleneck_dim, norm_last_layer=norm_last_layer)
        self.student = nn.ModuleDict({"backbone": backbone, "head": head})
        self.teacher = build_ema_teacher(self.student)
        self.loss_fn = DINOLoss(out_dim, student_temp=student_temp, center_momentum=center_momentum)

    def _embed(self, net: nn.ModuleDict, views: list[torch.Tensor]) -> torch.Tensor:
        """Views of one resolution in a single pass: [(B, C, H, W)] * V -> (V, B, K)."""
        out = net["head"](net["backbone"](torch.cat(views)))
        return out.view(len(views), views[0].shape[0], -1)

    def forward(self, batch: dict, state: StepState) -> StepOutput:
        """Args:
            batch: ``global`` [(B,C,H,W)] * Vg (Vg >= 2), ``local`` [(B,C,h,w)] * N.
            state: the step; ``state["teacher_temp"]`` is the scheduled teacher temperature.
        """
        teacher_temp = state["teacher_temp"]
        globals_, locals_ = batch["global"], batch["local"]
        if len(globals_) < 2 and not locals_:
            raise ValueError("DINO needs two global views, or one global view and local crops")
        with torch.no_grad():
            teacher_out = self._embed(self.teacher, globals_)
        student_out = self._embed(self.student, globals_)
        if locals_:
            student_out = torch.cat([student_out, self._embed(self.student, locals_)])
        loss = self.loss_fn(teacher_out, student_out, teacher_temp=teacher_temp, skip_same_view=True)
        logs = {"loss": loss.detach(),
                "teacher_entropy": self.loss_fn.entropy(teacher_out, teacher_temp=teacher_temp).detach()}
        self.loss_fn.update(teacher_out)
        return StepOutput(loss=loss, logs=logs)

    @torch.no_grad()
    def health_signals(self, batch: dict, state: StepState) -> dict[str, float]:
        """The teacher's prototype entropies on the clean monitor images."""
        logits = self.teacher["head"](self.teacher["backbone"](batch["monitor_input"]))
        return prototype_health(self.loss_fn, logits, state["teacher_temp"])

    def last_layer_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.student["head"].last_layer.parameters() if p.requires_grad]
