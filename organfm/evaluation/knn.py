"""Weighted k-nearest-neighbour classification on frozen features (DINO's protocol [0]).

Cosine similarity; the k nearest training features vote for their class with weight
``exp(sim / T)`` (T = 0.07); the normalised votes are the class probabilities (for AUC), their
argmax the prediction. Similarities are computed block by block (test rows x train chunks, keeping a
running top-k), so memory is ``block_size x (chunk_size + k)`` floats whatever N and M are:
100k x 100k never materialises the 10^10 similarity matrix.

[0] Caron et al. Emerging Properties in Self-Supervised Vision Transformers. ICCV 2021 (``eval_knn.py``).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["knn_classify"]


@torch.no_grad()
def knn_classify(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor, *,
                 k: Sequence[int] | int = (10, 20), temperature: float = 0.07, num_classes: int | None = None,
                 block_size: int = 1024, chunk_size: int = 16384, exclude_self: bool = False,
                 device: str | torch.device = "cpu") -> dict[int, torch.Tensor]:
    """Class probabilities of each test feature from its k nearest training features.

    Args:
        train_features: (N, E); L2-normalised here (cosine similarity).
        train_labels: (N,) int class ids in ``0 .. K-1``.
        test_features: (M, E).
        k: one or several neighbour counts; all are scored from one search for ``max(k)``.
        temperature: T of the ``exp(sim / T)`` vote weights.
        num_classes: K; default ``max(train_labels) + 1``.
        block_size: test rows per block.
        chunk_size: training rows per similarity chunk.
        exclude_self: leave-one-out: test row i is training row i and never its own neighbour (pass the
            same features as train and test).
        device: where the similarities are computed.

    Returns:
        ``{k: probs (M, K) float32}`` on the CPU; each row sums to 1 (weighted votes / their sum).

    Raises:
        ValueError: a k larger than the number of usable neighbours, or mismatched shapes.
    """
    ks = sorted({int(v) for v in ([k] if isinstance(k, int) else k)})
    n, m = train_features.shape[0], test_features.shape[0]
    if train_labels.shape != (n,):
        raise ValueError(f"train_labels must be ({n},), got {tuple(train_labels.shape)}")
    if exclude_self and m != n:
        raise ValueError("exclude_self needs the same features as train and test")
    k_max = ks[-1]
    if ks[0] < 1 or k_max > n - int(exclude_self):
        raise ValueError(f"k must lie in 1..{n - int(exclude_self)} ({n} training features), got {ks}")
    classes = int(num_classes if num_classes is not None else int(train_labels.max()) + 1)
    train = F.normalize(train_features.float(), dim=1).to(device)
    test = F.normalize(test_features.float(), dim=1).to(device)
    labels = train_labels.long().to(device)
    probs = {kk: torch.empty(m, classes) for kk in ks}
    for start in range(0, m, block_size):
        sims, idx = _top_neighbours(test[start:start + block_size], train, k_max, chunk_size,
                                    start if exclude_self else None)
        for kk in ks:
            # subtracting the row maximum leaves the vote ratios unchanged and keeps exp() finite
            weights = ((sims[:, :kk] - sims[:, :1]) / temperature).exp()
            votes = torch.zeros(len(sims), classes, device=device).scatter_add_(1, labels[idx[:, :kk]], weights)
            probs[kk][start:start + len(sims)] = (votes / votes.sum(1, keepdim=True)).cpu()
    return probs


def _top_neighbours(queries: torch.Tensor, train: torch.Tensor, k: int, chunk_size: int,
                    self_offset: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Running top-k over training chunks: (B, k) similarities (descending) and their training indices."""
    b = len(queries)
    best_sims = queries.new_empty(b, 0)
    best_idx = torch.empty(b, 0, dtype=torch.long, device=queries.device)
    rows = torch.arange(b, device=queries.device)
    for c in range(0, len(train), chunk_size):
        sims = queries @ train[c:c + chunk_size].T  # (B, C): the only large tensor, bounded by the block sizes
        if self_offset is not None:
            cols = rows + self_offset - c  # where query i meets itself in this chunk
            hit = (cols >= 0) & (cols < sims.shape[1])
            sims[rows[hit], cols[hit]] = float("-inf")
        idx = torch.arange(c, c + sims.shape[1], device=queries.device).expand(b, -1)
        cand_sims, cand_idx = torch.cat([best_sims, sims], 1), torch.cat([best_idx, idx], 1)
        top = cand_sims.topk(min(k, cand_sims.shape[1]), dim=1)
        best_sims, best_idx = top.values, cand_idx.gather(1, top.indices)
    return best_sims, best_idx
