"""Organ-embedding analysis on frozen features: leave-one-out kNN, k-means NMI/ARI, silhouette, 2D maps."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from organfm.evaluation.clusters import cluster_scores, embed_2d
from organfm.evaluation.few_shot import stratified_subset
from organfm.evaluation.protocol import ModelRun, make_row, register_protocol
from organfm.evaluation.task_data import TaskData, public_metadata

__all__ = ["ClustersConfig", "clusters"]


@dataclass
class ClustersConfig:
    """Organ-embedding analysis (``cluster_scores`` + ``embed_2d``)."""

    split: Literal["train", "val", "test", "all"] = "test"
    embeddings: list[Literal["tsne", "umap"]] = field(default_factory=lambda: ["tsne", "umap"])
    color_by: list[str] = field(default_factory=lambda: ["class"])  # class, organ, split or a metadata column
    max_points: int = 2000
    k: int = 20
    perplexity: float = 30.0


def _limits(task: Any) -> dict[str, int | None]:
    # "all" (every record, e.g. one CT scan's crops) is capped by max_points; a named split by data.max_<split>
    split = task.clusters.split
    return {split: task.clusters.max_points if split == "all" else None}


@register_protocol("clusters", config=ClustersConfig, inputs="features", splits=_limits, leakage_guard=False)
def clusters(run: ModelRun, data: TaskData) -> list[dict[str, Any]]:
    """One row of cluster scores; the 2D maps and their colours go to ``run.artifacts["clusters"]``."""
    task, c = run.task, run.task.clusters
    split = data.splits[c.split]
    idx = np.arange(len(split))
    if len(idx) > c.max_points:
        idx = stratified_subset(split.labels.numpy(), fraction=c.max_points / len(idx), seed=task.seed)
    x, y = run.features(split)[idx], split.labels[idx]
    knn_temp = task.knn.temperature if hasattr(task, "knn") else 0.07
    scores = cluster_scores(x, y, k=c.k, temperature=knn_temp, seed=task.seed)
    maps = {method: embed_2d(x, method=method, seed=task.seed, perplexity=c.perplexity) for method in c.embeddings}
    meta = [public_metadata(split.records[i], int(split.labels[i]), data.class_names, split.name) for i in idx]
    run.artifacts["clusters"] = {"maps": maps, "colors": {col: [str(m.get(col, "")) for m in meta]
                                                          for col in c.color_by}}
    return [make_row(run.name, "clusters", f"{split.name} ({len(idx)})", {m: [v] for m, v in scores.items()})]
