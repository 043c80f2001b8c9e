"""Supervised contrastive loss (Khosla L_out) with Coda's negatives-only denominator option.

References:
    [0] Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020.
        https://arxiv.org/abs/2004.11362 (``SupConLoss`` in HobbitLong/SupContrast ``losses.py``).
    [1] Hosseinzadeh Taher et al., "Learning Foundation Models from Multi-Organ Medical Images by
        Capturing Consistency and Diversity of Anatomical Structures" (Coda), Eq. 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from organfm.losses.precision import at_least_fp32

__all__ = ["SupConLoss", "supcon_multiview"]

_DENOMINATORS = ("all", "negatives")


class SupConLoss(nn.Module):
    """Supervised contrastive loss between a set of anchors and a set of contrasts [0, 1].

    Both inputs are L2-normalised inside (``F.normalize`` along E), so callers may pass raw
    head outputs. With ``s_am = a_a . c_m / temp``, for anchor ``a``:

    - positives ``P(a) = {m : y_m = y_a and not self_mask[a, m]}``;
    - ``denominator="all"`` (Khosla's L_out [0]): ``D(a) = {m : not self_mask[a, m]}``,
      positives included;
    - ``denominator="negatives"`` (Coda Eq. 1 [1]): ``D(a) = {m : y_m != y_a}``, the positive
      itself is NOT in the denominator;
    - ``loss_a = -(temp / base_temp) * mean_{p in P(a)} [s_ap - log sum_{m in D(a)} exp(s_am)]``.

    The result is the mean of ``loss_a`` over valid anchors. Anchors with no positive (and, in
    ``"negatives"`` mode, with no negative) are dropped on purpose, so the loss is never NaN;
    if no anchor is valid a zero that still carries the graph is returned.

    Typical uses:

    - Coda's inter-organ branch: anchors are student view-1 embeddings ``(B, E)``, contrasts
      are teacher view-2 embeddings ``(B, E)`` (detached by the caller), the same labels for
      both and ``self_mask=None`` (``m = a`` is the other view of the same image, a positive).
    - Khosla's multi-view batch: see :func:`supcon_multiview`.

    Args:
        temp: Softmax temperature.
        base_temp: Reference temperature; the loss is scaled by ``temp / base_temp``.
        denominator: ``"all"`` or ``"negatives"``.

    Examples:
        >>> loss_fn = SupConLoss(denominator="negatives")
        >>> labels = torch.tensor([0, 0, 1, 1])
        >>> loss = loss_fn(torch.randn(4, 8), torch.randn(4, 8), labels, labels)
        >>> loss.shape
        torch.Size([])
    """

    def __init__(
        self, *, temp: float = 0.07, base_temp: float = 0.07, denominator: str = "all"
    ) -> None:
        super().__init__()
        if temp <= 0 or base_temp <= 0:
            raise ValueError(f"temp and base_temp must be > 0, got {temp}, {base_temp}")
        if denominator not in _DENOMINATORS:
            raise ValueError(
                f"unknown denominator {denominator!r}; valid: {', '.join(_DENOMINATORS)}"
            )
        self.temp = temp
        self.base_temp = base_temp
        self.denominator = denominator

    def forward(
        self,
        anchors: Tensor,
        contrasts: Tensor,
        anchor_labels: Tensor,
        contrast_labels: Tensor,
        *,
        self_mask: Tensor | None = None,
    ) -> Tensor:
        """Mean supervised contrastive loss over valid anchors.

        Args:
            anchors: Anchor embeddings of shape ``(A, E)``; normalised inside.
            contrasts: Contrast embeddings of shape ``(M, E)``; normalised inside. Detach them
                before the call if no gradient should reach them (e.g. teacher outputs).
            anchor_labels: Integer labels of shape ``(A,)``.
            contrast_labels: Integer labels of shape ``(M,)``.
            self_mask: Optional bool mask of shape ``(A, M)``; ``True`` marks a contrast that is
                the anchor itself and is excluded from positives and denominator.

        Returns:
            Scalar loss.

        Raises:
            ValueError: If the shapes disagree.
        """
        num_anchors, num_contrasts = self._check_shapes(
            anchors, contrasts, anchor_labels, contrast_labels, self_mask
        )
        # Cosine logits in float32 even under autocast: with temp = 0.07 they reach ~14, where
        # half precision rounds to ~0.01.
        with torch.autocast(device_type=anchors.device.type, enabled=False):
            anchors = F.normalize(at_least_fp32(anchors), dim=1)
            contrasts = F.normalize(at_least_fp32(contrasts), dim=1)
            logits = anchors @ contrasts.T / self.temp
            # Subtracting the (detached) row max cancels in log_prob and keeps exp() finite.
            logits = logits - logits.max(dim=1, keepdim=True).values.detach()

            same_label = anchor_labels.view(-1, 1) == contrast_labels.view(1, -1)
            if self_mask is None:
                not_self = torch.ones(
                    num_anchors, num_contrasts, dtype=torch.bool, device=logits.device
                )
            else:
                not_self = ~self_mask.to(torch.bool)
            positives = same_label & not_self
            if self.denominator == "all":
                in_denominator = not_self
            else:
                in_denominator = ~same_label & not_self

            # Drop anchors whose positive or denominator set is empty BEFORE the logsumexp:
            # an empty logsumexp is -inf and its backward is NaN even if the row is masked later.
            valid = positives.any(dim=1) & in_denominator.any(dim=1)
            if not bool(valid.any()):
                return logits.sum() * 0.0
            logits, positives, in_denominator = (
                logits[valid],
                positives[valid],
                in_denominator[valid],
            )

            log_denominator = torch.logsumexp(
                logits.masked_fill(~in_denominator, float("-inf")), dim=1, keepdim=True
            )
            log_prob = logits - log_denominator
            mean_log_prob_pos = (log_prob * positives).sum(dim=1) / positives.sum(dim=1)
            return -(self.temp / self.base_temp) * mean_log_prob_pos.mean()

    @staticmethod
    def _check_shapes(
        anchors: Tensor,
        contrasts: Tensor,
        anchor_labels: Tensor,
        contrast_labels: Tensor,
        self_mask: Tensor | None,
    ) -> tuple[int, int]:
        if anchors.ndim != 2 or contrasts.ndim != 2 or anchors.shape[1] != contrasts.shape[1]:
            raise ValueError(
                f"anchors (A, E) and contrasts (M, E) must share E, got {tuple(anchors.shape)} "
                f"and {tuple(contrasts.shape)}"
            )
        num_anchors, num_contrasts = anchors.shape[0], contrasts.shape[0]
        if anchor_labels.shape != (num_anchors,) or contrast_labels.shape != (num_contrasts,):
            raise ValueError(
                f"labels must have shapes ({num_anchors},) and ({num_contrasts},), got "
                f"{tuple(anchor_labels.shape)} and {tuple(contrast_labels.shape)}"
            )
        if self_mask is not None and self_mask.shape != (num_anchors, num_contrasts):
            raise ValueError(
                f"self_mask must have shape ({num_anchors}, {num_contrasts}), "
                f"got {tuple(self_mask.shape)}"
            )
        return num_anchors, num_contrasts

    def extra_repr(self) -> str:
        return f"temp={self.temp}, base_temp={self.base_temp}, denominator={self.denominator!r}"


def supcon_multiview(loss: SupConLoss, features: Tensor, labels: Tensor) -> Tensor:
    """Khosla's multi-view SupCon: every view of every sample is an anchor and a contrast [0].

    The V views are stacked view-major to ``(V*B, E)`` (as ``torch.cat(features.unbind(1))`` in
    the reference code), labels are tiled, and each feature is excluded from its own positives
    and denominator. With ``V = 2``, unique labels and ``temp == base_temp`` this is SimCLR's
    NT-Xent.

    Args:
        loss: The configured :class:`SupConLoss`.
        features: Embeddings of shape ``(B, V, E)`` (normalised inside the loss).
        labels: Integer labels of shape ``(B,)``.

    Returns:
        Scalar loss.
    """
    if features.ndim != 3:
        raise ValueError(f"features must have shape (B, V, E), got {tuple(features.shape)}")
    batch_size, num_views, _ = features.shape
    stacked = torch.cat(features.unbind(dim=1), dim=0)
    tiled_labels = labels.repeat(num_views)
    self_mask = torch.eye(num_views * batch_size, dtype=torch.bool, device=features.device)
    return loss(stacked, stacked, tiled_labels, tiled_labels, self_mask=self_mask)
