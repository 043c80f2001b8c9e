"""Label-free and label-based measurements of a representation, each a plain function of tensors.

The verdict (``organfm.monitor.verdict``) reads them; methods call the family helpers (alignment,
uniformity) in their ``health_signals``.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F

__all__ = ["alignment", "embedding_std", "knn_accuracy", "relative_distance", "uniformity", "rankme"]


def embedding_std(z: torch.Tensor) -> float:
    """Mean over dimensions of the std over samples of the L2-normalised embeddings.

    A collapsed representation (every sample mapped to one point) gives 0; embeddings spread evenly over
    the sphere give about ``1/sqrt(d)`` (SimSiam's collapse monitor).

    Args:
        z: (N, D) embeddings, N >= 2.
    """
    return float(F.normalize(z.float(), dim=1).std(dim=0).mean())


def rankme(z: torch.Tensor, eps: float = 1e-7) -> float:
    """Effective rank of the embeddings (RankMe, Garrido et al. 2023): exp of the entropy of the normalised
    singular values of the (N, D) matrix; between 1 (rank one) and min(N, D).

    Args:
        z: (N, D) embeddings.
        eps: floor added to the normalised singular values, as in the paper.
    """
    s = torch.linalg.svdvals(z.double())
    p = s / s.sum().clamp(min=1e-300) + eps
    return float(torch.exp(-(p * p.log()).sum()))


def relative_distance(current: Iterable[torch.Tensor], initial: Iterable[torch.Tensor]) -> float:
    """``||θ - θ0|| / ||θ0||`` over all given tensors together (0 for a network still at its initial weights).

    Args:
        current: the parameters now.
        initial: the same parameters at step 0, in the same order.
    """
    num = den = 0.0
    pairs = list(zip(current, initial, strict=True))
    for now, start in pairs:
        now, start = now.detach().double().cpu(), start.detach().double().cpu()
        num += float(((now - start) ** 2).sum())
        den += float((start ** 2).sum())
    return math.sqrt(num) / max(math.sqrt(den), 1e-300)


def knn_accuracy(z: torch.Tensor, labels: torch.Tensor, k: int = 20) -> float:
    """Leave-one-out cosine k-NN accuracy (majority vote; a tie goes to the tied class with the nearest neighbour).

    Args:
        z: (N, D) embeddings.
        labels: (N,) int64 class ids (>= 0).
        k: neighbours (clamped to N - 1).

    Returns:
        The fraction of samples whose neighbours' majority class is their own.
    """
    n = z.shape[0]
    if n < 2:
        raise ValueError(f"a kNN accuracy needs at least 2 samples, got {n}")
    k = max(1, min(k, n - 1))
    zn = F.normalize(z.float(), dim=1)
    sim = zn @ zn.T
    sim.fill_diagonal_(-float("inf"))  # leave the sample itself out
    order = sim.topk(k, dim=1).indices  # (N, k), nearest first
    neighbour_labels = labels[order]
    num_classes = int(labels.max()) + 1
    votes = F.one_hot(neighbour_labels, num_classes).sum(1)  # (N, C) int
    # a tie goes to the tied class whose nearest neighbour is nearest: rank of each class's first neighbour
    ranks = torch.arange(k).expand(n, k)
    first = torch.full((n, num_classes), k, dtype=torch.long).scatter_reduce(1, neighbour_labels, ranks, "amin")
    pred = (votes * (k + 1) - first).argmax(1)  # exact integers: more votes first, then the nearer class
    return float((pred == labels).float().mean())


def alignment(z1: torch.Tensor, z2: torch.Tensor, alpha: float = 2.0) -> float:
    """Alignment of positive pairs (Wang & Isola 2020): ``E ||f(x) - f(x+)||^alpha`` on the unit sphere.

    0 when both views of every pair map to one point; 4 at most (antipodal). Lower is better aligned.

    Args:
        z1: (N, D) embeddings of one view.
        z2: (N, D) embeddings of its positive (row i pairs with row i).
    """
    a, b = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    return float((a - b).norm(dim=1).pow(alpha).mean())


def uniformity(z: torch.Tensor, t: float = 2.0) -> float:
    """Uniformity (Wang & Isola 2020): ``log E exp(-t ||f(x) - f(y)||^2)`` over distinct pairs.

    0 for a collapsed representation (every pair at distance 0); more negative is more uniform
    (about -3.9 for many points spread evenly on a high-dimensional sphere at t = 2).

    Args:
        z: (N, D) embeddings, N >= 2.
    """
    zn = F.normalize(z.float(), dim=1)
    sq = torch.pdist(zn).pow(2)
    return float(torch.logsumexp(-t * sq, dim=0) - math.log(sq.numel()))
