"""Cross-entropy + soft Dice, the segmentation fine-tuning objective (nnU-Net's Dice + CE [0]).

[0] Isensee et al. nnU-Net. Nature Methods 2021.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["dice_ce_loss"]


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, *, smooth: float = 1.0) -> torch.Tensor:
    """Cross-entropy + (1 - soft Dice), Dice averaged over the foreground classes, pooled over the batch.

    Args:
        logits: (B, K, [D], H, W).
        target: (B, [D], H, W) int64 in 0..K-1.
        smooth: added to numerator and denominator, so a class absent from the batch and not predicted
            scores ~1 instead of 0/0.

    Returns:
        scalar loss.
    """
    num_classes = logits.shape[1]
    probs = logits.float().softmax(1)
    onehot = F.one_hot(target, num_classes).movedim(-1, 1).to(probs.dtype)
    dims = (0, *range(2, logits.ndim))
    inter = (probs * onehot).sum(dims)
    sizes = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + smooth) / (sizes + smooth)
    return F.cross_entropy(logits.float(), target) + (1 - dice[1:].mean() if num_classes > 1 else 0.0)
