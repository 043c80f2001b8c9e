"""Organ-embedding analysis, the Coda paper's zero-shot test: do organs form clusters without any training?

Two things: 2-D maps (t-SNE, UMAP) to look at, coloured by organ or any metadata column, and the
numbers a picture cannot give: leave-one-out kNN organ accuracy, k-means NMI/ARI against the organ
labels, and the silhouette of the organ labels (cosine). UMAP is imported only when asked for
(its first import compiles with numba for ~30 s).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from organfm.evaluation.knn import knn_classify

__all__ = ["EMBEDDINGS", "cluster_scores", "embed_2d"]

EMBEDDINGS = ("tsne", "umap")


def embed_2d(features: torch.Tensor | np.ndarray, *, method: str = "tsne", seed: int = 0,
             perplexity: float = 30.0, n_neighbors: int = 15) -> np.ndarray:
    """A 2-D map of L2-normalised features.

    Args:
        features: (N, E).
        method: ``"tsne"`` (scikit-learn, PCA init) or ``"umap"`` (umap-learn, cosine metric).
        seed: random state of the embedding.
        perplexity: t-SNE perplexity (capped below N).
        n_neighbors: UMAP neighbourhood size (capped below N).

    Returns:
        (N, 2) float32 coordinates.
    """
    x = F.normalize(torch.as_tensor(np.asarray(features), dtype=torch.float32), dim=1).numpy()
    n = len(x)
    if n < 3:
        raise ValueError(f"a 2-D map needs at least 3 points, got {n}")
    if method == "tsne":
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        tsne = TSNE(n_components=2, perplexity=min(perplexity, (n - 1) / 3), init="pca", random_state=seed,
                    learning_rate="auto")
        # OpenMP threads on a shared (busy) CPU spin-wait: 400 points took 23 s with 2 threads, 3 s with 1
        with threadpool_limits(1):
            return tsne.fit_transform(x).astype(np.float32)
    if method == "umap":
        import umap  # lazy: numba JIT on first import

        reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, n - 1), metric="cosine", random_state=seed,
                            n_jobs=1)
        return np.asarray(reducer.fit_transform(x), dtype=np.float32)
    raise ValueError(f"unknown embedding {method!r}; valid: {', '.join(EMBEDDINGS)}")


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
