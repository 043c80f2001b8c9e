"""Metrics against scikit-learn, naive per-class loops, hand-computed toys and scipy."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from organfm.evaluation.metrics import CLASSIFICATION_METRICS, classification_metrics, segmentation_metrics, summarize

sk = pytest.importorskip("sklearn.metrics")
stats = pytest.importorskip("scipy.stats")


def _random_probs(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    logits = rng.normal(size=(n, k))
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("num_classes", [2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_matches_sklearn(num_classes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, size=60)
    y[:num_classes] = np.arange(num_classes)  # every class present
    probs = _random_probs(rng, 60, num_classes)
    probs[:, 0] = np.round(probs[:, 0], 1)  # ties in the scores of class 0
    probs /= probs.sum(1, keepdims=True)
    pred = probs.argmax(1)
    got = classification_metrics(y, probs)
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(y, pred), abs=1e-12)
    assert got["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y, pred), abs=1e-12)
    assert got["f1"] == pytest.approx(sk.f1_score(y, pred, average="macro"), abs=1e-12)
    expected_auc = (sk.roc_auc_score(y, probs[:, 1]) if num_classes == 2
                    else sk.roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    assert got["auc"] == pytest.approx(expected_auc, abs=1e-12)
    assert got["auc_skipped_classes"] == []
    assert set(CLASSIFICATION_METRICS) <= set(got)


def test_classification_accepts_torch_and_binary_scores() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=40)
    score = rng.random(40)
    from_vector = classification_metrics(torch.from_numpy(y), torch.from_numpy(score))
    from_matrix = classification_metrics(y, np.stack([1 - score, score], 1))
    assert from_vector == from_matrix
    assert from_vector["auc"] == pytest.approx(sk.roc_auc_score(y, score), abs=1e-12)


def test_classification_missing_class_skips_it_and_says_so() -> None:
    rng = np.random.default_rng(4)
    y = rng.choice([0, 1, 3], size=80)  # class 2 of 4 never occurs
    probs = _random_probs(rng, 80, 4)
    pred = probs.argmax(1)
    assert (pred == 2).any()  # so F1 must count class 2 (predicted, never true) as 0
    with pytest.warns(UserWarning, match=r"classes \[2\]"):
        got = classification_metrics(y, probs)
    assert got["auc_skipped_classes"] == [2]
    expected_auc = np.mean([sk.roc_auc_score(y == k, probs[:, k]) for k in (0, 1, 3)])
    assert got["auc"] == pytest.approx(expected_auc, abs=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about the never-true class, as it should
        assert got["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y, pred), abs=1e-12)
        assert got["f1"] == pytest.approx(sk.f1_score(y, pred, average="macro"), abs=1e-12)
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(y, pred), abs=1e-12)


def test_classification_single_class_auc_is_nan() -> None:
    with pytest.warns(UserWarning, match="AUC is NaN"):
        got = classification_metrics(np.zeros(5, dtype=int), _random_probs(np.random.default_rng(0), 5, 2))
    assert math.isnan(got["auc"])


def test_classification_toy_by_hand() -> None:
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]])
    got = classification_metrics(y, probs)
    assert got["accuracy"] == 0.75
    assert got["balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    assert got["auc"] == 1.0  # every positive scores above every negative
    assert got["f1"] == pytest.approx((2 / 3 + 0.8) / 2)  # class 0: P=1,R=.5; class 1: P=2/3,R=1


def test_classification_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="outside"):
        classification_metrics(np.array([0, 3]), np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="N, K"):
        classification_metrics(np.array([0, 1]), np.full((3, 2), 0.5))


def _naive_dice_iou(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_background: bool):
    dice, iou = {}, {}
    for c in range(1 if ignore_background else 0, num_classes):
        inter = p_sum = t_sum = 0
        for p_img, t_img in zip(pred, target):  # one image at a time, summed
            inter += int(np.logical_and(p_img == c, t_img == c).sum())
            p_sum += int((p_img == c).sum())
            t_sum += int((t_img == c).sum())
        union = p_sum + t_sum - inter
        if p_sum + t_sum == 0:
            continue
        dice[c] = 2 * inter / (p_sum + t_sum)
        iou[c] = inter / union
    return dice, iou


@pytest.mark.parametrize("ignore_background", [True, False])
def test_segmentation_matches_naive_loop(ignore_background: bool) -> None:
    rng = np.random.default_rng(5)
    target = rng.integers(0, 4, size=(6, 16, 16))
    pred = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, 4, size=target.shape))
    pred[pred == 3] = 2  # class 3 never predicted -> Dice 0 for it, not skipped
    got = segmentation_metrics(torch.from_numpy(pred), target, num_classes=5, ignore_background=ignore_background)
    dice, iou = _naive_dice_iou(pred, target, 5, ignore_background)
    assert 4 not in got["dice"]  # class 4 in neither: skipped
    assert got["dice"].keys() == dice.keys() and got["iou"].keys() == iou.keys()
    for c in dice:
        assert got["dice"][c] == pytest.approx(dice[c], abs=1e-12)
        assert got["iou"][c] == pytest.approx(iou[c], abs=1e-12)
    assert got["dice"][3] == 0.0
    assert got["mean_dice"] == pytest.approx(np.mean(list(dice.values())), abs=1e-12)
    assert got["mean_iou"] == pytest.approx(np.mean(list(iou.values())), abs=1e-12)


def test_segmentation_toy_by_hand() -> None:
    target = np.zeros((2, 4, 4), dtype=np.int64)
    pred = np.zeros_like(target)
    target[0, :2, :2] = 1  # 4 px of class 1 in image 0
    pred[0, :2, :1] = 1  # 2 px predicted, both right
    pred[1, 0, 0] = 1  # 1 px false positive in image 1 (class absent there)
    target[1, 3, :] = 2  # 4 px of class 2, predicted exactly
    pred[1, 3, :] = 2
    got = segmentation_metrics(pred, target, num_classes=3)
    # class 1 pooled: I=2, P=3, T=4 -> Dice 4/7, IoU 2/5; class 2: perfect
    assert got["dice"] == pytest.approx({1: 4 / 7, 2: 1.0})
    assert got["iou"] == pytest.approx({1: 2 / 5, 2: 1.0})
    assert got["mean_dice"] == pytest.approx((4 / 7 + 1) / 2)
    assert 0 not in got["dice"]


def test_segmentation_pools_over_the_set_on_planted_volumes() -> None:
    """Two (D, H, W) = (2, 4, 4) volumes with planted predictions; every value below is counted by hand."""
    target = np.zeros((2, 2, 4, 4), dtype=np.int64)
    pred = np.zeros_like(target)
    target[0, :, :2, :2] = pred[0, :, :2, :2] = 1  # volume 0: a 2x2x2 cube of class 1, predicted exactly
    pred[1, :, :2, :2] = 1  # volume 1 has no class 1: the same cube is 8 false positives
    target[0, 0, 3, :] = 2  # volume 0: 4 voxels of class 2, 2 of them found ...
    pred[0, 0, 3, :2] = 2
    pred[0, 1, 3, :2] = 2  # ... and 2 false positives beside them
    target[1, 1, 2, :] = pred[1, 1, 2, :] = 2  # volume 1: 4 voxels of class 2, found exactly
    got = segmentation_metrics(torch.from_numpy(pred), target, num_classes=4)
    # class 1: I = 8, P = 16, T = 8; class 2: I = 2 + 4, P = 4 + 4, T = 4 + 4; class 3 in neither: no score
    assert got["dice"] == pytest.approx({1: 2 * 8 / 24, 2: 2 * 6 / 16}, abs=1e-12)
    assert got["iou"] == pytest.approx({1: 8 / 16, 2: 6 / 10}, abs=1e-12)
    assert got["mean_dice"] == pytest.approx((2 / 3 + 3 / 4) / 2, abs=1e-12)
    assert got["mean_iou"] == pytest.approx((1 / 2 + 3 / 5) / 2, abs=1e-12)
    # pooled, not a mean of per-volume scores: that would give class 1 (1 + 0) / 2
    assert got["dice"][1] != pytest.approx(0.5)
    # with the background: T = 20 + 28, P = 20 + 20, I = 18 + 20
    with_background = segmentation_metrics(pred, target, num_classes=4, ignore_background=False)
    assert with_background["dice"][0] == pytest.approx(2 * 38 / 88, abs=1e-12)
    assert with_background["iou"][0] == pytest.approx(38 / 50, abs=1e-12)
    assert with_background["dice"].keys() == {0, 1, 2}


def test_segmentation_empty_and_bad_input() -> None:
    zeros = np.zeros((1, 4, 4), dtype=np.int64)
    got = segmentation_metrics(zeros, zeros, num_classes=3)
    assert got["dice"] == {} and math.isnan(got["mean_dice"])
    with pytest.raises(ValueError, match="outside"):
        segmentation_metrics(zeros + 3, zeros, num_classes=3)


@pytest.mark.parametrize("values", [[0.81, 0.85, 0.79, 0.9, 0.88], [1.0, 2.0], [3.5, 3.5, 3.5]])
def test_summarize_matches_numpy_scipy(values: list[float]) -> None:
    got = summarize(values)
    x = np.asarray(values)
    assert got["n"] == len(values)
    assert got["mean"] == pytest.approx(x.mean())
    assert got["sd"] == pytest.approx(x.std(ddof=1))
    low, high = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x)) if x.std() > 0 else (x[0], x[0])
    assert got["ci95_low"] == pytest.approx(low)
    assert got["ci95_high"] == pytest.approx(high)
    assert got["formatted"] == f"{x.mean():.3f} ± {x.std(ddof=1):.3f}"


def test_summarize_single_value_and_empty() -> None:
    got = summarize([0.7])
    assert got["sd"] == 0.0 and got["n"] == 1 and got["formatted"] == "0.700 ± 0.000"
    assert math.isnan(got["ci95_low"]) and math.isnan(got["ci95_high"])
    with pytest.raises(ValueError):
        summarize([])


def test_majority_accuracy_is_the_share_of_the_most_frequent_class():
    y = np.array([0, 0, 0, 1, 2, 0, 1, 0])
    got = classification_metrics(y, np.full((8, 3), 1 / 3))
    assert got["majority_accuracy"] == pytest.approx(5 / 8)
    assert "majority_accuracy" in CLASSIFICATION_METRICS
