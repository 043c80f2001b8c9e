"""Image <-> text retrieval Recall@K in a model's joint space (CLIP's protocol, MMKD-CLIP's M5).

The text of each test image is its manifest's ``retrieval.text_column`` (a report, a caption) when the
data has that column; otherwise a caption templated from its class name, like the training captions ("a
CT image of the liver"; the modality is the record's ``modality`` column, else ``retrieval.modality``).

Relevance is "same text string". Templated captions repeat (one per class), and a manifest may repeat a
report ("no acute findings"), so:

- image -> text: each image queries the DISTINCT texts, and any copy of its own text is a hit. With class
  captions this is zero-shot classification over the caption set (``i2t_R@1`` is its accuracy), and every
  ``i2t_R@k`` with k >= the number of distinct texts is 1 by construction (the row says how many there are);
- text -> image: each image's text queries all test images, and every image with the same text is a hit.

Models without a text tower are skipped with a warning.

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
from dataclasses import dataclass, field
from typing import Any

import torch

from organfm.evaluation.protocol import ModelRun, make_row, register_protocol
from organfm.evaluation.task_data import SplitData, TaskData
from organfm.text.captions import TEMPLATE, caption, check_template, record_texts

__all__ = ["RetrievalConfig", "ranks_from_similarity", "recall_from_ranks", "retrieval", "retrieval_ranks",
           "split_texts"]


@dataclass
class RetrievalConfig:
    """Recall@k both ways for each k; texts from ``text_column``, else captions from ``template``."""

    k: list[int] = field(default_factory=lambda: [1, 5, 10])
    text_column: str = "text"
    modality: str = "medical"  # templated captions, for records without a modality column
    template: str = TEMPLATE  # placeholders: {modality}, {organ} (the class name), {label} (empty here)


def split_texts(split: SplitData, class_names: list[str], config: RetrievalConfig,
                where: str = "data") -> tuple[list[str], str]:
    """The text of each item of ``split`` and where the texts came from.

    Returns:
        (N texts, ``"column:<name>"`` or ``"captions"``).

    Raises:
        organfm.data.errors.DataError: some records have the column and one has an empty text (naming it).
        ValueError: a bad template.
    """
    texts = record_texts(split.records, mode="auto", column=config.text_column, where=where)
    if texts is not None:
        return texts, f"column:{config.text_column}"
    check_template(config.template, "retrieval.template")
    return [caption(class_names[int(label)], modality=str(r.meta.get("modality") or config.modality),
                    template=config.template)
            for r, label in zip(split.records, split.labels.tolist(), strict=True)], "captions"


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


@register_protocol("retrieval", config=RetrievalConfig, inputs="features", splits=("test",))
def retrieval(run: ModelRun, data: TaskData, settings: RetrievalConfig) -> list[dict[str, Any]]:
    """One row: ``i2t_R@k`` and ``t2i_R@k`` (fractions) on test, with the text source and distinct texts."""
    s = settings
    bad = [k for k in s.k if k < 1]
    if not s.k or bad:
        raise ValueError(f"retrieval.k must be a list of positive integers, got {s.k}")
    joint = run.joint_text()
    if joint is None:
        run.warn_no_text("retrieval")
        return []
    test = data.splits["test"]
    texts, source = split_texts(test, data.class_names, s, where=data.summary.get("source") or "data")
    distinct = list(dict.fromkeys(texts))
    index = {t: i for i, t in enumerate(distinct)}
    text_ids = torch.tensor([index[t] for t in texts], dtype=torch.long)
    images = run.joint_images(test)
    text_emb = joint.embed_texts(distinct).to(images.device)
    i2t = retrieval_ranks(images, text_emb, text_ids, torch.arange(len(distinct)))
    t2i = retrieval_ranks(text_emb[text_ids.to(images.device)], images, text_ids, text_ids)
    values = {f"i2t_R@{k}": [v] for k, v in recall_from_ranks(i2t, s.k).items()}
    values |= {f"t2i_R@{k}": [v] for k, v in recall_from_ranks(t2i, s.k).items()}
    setting = f"{source} ({len(distinct)} texts)"
    return [make_row(run.name, "retrieval", setting, values, texts=source, distinct_texts=len(distinct),
                     items=len(texts))]
