"""Organ-cluster scores: perfect clusters score 1, noise scores ~0, real MedNIST organs cluster."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from organfm.evaluation.protocols.clusters import cluster_scores


def test_well_separated_clusters_score_perfectly_and_noise_does_not():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 32, generator=g) * 10
    labels = torch.arange(200) % 4
    tight = cluster_scores(centers[labels] + 0.1 * torch.randn(200, 32, generator=g), labels, k=10)
    assert tight["knn_accuracy"] == 1.0 and tight["nmi"] == pytest.approx(1.0) and tight["ari"] == pytest.approx(1.0)
    assert tight["silhouette"] > 0.9
    noise = cluster_scores(torch.randn(200, 32, generator=g), labels, k=10)
    assert noise["nmi"] < 0.1 and abs(noise["ari"]) < 0.1 and noise["silhouette"] < 0.05


def test_real_mednist_regions_cluster_under_a_random_backbone(mednist_small, random_features):
    test = mednist_small.splits["test"]
    scores = cluster_scores(random_features(mednist_small)["test"], test.labels, k=10)
    print(f"MedNIST test clusters, random test_resnet: {scores}")
    assert scores["knn_accuracy"] > 0.6 and scores["nmi"] > 0.2
    assert scores == cluster_scores(random_features(mednist_small)["test"], test.labels, k=10)
