"""Linear-probe grid: separable data, selection on val, determinism, and agreement with scikit-learn."""
from __future__ import annotations

import pytest
import torch

from organfm.evaluation.linear_probe import linear_probe


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
