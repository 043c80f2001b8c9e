"""iBOT's masked-token self-distillation term, with its own (patch) center.

Reference:
    [0] Zhou et al., "iBOT: Image BERT Pre-Training with Online Tokenizer", ICLR 2022
        (bytedance/ibot ``main_ibot.py``, ``iBOTLoss``: the patch term and ``center2``).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MaskedTokenLoss"]


class MaskedTokenLoss(nn.Module):
    """Cross-entropy between the teacher's token distributions and the student's at masked positions [0].

    For image b with mask M_b::

        loss_b = sum_{t in M_b} sum_k -q[b,t,k] log p[b,t,k] / max(1, |M_b|)
        q = softmax((teacher_out - center) / teacher_temp)    (no gradient; the teacher saw the token)
        p = softmax(student_out / student_temp)                 (the student saw [MASK] there)

    and the loss is the mean of ``loss_b`` over the batch (images with an empty mask count as 0, as in
    iBOT). The center is a buffer changed only by :meth:`update`: the mean teacher token over each
    image's valid tokens, then over the batch.

    Args:
        out_dim: prototypes K.
        student_temp: student softmax temperature.
        center_momentum: EMA momentum of the center.
    """

    center: Tensor

    def __init__(self, out_dim: int, *, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        if student_temp <= 0:
            raise ValueError(f"student_temp must be > 0, got {student_temp}")
        if not 0.0 <= center_momentum <= 1.0:
            raise ValueError(f"center_momentum must be in [0, 1], got {center_momentum}")
        self.out_dim, self.student_temp, self.center_momentum = out_dim, student_temp, center_momentum
        self.register_buffer("center", torch.zeros(1, 1, out_dim))

    def forward(self, teacher_out: Tensor, student_out: Tensor, mask: Tensor, *, teacher_temp: float) -> Tensor:
        """Args:
            teacher_out: (B, N, K) teacher logits of the unmasked tokens.
            student_out: (B, N, K) student logits.
            mask: (B, N) bool, the tokens the student saw as [MASK].
            teacher_temp: this step's teacher temperature.

        Returns:
            Scalar loss.
        """
        if teacher_out.shape != student_out.shape or teacher_out.dim() != 3 or teacher_out.shape[-1] != self.out_dim:
            raise ValueError(f"teacher_out and student_out must both be (B, N, {self.out_dim}), got "
                             f"{tuple(teacher_out.shape)} and {tuple(student_out.shape)}")
        if mask.shape != teacher_out.shape[:2]:
            raise ValueError(f"mask must be (B, N) = {tuple(teacher_out.shape[:2])}, got {tuple(mask.shape)}")
        if teacher_temp <= 0:
            raise ValueError(f"teacher_temp must be > 0, got {teacher_temp}")
        q = F.softmax((teacher_out.detach().float() - self.center) / teacher_temp, dim=-1)
        ce = -(q * F.log_softmax(student_out.float() / self.student_temp, dim=-1)).sum(-1)  # (B, N)
        m = mask.to(ce.dtype)
        return ((ce * m).sum(-1) / m.sum(-1).clamp(min=1.0)).mean()

    @torch.no_grad()
    def update(self, teacher_out: Tensor, valid: Tensor) -> None:
        """center <- m * center + (1 - m) * mean over images of the mean teacher logit over valid tokens.

        Args:
            teacher_out: (B, N, K) teacher logits.
            valid: (B, N) bool tokens that exist (a missing organ's tokens do not move the center).
        """
        v = valid.to(torch.float32)[..., None]
        per_image = (teacher_out.float() * v).sum(1) / v.sum(1).clamp(min=1.0)  # (B, K)
        batch_center = per_image.mean(0).view(1, 1, -1)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_center)
            batch_center /= dist.get_world_size()
        m = self.center_momentum
        self.center.mul_(m).add_(batch_center, alpha=1.0 - m)

    def extra_repr(self) -> str:
        return f"out_dim={self.out_dim}, student_temp={self.student_temp}, center_momentum={self.center_momentum}"
