"""Recall@K of cross-modal retrieval (CLIP's image <-> text protocol), from similarities or chunked embeddings.

A query *hits at k* when one of its relevant items is among the k most similar ones. Ties are counted
against the query: the rank of a query is the number of NON-relevant items scoring at least as high as
its best relevant item, so a model that cannot tell a wrong text from the right one (equal scores) gets
no credit, and the result does not depend on the order of the items. Recall@k is the fraction of queries
whose rank is below k.

Relevance is given by ids: query i and item j are relevant to each other when ``query_ids[i] ==
item_ids[j]`` (the protocol uses "same text string", so repeated captions are all correct answers).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["ranks_from_similarity", "recall_from_ranks", "retrieval_ranks"]


def ranks_from_similarity(sim: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """How many non-relevant items score at least as high as each query's best relevant item.

    Args:
        sim: (Nq, Nd) similarities.
        relevant: (Nq, Nd) bool, at least one True per row.

    Returns:
        (Nq,) int64 ranks, 0 = a relevant item is strictly first.

    Raises:
        ValueError: mismatched shapes, or a query with no relevant item (its recall is undefined).
    """
    if sim.shape != relevant.shape or sim.dim() != 2:
        raise ValueError(f"similarities {tuple(sim.shape)} and relevance {tuple(relevant.shape)} must be the same "
                         "(queries, items) shape")
    relevant = relevant.to(device=sim.device, dtype=torch.bool)
    missing = ~relevant.any(1)
    if missing.any():
        raise ValueError(f"{int(missing.sum())} queries have no relevant item (first: row {int(missing.nonzero()[0])})")
    best = sim.masked_fill(~relevant, float("-inf")).amax(1, keepdim=True)
    return ((sim >= best) & ~relevant).sum(1)


def recall_from_ranks(ranks: torch.Tensor, ks: Sequence[int]) -> dict[int, float]:
    """``{k: fraction of ranks < k}`` for each k (ranks from :func:`ranks_from_similarity`).

    Raises:
        ValueError: a k below 1, or no queries.
    """
    bad = [k for k in ks if int(k) != k or k < 1]
    if bad:
        raise ValueError(f"Recall@k needs positive integer k, got {bad}")
    if len(ranks) == 0:
        raise ValueError("Recall@k of no queries is undefined")
    return {int(k): float((ranks < k).double().mean()) for k in ks}


def retrieval_ranks(queries: torch.Tensor, items: torch.Tensor, query_ids: torch.Tensor, item_ids: torch.Tensor,
                    *, chunk: int = 1024) -> torch.Tensor:
    """Ranks (:func:`ranks_from_similarity`) of dot-product retrieval, ``chunk`` query rows at a time.

    Only a (chunk, Nd) block of similarities exists at once, so 10k x 10k items never build the full matrix.

    Args:
        queries: (Nq, D) embeddings (L2-normalised for cosine similarity).
        items: (Nd, D) embeddings on the same device.
        query_ids: (Nq,) int64 relevance ids of the queries.
        item_ids: (Nd,) int64 relevance ids of the items (query i and item j are relevant when the ids match).
        chunk: query rows per block.

    Returns:
        (Nq,) int64 ranks on the CPU.
    """
    if queries.shape[1:] != items.shape[1:]:
        raise ValueError(f"query embeddings {tuple(queries.shape)} and item embeddings {tuple(items.shape)} "
                         "differ in size")
    items = items.float()
    item_ids = item_ids.to(items.device)
    out = []
    for start in range(0, len(queries), chunk):
        q = queries[start:start + chunk].to(items.device).float()
        relevant = query_ids[start:start + chunk].to(items.device)[:, None] == item_ids[None, :]
        out.append(ranks_from_similarity(q @ items.T, relevant).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)
