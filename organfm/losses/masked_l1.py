"""L1 reconstruction on masked voxels only (SimMIM [0], as in Triad's ``simmim_advanced.py``).

[0] Xie et al., "SimMIM: A Simple Framework for Masked Image Modeling", CVPR 2022.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["MaskedL1Loss"]


class MaskedL1Loss(nn.Module):
    """``Σ |x - x̂| · m / (Σ m + eps) / C``: the mean absolute error over hidden voxels and channels.

    Visible voxels contribute nothing and get no gradient; the loss is exactly zero when the
    prediction equals the input on every masked voxel.

    Args:
        eps: keeps an all-visible mask finite (the reference's 1e-5).
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Args:
            pred: (B, C, *S) reconstruction.
            target: (B, C, *S) input.
            mask: (B, 1, *S) or (B, *S), 1 on hidden voxels (broadcast over channels).

        Returns:
            Scalar loss.
        """
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        m = (mask if mask.dim() == pred.dim() else mask.unsqueeze(1)).to(pred.dtype)
        if m.shape[0] != pred.shape[0] or m.shape[2:] != pred.shape[2:]:
            raise ValueError(f"mask {tuple(mask.shape)} does not fit prediction {tuple(pred.shape)}")
        error = (pred - target).abs() * m
        # Σm counts voxels once; dividing by C makes it a per-channel mean as in the reference
        return error.sum() / (m.sum() + self.eps) / pred.shape[1]
