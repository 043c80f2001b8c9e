"""RaSD's prototype disentanglement loss [0]: region prototypes pull their pixels and push each other.

For dense features f (B, C, *S) and a label map with K labels (one-hot Y_k):

- region prototypes ``P_k = sum_x f(x) Y_k(x) / max(sum_x Y_k(x), eps)`` (B, K, C), per sample;
  a label absent from a sample has no prototype: it is dropped from both terms below;
- segmentation (pull): logits ``l_k(x) = <P_k, f(x)> / t``, softmax over the present k,
  cross-entropy with the label of x;
- separation (push): ``G = P P^T / t`` (B, K, K); for every present column j a softmax over the
  present rows i, cross-entropy against the identity (row j is the target);
- total ``L = L_seg + L_proto`` (weight 1 each, as the reference).

Normalisation (``reduction``). The reference computes ``-mean(Y * log p)`` over ALL elements,
classes included: with every class present that is the usual cross-entropy divided by K, for both
terms. ``"mean"`` (default) uses the usual cross-entropy: the mean over pixels of
``-log p(label)`` and the mean over present prototypes of ``-log p(j | column j)``. Both terms then keep
one scale whatever K is and however many labels a sample lacks, and their ratio is the reference's
(both are divided by the same K there), so only the overall scale differs, which AdamW ignores up to
its epsilon. ``"elementwise_mean"`` reproduces the reference's scale: the same sums divided by
B·K·N and B·K·K. The reference also adds 1e-6 inside the log of the softmax; we use ``log_softmax``.

[0] Wei et al., RaSD, arXiv 2602.12317; code: github.com/yweibs/RaSD (``train_RaSD.py``, ``train_2D.py``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PrototypeDisentanglementLoss", "region_prototypes"]

_REDUCTIONS = ("mean", "elementwise_mean")


def region_prototypes(features: Tensor, onehot: Tensor, *, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Masked-average feature of every label region, per sample.

    Args:
        features: (B, C, N) features of N pixels/voxels.
        onehot: (B, K, N) one-hot labels (float).
        eps: Floor of the region size; only an absent label (size 0) ever hits it, giving P_k = 0.

    Returns:
        ``prototypes`` (B, K, C) and ``present`` (B, K) bool, whether label k occurs in the sample.
    """
    counts = onehot.sum(dim=-1)
    prototypes = torch.einsum("bkn,bcn->bkc", onehot, features) / counts.clamp_min(eps).unsqueeze(-1)
    return prototypes, counts > 0


class PrototypeDisentanglementLoss(nn.Module):
    """``L = L_seg + L_proto`` of RaSD [0] (see the module docstring for the maths and normalisation).

    Args:
        temp: Temperature t of both softmaxes (RaSD: 0.07).
        eps: Floor of a region's pixel count (absent labels only).
        reduction: ``"mean"`` (usual cross-entropy, the default) or ``"elementwise_mean"`` (the
            reference's mean over classes x pixels, i.e. ``"mean"`` / K when all K labels are present).
    """

    def __init__(self, *, temp: float = 0.07, eps: float = 1e-6, reduction: str = "mean") -> None:
        super().__init__()
        if temp <= 0:
            raise ValueError(f"temp must be positive, got {temp}")
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.temp, self.eps, self.reduction = temp, eps, reduction

    def terms(self, features: Tensor, labels: Tensor, *, num_labels: int | None = None) -> dict[str, Tensor]:
        """Both terms, unweighted.

        Args:
            features: Dense features (B, C, *S), un-normalised; computed in float32.
            labels: Integer label map (B, 1, *S) or (B, *S) with values in [0, K).
            num_labels: K; ``None`` takes ``labels.max() + 1`` (the same loss: absent labels drop out,
                except for the ``"elementwise_mean"`` scale).

        Returns:
            ``{"seg": scalar, "proto": scalar}``.
        """
        b, c = features.shape[:2]
        f = features.float().reshape(b, c, -1)  # (B, C, N)
        y = labels.reshape(b, -1).long()  # (B, N)
        if y.shape[1] != f.shape[2]:
            raise ValueError(f"labels {tuple(labels.shape)} do not match features {tuple(features.shape)}")
        k = int(y.max()) + 1 if num_labels is None else num_labels
        onehot = F.one_hot(y, k).transpose(1, 2).to(f.dtype)  # (B, K, N); raises if a label >= K
        prototypes, present = region_prototypes(f, onehot, eps=self.eps)
        n = f.shape[2]

        logits = torch.einsum("bkc,bcn->bkn", prototypes, f) / self.temp
        logits = logits.masked_fill(~present.unsqueeze(-1), float("-inf"))
        # gather, not Y * log p: the absent labels' -inf log-probabilities never meet a zero
        pixel_ce = -logits.log_softmax(dim=1).gather(1, y.unsqueeze(1)).squeeze(1)  # (B, N)

        gram = prototypes @ prototypes.transpose(1, 2) / self.temp  # (B, K, K), G[i, j] = <P_i, P_j> / t
        gram = gram.masked_fill(~present.unsqueeze(-1), float("-inf"))  # absent rows i
        column_ce = -gram.log_softmax(dim=1).diagonal(dim1=1, dim2=2)[present]  # present columns j

        if self.reduction == "mean":
            return {"seg": pixel_ce.mean(), "proto": column_ce.mean()}
        return {"seg": pixel_ce.sum() / (b * k * n), "proto": column_ce.sum() / (b * k * k)}

    def forward(self, features: Tensor, labels: Tensor, *, num_labels: int | None = None) -> Tensor:
        """``L_seg + L_proto`` (see ``terms`` for the arguments); a scalar."""
        terms = self.terms(features, labels, num_labels=num_labels)
        return terms["seg"] + terms["proto"]
