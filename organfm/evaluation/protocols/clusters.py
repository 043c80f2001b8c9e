"""Organ-embedding analysis, the Coda paper's zero-shot test: do organs form clusters without any training?

Two things: 2-D maps (t-SNE, UMAP; ``organfm.evaluation.maps``) to look at, coloured by organ or any metadata
column, and the numbers a picture cannot give: leave-one-out kNN organ accuracy (with the ``knn.temperature``),
k-means NMI/ARI against the organ labels, and the silhouette of the organ labels (cosine).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from organfm.data.subsets import stratified_subset
from organfm.evaluation.maps import embed_2d
from organfm.evaluation.probes import KNNConfig, knn_classify
from organfm.evaluation.protocol import ModelRun, make_row, register_protocol
from organfm.evaluation.task_data import TaskData, public_metadata

__all__ = ["ClustersConfig", "cluster_scores", "clusters"]


@dataclass
class ClustersConfig:
    """Organ-embedding analysis (``cluster_scores`` + ``embed_2d``)."""

    split: Literal["train", "val", "test", "all"] = "test"
    embeddings: list[Literal["tsne", "umap"]] = field(default_factory=lambda: ["tsne", "umap"])
    color_by: list[str] = field(default_factory=lambda: ["class"])  # class, organ, split or a metadata column
    max_points: int = 2000
    k: int = 20
    perplexity: float = 30.0


def cluster_scores(features: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, *, k: int = 20,
                   temperature: float = 0.07, seed: int = 0, max_silhouette: int = 5000) -> dict[str, Any]:
    """How well the labels (organs) cluster in feature space.

    Args:
        features: (N, E) frozen features.
        labels: (N,) int organ ids.
        k: neighbours of the leave-one-out kNN (capped at N - 1).
        temperature: kNN vote temperature.
        seed: k-means initialisation and the silhouette subsample.
        max_silhouette: silhouette on at most this many points (it is O(N^2)).

    Returns:
        ``{"knn_accuracy", "nmi", "ari", "silhouette"}``: leave-one-out weighted-kNN accuracy; NMI and ARI
        of k-means (as many clusters as labels, on normalised features) vs the labels; silhouette of the
        labels with the cosine distance (in [-1, 1]).
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score
    from threadpoolctl import threadpool_limits

    x = F.normalize(torch.as_tensor(np.asarray(features), dtype=torch.float32), dim=1)
    y = torch.as_tensor(np.asarray(labels)).long()
    classes = int(y.unique().numel())
    if classes < 2 or len(y) < 3:
        raise ValueError(f"cluster scores need >= 2 labels and >= 3 points, got {classes} labels, {len(y)} points")
    probs = knn_classify(x, y, x, k=min(k, len(y) - 1), temperature=temperature, exclude_self=True,
                         num_classes=int(y.max()) + 1)
    knn_acc = float((next(iter(probs.values())).argmax(1) == y).float().mean())
    rng = np.random.default_rng(seed)
    keep = rng.permutation(len(y))[:max_silhouette]
    y_np = y.numpy()
    with threadpool_limits(1):  # see embed_2d: single-threaded is faster on a shared CPU at these sizes
        clusters = KMeans(n_clusters=classes, n_init=10, random_state=seed).fit_predict(x.numpy())
        silhouette = float(silhouette_score(x.numpy()[keep], y_np[keep], metric="cosine")) \
            if len(np.unique(y_np[keep])) > 1 else float("nan")
    return {"knn_accuracy": knn_acc, "nmi": float(normalized_mutual_info_score(y_np, clusters)),
            "ari": float(adjusted_rand_score(y_np, clusters)), "silhouette": silhouette}


def _limits(settings: ClustersConfig) -> dict[str, int | None]:
    # "all" (every record, e.g. one CT scan's crops) is capped by max_points; a named split by data.max_<split>
    return {settings.split: settings.max_points if settings.split == "all" else None}


@register_protocol("clusters", config=ClustersConfig, inputs="features", splits=_limits, leakage_guard=False,
                   uses=("knn",), scatter_split=lambda settings: settings.split)
def clusters(run: ModelRun, data: TaskData, settings: ClustersConfig, *, knn: KNNConfig) -> list[dict[str, Any]]:
    """One row of cluster scores; the 2D maps and their colours go to ``run.artifacts["maps"]``.

    Args:
        run: the model.
        data: the task's splits (``clusters.split`` among them).
        settings: the task's ``clusters.*`` section.
        knn: the ``knn.*`` section (its ``temperature`` weighs the leave-one-out votes).
    """
    c = settings
    split = data.splits[c.split]
    idx = np.arange(len(split))
    if len(idx) > c.max_points:
        idx = stratified_subset(split.labels.numpy(), fraction=c.max_points / len(idx), seed=run.seed)
    x, y = run.features(split)[idx], split.labels[idx]
    scores = cluster_scores(x, y, k=c.k, temperature=knn.temperature, seed=run.seed)
    maps = {method: embed_2d(x, method=method, seed=run.seed, perplexity=c.perplexity) for method in c.embeddings}
    meta = [public_metadata(split.records[i], int(split.labels[i]), data.class_names, split.name) for i in idx]
    run.artifacts["maps"] = {"maps": maps, "colors": {col: [str(m.get(col, "")) for m in meta] for col in c.color_by}}
    return [make_row(run.name, "clusters", f"{split.name} ({len(idx)})", {m: [v] for m, v in scores.items()})]
