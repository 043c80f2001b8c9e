"""Probes on frozen features: weighted kNN against a naive per-query loop, blocking invariance, leave-one-out and
real MedNIST; the linear-probe grid on separable data, selection on val, determinism, agreement with scikit-learn."""
from __future__ import annotations

import math

import pytest
import torch

from organfm.evaluation.metrics import classification_metrics
from organfm.evaluation.probes import knn_classify, linear_probe


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


def _blobs(n: int, dim: int, classes: int, seed: int, spread: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g) * 3
    labels = torch.arange(n) % classes
    return centers[labels] + spread * torch.randn(n, dim, generator=g), labels


def test_separable_features_reach_full_accuracy():
    (xtr, ytr), (xva, yva), (xte, yte) = (_blobs(n, 32, 5, s) for n, s in ((300, 0), (100, 0), (100, 0)))
    out = linear_probe(xtr, ytr, xva, yva, xte, epochs=20, lrs=(0.01, 0.1), weight_decays=(0.0, 1e-3))
    assert out["val_accuracy"] == 1.0
    assert (out["test_probs"].argmax(1) == yte).float().mean() == 1.0
    assert len(out["grid"]) == 4 and {(g["lr"], g["weight_decay"]) for g in out["grid"]} == {
        (0.01, 0.0), (0.01, 1e-3), (0.1, 0.0), (0.1, 1e-3)}


def test_chooses_the_head_with_the_best_validation_accuracy():
    # noisy labels: heads differ; the chosen one must be the grid's best on val
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(400, 20, generator=g), torch.randint(0, 3, (400,), generator=g)
    x[:, 0] += y.float() * 0.8
    out = linear_probe(x[:300], y[:300], x[300:], y[300:], epochs=10, lrs=(1e-4, 0.1, 10.0), weight_decays=(0.0, 0.1))
    best = max(g["val_accuracy"] for g in out["grid"])
    assert out["val_accuracy"] == best
    chosen = [g for g in out["grid"] if g["lr"] == out["lr"] and g["weight_decay"] == out["weight_decay"]]
    assert chosen[0]["val_accuracy"] == best


def test_same_seed_same_probs_and_diverged_heads_are_never_chosen():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 16, generator=g), torch.randint(0, 3, (200,), generator=g)  # pure noise
    kwargs = dict(epochs=5, lrs=(0.01, 1e38), weight_decays=(0.0,), seed=1)  # 1e38 overflows to inf/NaN
    a = linear_probe(x[:150], y[:150], x[150:], y[150:], x[150:], **kwargs)
    b = linear_probe(x[:150], y[:150], x[150:], y[150:], x[150:], **kwargs)
    assert torch.equal(a["test_probs"], b["test_probs"])
    assert a["lr"] == 0.01 and torch.isfinite(a["test_probs"]).all()


def test_agrees_with_sklearn_logistic_regression_on_real_mednist(mednist_small, random_features):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    feats = random_features(mednist_small)
    tr, va, te = (mednist_small.splits[s] for s in ("train", "val", "test"))
    out = linear_probe(feats["train"], tr.labels, feats["val"], va.labels, feats["test"], num_classes=6, epochs=60)
    ours = float((out["test_probs"].argmax(1) == te.labels).float().mean())
    scaler = StandardScaler().fit(feats["train"].numpy())
    best = max((LogisticRegression(C=c, max_iter=2000).fit(scaler.transform(feats["train"].numpy()), tr.labels.numpy())
                for c in (0.01, 0.1, 1.0)),
               key=lambda m: m.score(scaler.transform(feats["val"].numpy()), va.labels.numpy()))
    theirs = best.score(scaler.transform(feats["test"].numpy()), te.labels.numpy())
    print(f"MedNIST linear probe: ours {ours:.3f} (lr {out['lr']}, wd {out['weight_decay']}), sklearn {theirs:.3f}")
    assert ours > 0.7
    assert abs(ours - theirs) < 0.05


def test_rejects_empty_inputs():
    with pytest.raises(ValueError, match="non-empty"):
        linear_probe(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.randn(3, 4), torch.zeros(3).long())


def _imbalanced(n, g):
    """15 % positives, one weakly informative feature: an unweighted head leans toward the majority class."""
    y = (torch.rand(n, generator=g) < 0.15).long()
    x = torch.randn(n, 8, generator=g)
    x[:, 0] += 1.2 * y.float()
    return x, y


def test_class_weights_lift_the_minority_class_on_an_imbalanced_set():
    from organfm.evaluation.finetuning import balanced_class_weights
    from organfm.evaluation.metrics import classification_metrics

    g = torch.Generator().manual_seed(0)
    (xtr, ytr), (xva, yva), (xte, yte) = (_imbalanced(n, g) for n in (600, 300, 600))
    kwargs = dict(epochs=30, lrs=(0.001, 0.01, 0.1), weight_decays=(0.0, 0.01))
    plain = linear_probe(xtr, ytr, xva, yva, xte, **kwargs)
    weighted = linear_probe(xtr, ytr, xva, yva, xte, class_weight=balanced_class_weights(ytr, 2), **kwargs)
    bacc = {name: classification_metrics(yte.numpy(), out["test_probs"].numpy())["balanced_accuracy"]
            for name, out in (("plain", plain), ("weighted", weighted))}
    assert bacc["weighted"] > 0.65 and bacc["weighted"] > bacc["plain"] + 0.05, bacc
    # the weighted head predicts the minority class far more often (the point of the weights)
    assert (weighted["test_probs"].argmax(1) == 1).sum() > 2 * (plain["test_probs"].argmax(1) == 1).sum()
    with pytest.raises(ValueError, match="class_weight must have shape"):
        linear_probe(xtr, ytr, xva, yva, class_weight=torch.ones(3), **kwargs)


@pytest.mark.parametrize("select", ["balanced_accuracy", "auc"])
def test_the_head_is_chosen_by_the_named_validation_metric(select):
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    g = torch.Generator().manual_seed(0)
    (xtr, ytr), (xva, yva) = (_imbalanced(n, g) for n in (600, 300))
    out = linear_probe(xtr, ytr, xva, yva, epochs=30, lrs=(0.001, 0.01, 0.1), weight_decays=(0.0, 0.01),
                       select=select)
    probs = out["val_probs"].numpy()
    expected = (roc_auc_score(yva.numpy(), probs[:, 1]) if select == "auc"
                else balanced_accuracy_score(yva.numpy(), probs.argmax(1)))
    assert out["val_score"] == pytest.approx(expected, abs=1e-6)
    assert out["val_score"] == max(h["val_score"] for h in out["grid"])
    by_accuracy = linear_probe(xtr, ytr, xva, yva, epochs=30, lrs=(0.001, 0.01, 0.1), weight_decays=(0.0, 0.01))
    assert (out["lr"], out["weight_decay"]) != (by_accuracy["lr"], by_accuracy["weight_decay"])  # here they differ
    with pytest.raises(ValueError, match="select must be one of"):
        linear_probe(xtr, ytr, xva, yva, select="f1")
