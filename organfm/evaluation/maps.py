"""2-D maps of frozen features (t-SNE, UMAP), for the ``clusters`` protocol and the report's scatter.

UMAP is imported only when asked for (its first import compiles with numba for ~30 s).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["EMBEDDINGS", "embed_2d"]

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
