"""CLIP and multi-teacher distillation losses (MMKD-CLIP [0], after CLIP-KD [1]).

With two modalities a and b (image and text; for images alone, two views of each image) and L2-normalised
student embeddings s_a, s_b and teacher targets t_a, t_b (B, D):

- task (CLIP): ½[CE(σ·s_a·s_bᵀ, diag) + CE(σ·s_b·s_aᵀ, diag)], σ = exp(logit_scale); the method keeps
  logit_scale <= ln 100 by clamping the parameter in place after each optimizer step (``clamp_logit_scale``, as
  the reference does), never in the forward: a clamp there would zero the gradient above ln 100 and the scale
  could never come back down;
- FD: MSE(s_a, t_a) + MSE(s_b, t_b), the elementwise mean (``fd_scale="per_dim"``, the reference); for unit
  vectors that is ||s - t||²/D, so a given w_fd is D times weaker at D = 512 than at D = 1. ``fd_scale="sum"``
  sums over D (mean over the batch): ||s - t||², the same strength at any D (w_fd = 50 per_dim at D = 128 is
  w_fd = 50/128 ≈ 0.39 sum);
- ICL: ½[CE(c·s_a·t_bᵀ, diag) + CE(c·s_b·t_aᵀ, diag)], c a learnable scale used as is (not exponentiated);
- total = task + w_fd·FD + w_icl·ICL (the official recipe: w_fd = 50, w_icl = 1).

When the teacher is the student (t = s), FD is 0 and ICL is the CLIP loss at scale c.

[0] Wang et al., "Unifying Biomedical Vision-Language Expertise ... Multi-CLIP Knowledge Distillation",
    arXiv 2506.22567 (``open_clip/loss.py``: ``ClipLoss``, ``KDClipLoss``).
[1] Yang et al., "CLIP-KD: An Empirical Study of CLIP Model Distillation", arXiv 2307.12732.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FD_SCALES", "DistillLoss", "clamp_logit_scale", "clip_loss", "feature_distillation",
           "interactive_contrastive"]

FD_SCALES = ("per_dim", "sum")


@torch.no_grad()
def clamp_logit_scale(param: torch.Tensor, max_logit_scale: float) -> None:
    """Clamp a log-scale parameter to [0, ln max_logit_scale] in place (after the optimizer step)."""
    param.clamp_(0.0, math.log(max_logit_scale))


def clip_loss(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor | float,
              groups: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE: row i of ``a`` matches row i of ``b``.

    Args:
        a, b: (B, D) L2-normalised embeddings.
        scale: the logit scale (a multiplier, already exponentiated).
        groups: (B,) ids; rows with the same id are all positives of each other (the target spreads evenly
            over them, as UniCL does for repeated captions). None, or all ids distinct: plain CLIP.
    """
    logits = scale * a @ b.T  # (B, B)
    return 0.5 * (_contrastive(logits, groups) + _contrastive(logits.T, groups))  # symmetric positives


def feature_distillation(s_a: torch.Tensor, s_b: torch.Tensor, t_a: torch.Tensor, t_b: torch.Tensor,
                         scale: str = "per_dim") -> torch.Tensor:
    """MSE(s_a, t_a) + MSE(s_b, t_b), all (B, D): the elementwise mean (``per_dim``) or, ``sum``, summed over D
    and averaged over B (D times the ``per_dim`` value)."""
    if scale not in FD_SCALES:
        raise ValueError(f"fd_scale must be one of {', '.join(FD_SCALES)}, got {scale!r}")
    if scale == "sum":
        return (s_a - t_a).pow(2).sum(-1).mean() + (s_b - t_b).pow(2).sum(-1).mean()
    return F.mse_loss(s_a, t_a) + F.mse_loss(s_b, t_b)


def interactive_contrastive(s_a: torch.Tensor, s_b: torch.Tensor, t_a: torch.Tensor, t_b: torch.Tensor,
                            scale: torch.Tensor | float, groups: torch.Tensor | None = None) -> torch.Tensor:
    """ICL: ½[CE(c·s_a·t_bᵀ, P) + CE(c·s_b·t_aᵀ, P)]; each student modality against the teacher's other.

    ``groups`` as in :func:`clip_loss` (P = the diagonal when None).
    """
    return 0.5 * (_contrastive(scale * s_a @ t_b.T, groups) + _contrastive(scale * s_b @ t_a.T, groups))


def _contrastive(logits: torch.Tensor, groups: torch.Tensor | None) -> torch.Tensor:
    """CE of (B, B) logits against the diagonal, or spread evenly over rows of the same group."""
    if groups is None:
        return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))
    same = (groups[:, None] == groups[None, :]).to(logits.dtype)
    return F.cross_entropy(logits, same / same.sum(1, keepdim=True))


class DistillLoss(nn.Module):
    """task + w_fd·FD + w_icl·ICL over normalised embeddings; the scales come in as tensors (model parameters).

    Args:
        fd_weight: w_fd (MMKD-CLIP's ``kdweight`` = 50).
        icl_weight: w_icl.
        task_weight: weight of the CLIP task term.
        max_logit_scale: the bound of σ (CLIP: 100, i.e. logit_scale <= ln 100); the method applies it to the
            parameter after each step (:func:`clamp_logit_scale`).
        fd_scale: ``per_dim`` (elementwise mean, the reference) or ``sum`` (over D); :func:`feature_distillation`.
    """

    def __init__(self, *, fd_weight: float = 50.0, icl_weight: float = 1.0, task_weight: float = 1.0,
                 max_logit_scale: float = 100.0, fd_scale: str = "per_dim") -> None:
        super().__init__()
        if fd_scale not in FD_SCALES:
            raise ValueError(f"method.fd_scale must be one of {', '.join(FD_SCALES)}, got {fd_scale!r}")
        self.fd_weight, self.icl_weight, self.task_weight = fd_weight, icl_weight, task_weight
        self.max_logit_scale, self.fd_scale = max_logit_scale, fd_scale
        self.max_log_scale = math.log(max_logit_scale)

    def terms(self, s_a: torch.Tensor, s_b: torch.Tensor, t_a: torch.Tensor, t_b: torch.Tensor,
              logit_scale: torch.Tensor, icl_scale: torch.Tensor,
              groups: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Every term and the total.

        Args:
            s_a, s_b: (B, D) normalised student embeddings of the two modalities (or views).
            t_a, t_b: (B, D) normalised teacher targets of the same items.
            logit_scale: log σ of the task term (learnable; used as is, the method clamps the parameter).
            icl_scale: c of the ICL term (learnable; used as is).
            groups: (B,) ids of items that are positives of each other (identical texts), or None.

        Returns:
            ``{"loss", "task", "fd", "icl"}`` scalars (``loss`` carries the gradient).
        """
        task = clip_loss(s_a, s_b, logit_scale.exp(), groups)
        fd = feature_distillation(s_a, s_b, t_a, t_b, self.fd_scale)
        icl = interactive_contrastive(s_a, s_b, t_a, t_b, icl_scale, groups)
        loss = self.task_weight * task + self.fd_weight * fd + self.icl_weight * icl
        return {"loss": loss, "task": task, "fd": fd, "icl": icl}

    def forward(self, s_a: torch.Tensor, s_b: torch.Tensor, t_a: torch.Tensor, t_b: torch.Tensor,
                logit_scale: torch.Tensor, icl_scale: torch.Tensor) -> torch.Tensor:
        """The total loss (scalar); see :meth:`terms`."""
        return self.terms(s_a, s_b, t_a, t_b, logit_scale, icl_scale)["loss"]
