"""2-D maps of frozen features: deterministic per seed, of L2-normalised features (a row's scale changes nothing),
separated clusters stay apart, and too few points or an unknown method are errors."""
from __future__ import annotations

import numpy as np
import pytest

from organfm.evaluation.maps import embed_2d


def test_tsne_map_shape_and_determinism():
    x = np.random.default_rng(0).normal(size=(60, 8))
    a, b = embed_2d(x, method="tsne", seed=3), embed_2d(x, method="tsne", seed=3)
    assert a.shape == (60, 2) and a.dtype == np.float32 and np.array_equal(a, b)
    with pytest.raises(ValueError, match="unknown embedding 'pca'; valid: tsne, umap"):
        embed_2d(x, method="pca")


def test_the_map_is_of_directions_and_keeps_separated_clusters_apart():
    rng = np.random.default_rng(1)
    centres = np.eye(8)[:3] * 5
    labels = np.arange(45) % 3
    x = centres[labels] + 0.05 * rng.normal(size=(45, 8))
    coords = embed_2d(x, seed=0, perplexity=5)
    # features are L2-normalised first: rows scaled by powers of two (exact in floating point) give the same map
    scaled = embed_2d(x * 2.0 ** rng.integers(-4, 5, size=(45, 1)), seed=0, perplexity=5)
    assert np.array_equal(scaled, coords)
    # every point is nearer the centroid of its own cluster in the map than to any other cluster's
    centroids = np.stack([coords[labels == k].mean(0) for k in range(3)])
    nearest = np.linalg.norm(coords[:, None] - centroids[None], axis=2).argmin(1)
    assert np.array_equal(nearest, labels)


def test_fewer_than_three_points_are_refused_and_perplexity_is_capped_below_n():
    with pytest.raises(ValueError, match="at least 3 points, got 2"):
        embed_2d(np.ones((2, 4)))
    coords = embed_2d(np.random.default_rng(2).normal(size=(4, 3)), perplexity=30.0)  # sklearn needs perplexity < n
    assert coords.shape == (4, 2) and np.isfinite(coords).all()


@pytest.mark.slow
def test_umap_map():
    # the first UMAP fit JIT-compiles with numba (~20 s): one small run
    x = np.random.default_rng(0).normal(size=(80, 8))
    coords = embed_2d(x, method="umap", seed=0)
    assert coords.shape == (80, 2) and np.isfinite(coords).all()
