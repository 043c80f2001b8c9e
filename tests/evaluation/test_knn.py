"""Weighted kNN against a naive per-query loop, blocking invariance, leave-one-out, and real MedNIST."""
from __future__ import annotations

import math

import pytest
import torch

from organfm.evaluation.knn import knn_classify
from organfm.evaluation.metrics import classification_metrics


def naive_knn(train: torch.Tensor, labels: torch.Tensor, test: torch.Tensor, k: int, temp: float,
              num_classes: int, exclude_self: bool = False) -> torch.Tensor:
    """DINO's rule written one query at a time: cosine sims, k best, votes sum exp(sim / T) per class."""
    out = torch.zeros(len(test), num_classes, dtype=torch.float64)
    for i, q in enumerate(test.double()):
        sims = []
        for j, t in enumerate(train.double()):
            if exclude_self and i == j:
                continue
            sims.append((float(q @ t / (q.norm() * t.norm())), j))
        sims.sort(reverse=True)
        for sim, j in sims[:k]:
            out[i, int(labels[j])] += math.exp(sim / temp)
        out[i] /= out[i].sum()
    return out


def test_matches_naive_reference_for_every_k():
    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(120, 16, generator=g), torch.randn(37, 16, generator=g)
    labels = torch.randint(0, 4, (120,), generator=g)
    probs = knn_classify(train, labels, test, k=(1, 5, 20), temperature=0.07, num_classes=4)
    for k in (1, 5, 20):
        assert torch.allclose(probs[k].double(), naive_knn(train, labels, test, k, 0.07, 4), atol=1e-5)


def test_blocks_and_chunks_do_not_change_the_result():
    g = torch.Generator().manual_seed(1)
    train, test = torch.randn(300, 8, generator=g), torch.randn(50, 8, generator=g)
    labels = torch.randint(0, 3, (300,), generator=g)
    whole = knn_classify(train, labels, test, k=10)
    blocked = knn_classify(train, labels, test, k=10, block_size=7, chunk_size=13)
    assert torch.allclose(whole[10], blocked[10], atol=1e-6)


def test_leave_one_out_never_uses_the_query_itself():
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(40, 6, generator=g)
    labels = torch.randint(0, 3, (40,), generator=g)
    probs = knn_classify(feats, labels, feats, k=3, exclude_self=True, chunk_size=9, block_size=5)
    ref = naive_knn(feats, labels, feats, 3, 0.07, 3, exclude_self=True)
    assert torch.allclose(probs[3].double(), ref, atol=1e-5)
    # without exclusion the nearest neighbour of a training point is itself: 1-NN is always right
    assert (knn_classify(feats, labels, feats, k=1)[1].argmax(1) == labels).all()


def test_rejects_k_larger_than_the_training_set():
    with pytest.raises(ValueError, match="k must lie in"):
        knn_classify(torch.randn(5, 3), torch.zeros(5, dtype=torch.long), torch.randn(2, 3), k=6)


def test_random_backbone_on_real_mednist_is_far_above_chance(mednist_small, random_features):
    feats = random_features(mednist_small)
    train, test = mednist_small.splits["train"], mednist_small.splits["test"]
    probs = knn_classify(feats["train"], train.labels, feats["test"], k=(10, 20), num_classes=6)
    metrics = classification_metrics(test.labels.numpy(), probs[20].numpy())
    print(f"MedNIST random test_resnet kNN k=20: {metrics}")
    assert metrics["accuracy"] > 0.6  # chance is ~1/6
    again = knn_classify(feats["train"], train.labels, feats["test"], k=20, num_classes=6)
    assert torch.equal(again[20], probs[20])
