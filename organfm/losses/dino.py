"""DINO self-distillation loss with teacher centering and sharpening.

Reference:
    [0] Caron et al., "Emerging Properties in Self-Supervised Vision Transformers" (DINO),
        ICCV 2021. https://arxiv.org/abs/2104.14294
        (``DINOLoss`` in facebookresearch/dino ``main_dino.py``).
    [1] Hosseinzadeh Taher et al., "Learning Foundation Models from Multi-Organ Medical Images by
        Capturing Consistency and Diversity of Anatomical Structures" (Coda), Eq. 2 (intra-organ
        branch: one teacher view against 12 student crops).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from organfm.losses.precision import at_least_fp32

__all__ = ["DINOLoss"]


class DINOLoss(nn.Module):
    """Cross-entropy between a centred, sharpened teacher and the student over view pairs [0].

    For teacher view ``i`` and student view ``j`` the term is::

        CE_ij = mean_b sum_k -q[i, b, k] * log p[j, b, k]
        q = softmax((teacher_out - center) / teacher_temp)     (no gradient)
        p = softmax(student_out / student_temp)

    and the loss is the mean of ``CE_ij`` over the pairs used. With ``skip_same_view=True``
    (DINO) student views ``0 .. Vt-1`` are assumed to be the same crops as the teacher views
    and the pairs ``i == j`` are skipped. Coda's intra-organ branch [1] calls it with one
    teacher view and 12 local crops and ``skip_same_view=False``, which is exactly the
    paper's Eq. 2 read as a positive cross-entropy.

    The center is a buffer (it moves with ``.to()`` and is saved in ``state_dict``). It is
    changed only by :meth:`update`, which the method calls after computing the loss; ``forward``
    never changes it. The teacher temperature is passed per call because it follows a
    schedule owned by the engine.

    Args:
        out_dim: Number of prototypes K.
        student_temp: Student softmax temperature.
        center_momentum: EMA momentum ``m`` of the center update.

    Examples:
        >>> loss_fn = DINOLoss(16)
        >>> teacher_out, student_out = torch.randn(2, 4, 16), torch.randn(10, 4, 16)
        >>> loss = loss_fn(teacher_out, student_out, teacher_temp=0.04)
        >>> loss_fn.update(teacher_out)
        >>> loss.shape
        torch.Size([])
    """

    center: Tensor

    def __init__(
        self, out_dim: int, *, student_temp: float = 0.1, center_momentum: float = 0.9
    ) -> None:
        super().__init__()
        if student_temp <= 0:
            raise ValueError(f"student_temp must be > 0, got {student_temp}")
        if not 0.0 <= center_momentum <= 1.0:
            raise ValueError(f"center_momentum must be in [0, 1], got {center_momentum}")
        self.out_dim = out_dim
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(
        self,
        teacher_out: Tensor,
        student_out: Tensor,
        *,
        teacher_temp: float,
        skip_same_view: bool = True,
    ) -> Tensor:
        """Average cross-entropy over (teacher view, student view) pairs.

        Args:
            teacher_out: Teacher logits of shape ``(Vt, B, K)``; no gradient flows into it.
            student_out: Student logits of shape ``(Vs, B, K)``. With ``skip_same_view``, views
                ``0 .. Vt-1`` must be the same crops as the teacher views (global before local).
            teacher_temp: Teacher softmax temperature for this step.
            skip_same_view: Skip the pairs ``i == j``.

        Returns:
            Scalar loss: the batch mean of ``sum_k -q log p``, averaged over the pairs used.

        Raises:
            ValueError: If the shapes disagree or no (teacher, student) pair remains.
        """
        self._check_shape(teacher_out, "teacher_out")
        self._check_shape(student_out, "student_out")
        if teacher_out.shape[1] != student_out.shape[1]:
            raise ValueError(
                f"batch sizes differ: teacher_out {tuple(teacher_out.shape)}, "
                f"student_out {tuple(student_out.shape)}"
            )
        if teacher_temp <= 0:
            raise ValueError(f"teacher_temp must be > 0, got {teacher_temp}")
        num_teacher_views, batch_size, _ = teacher_out.shape
        num_student_views = student_out.shape[0]

        pair_mask = torch.ones(
            num_teacher_views, num_student_views, dtype=torch.bool, device=student_out.device
        )
        if skip_same_view:
            pair_mask.fill_diagonal_(False)
        num_pairs = int(pair_mask.sum())
        if num_pairs == 0:
            raise ValueError(
                f"no (teacher, student) view pair left: {num_teacher_views} teacher view(s), "
                f"{num_student_views} student view(s), skip_same_view={skip_same_view}"
            )

        # Softmax over K = 65536 and the sum over K are done in float32 even under autocast:
        # in half precision the loss (about log K) loses ~2 significant digits.
        with torch.autocast(device_type=student_out.device.type, enabled=False):
            student_log_probs = F.log_softmax(
                at_least_fp32(student_out) / self.student_temp, dim=-1
            )
            # The teacher may run in another precision (no-grad autocast); einsum needs one dtype.
            teacher_probs = self._teacher_probs(teacher_out, teacher_temp).to(
                student_log_probs.dtype
            )
            # pair_ce[i, j] = sum_b sum_k -q[i,b,k] log p[j,b,k]: all pairs in one contraction.
            pair_ce = -torch.einsum("tbk,sbk->ts", teacher_probs, student_log_probs)
            return (pair_ce * pair_mask).sum() / (num_pairs * batch_size)

    @torch.no_grad()
    def update(self, teacher_out: Tensor) -> None:
        """EMA update of the center: ``center <- m * center + (1 - m) * mean(teacher_out)``.

        The mean is over views and batch. Under ``torch.distributed`` the per-rank means are
        summed and divided by the world size (DINO's all-reduce), so every rank keeps the same
        center. Call it after the loss, once per step.

        Args:
            teacher_out: Teacher logits of shape ``(Vt, B, K)``.
        """
        self._check_shape(teacher_out, "teacher_out")
        batch_center = at_least_fp32(teacher_out.detach()).mean(dim=(0, 1)).unsqueeze(0)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_center)
            batch_center /= dist.get_world_size()
        m = self.center_momentum
        self.center.mul_(m).add_(batch_center.to(self.center.dtype), alpha=1.0 - m)

    @torch.no_grad()
    def entropy(self, teacher_out: Tensor, teacher_temp: float) -> Tensor:
        """Mean entropy (nats) of the centred, sharpened teacher distribution.

        A collapse diagnostic: entropy near 0 means one prototype dominates (sharpening wins),
        near ``log K`` means uniform outputs (centering wins).

        Args:
            teacher_out: Teacher logits of shape ``(Vt, B, K)``.
            teacher_temp: Teacher softmax temperature for this step.

        Returns:
            Scalar: entropy averaged over views and batch.
        """
        self._check_shape(teacher_out, "teacher_out")
        log_probs = F.log_softmax(
            (at_least_fp32(teacher_out) - self.center) / teacher_temp, dim=-1
        )
        return -(log_probs.exp() * log_probs).sum(dim=-1).mean()

    @torch.no_grad()
    def batch_entropy(self, teacher_out: Tensor, teacher_temp: float) -> Tensor:
        """Entropy (nats) of the batch-mean centred, sharpened teacher distribution.

        With :meth:`entropy` it tells uniform outputs (both near ``log K``) from one-prototype collapse
        (both near 0) from learning (per-sample entropy well below ``log K`` while this stays high).

        Args:
            teacher_out: Teacher logits of shape ``(Vt, B, K)``.
            teacher_temp: Teacher softmax temperature.

        Returns:
            Scalar: the entropy of ``mean_{v,b} q[v, b]``.
        """
        p = self._teacher_probs(teacher_out, teacher_temp).mean(dim=(0, 1))
        return -(p * p.clamp(min=1e-30).log()).sum()

    def _teacher_probs(self, teacher_out: Tensor, teacher_temp: float) -> Tensor:
        """Centred, sharpened teacher distribution ``(Vt, B, K)``; detached, it is a target."""
        centred = at_least_fp32(teacher_out.detach()) - self.center
        return F.softmax(centred / teacher_temp, dim=-1)

    def _check_shape(self, x: Tensor, name: str) -> None:
        if x.ndim != 3 or x.shape[-1] != self.out_dim:
            raise ValueError(f"{name} must have shape (V, B, {self.out_dim}), got {tuple(x.shape)}")

    def extra_repr(self) -> str:
        return (
            f"out_dim={self.out_dim}, student_temp={self.student_temp}, "
            f"center_momentum={self.center_momentum}"
        )
