"""Evaluation metrics on numpy arrays: classification scores, Dice/IoU, and mean ± sd over repeats.

Every metric is written out in numpy (no scikit-learn at run time) and checked against
scikit-learn and naive loops in ``tests/evaluation/test_metrics.py``.

Classification (``classification_metrics``):
    ``accuracy``: fraction of argmax predictions equal to the label.
    ``balanced_accuracy``: mean recall over the classes present in ``y_true`` (scikit-learn's
        ``balanced_accuracy_score``).
    ``auc``: ROC AUC; for K = 2 the plain binary AUC of ``probs[:, 1]``, for K > 2 the macro mean of the
        one-vs-rest AUCs (scikit-learn's ``roc_auc_score(multi_class="ovr", average="macro")``). A class
        with no positive or no negative in ``y_true`` has no AUC: it is left out of the mean, listed under
        ``auc_skipped_classes`` and reported with a ``UserWarning``. NaN when no class is left.
    ``f1``: macro F1 over the classes present in ``y_true`` or the predictions (scikit-learn's
        ``f1_score(average="macro")``); a class with no true and no predicted sample is not counted.
    ``majority_accuracy``: the accuracy of always predicting the most frequent class of ``y_true`` (the
        floor an imbalanced set puts under ``accuracy``; ``balanced_accuracy`` and ``auc`` have no such floor).

Segmentation (``segmentation_metrics``): Dice and IoU per class, pooled over the whole set (sum of
intersections over sum of sizes, not a mean of per-image scores), so an image without the organ does
not count as a perfect 1 or a 0.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["CLASSIFICATION_METRICS", "classification_metrics", "segmentation_metrics", "summarize"]

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "auc", "f1", "majority_accuracy")
"""The float-valued keys of ``classification_metrics``' result (iterate over these when summarising)."""


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, on any device
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def classification_metrics(y_true: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Accuracy, balanced accuracy, AUC and macro F1 of class probabilities.

    Args:
        y_true: (N,) integer labels in ``0 .. K-1`` (numpy or torch).
        probs: (N, K) class probabilities or any monotone scores (softmax output, logits); for the
            binary case (N,) is read as the score of class 1.

    Returns:
        ``{"accuracy", "balanced_accuracy", "auc", "f1", "majority_accuracy"}`` as floats, plus ``"auc_skipped_classes"``:
        the class ids (list of int, usually empty) left out of the macro AUC because ``y_true`` has no
        positive or no negative for them.

    Raises:
        ValueError: on mismatched lengths, an empty set or labels outside ``0 .. K-1``.
    """
    y = _to_numpy(y_true).reshape(-1)
    p = _to_numpy(probs).astype(np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)  # binary scores of class 1
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"probs must be (N, K) with N = len(y_true) = {y.shape[0]}, got {tuple(p.shape)}")
    if y.size == 0:
        raise ValueError("classification_metrics needs at least one sample")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError("y_true must hold integer class ids")
        y = y.astype(np.int64)
    num_classes = p.shape[1]
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"y_true holds labels outside 0..{num_classes - 1} (probs has {num_classes} columns)")

    pred = p.argmax(axis=1)
    confusion = np.bincount(y * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)
    true_count, pred_count, hits = confusion.sum(1), confusion.sum(0), np.diag(confusion)
    present = true_count > 0
    recall = hits[present] / true_count[present]
    # F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (true + predicted); classes seen in neither are not counted
    seen = (true_count + pred_count) > 0
    f1 = 2.0 * hits[seen] / (true_count[seen] + pred_count[seen])

    skipped: list[int] = []
    if num_classes == 2:
        auc = _binary_auc(y == 1, p[:, 1])
        if math.isnan(auc):
            skipped = [0, 1]
    else:
        aucs = []
        for k in range(num_classes):
            value = _binary_auc(y == k, p[:, k])
            if math.isnan(value):
                skipped.append(k)
            else:
                aucs.append(value)
        auc = float(np.mean(aucs)) if aucs else float("nan")
    if skipped:
        warnings.warn(f"AUC undefined for classes {skipped} (no positive or no negative sample in y_true); "
                      + ("AUC is NaN" if math.isnan(auc) else "left out of the macro mean"), stacklevel=2)
    return {"accuracy": float(hits.sum() / y.size), "balanced_accuracy": float(recall.mean()),
            "auc": float(auc), "f1": float(f1.mean()), "majority_accuracy": float(true_count.max() / y.size),
            "auc_skipped_classes": skipped}


def _binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney ROC AUC with ties counted as 1/2; NaN without both classes."""
    num_pos = int(positive.sum())
    num_neg = positive.size - num_pos
    if num_pos == 0 or num_neg == 0:
        return float("nan")
    ranks = _average_ranks(score)
    return float((ranks[positive].sum() - num_pos * (num_pos + 1) / 2.0) / (num_pos * num_neg))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing their mean rank (scipy's ``rankdata(method="average")``)."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse.reshape(-1)]


def segmentation_metrics(pred: Any, target: Any, num_classes: int,
                         ignore_background: bool = True) -> dict[str, Any]:
    """Dice and IoU per class, pooled over all images, and their means.

    Args:
        pred: (N, [D], H, W) integer class map (numpy or torch), values in ``0 .. num_classes-1``.
        target: ground truth of the same shape and range.
        num_classes: C, including the background class 0.
        ignore_background: leave class 0 out of the per-class scores and the means.

    Returns:
        ``{"dice": {class_id: float}, "iou": {class_id: float}, "mean_dice": float, "mean_iou": float}``
        where for class c, with I the voxels where both are c and P, T the voxel counts of c in
        ``pred`` and ``target``: Dice = 2I / (P + T), IoU = I / (P + T - I). A class absent from both
        ``pred`` and ``target`` has no score and is left out of the dicts and the means (NaN means when
        no class is left).
    """
    p = _to_numpy(pred).astype(np.int64, copy=False).reshape(-1)
    t = _to_numpy(target).astype(np.int64, copy=False).reshape(-1)
    if p.shape != t.shape:
        raise ValueError(f"pred and target differ in size: {_to_numpy(pred).shape} vs {_to_numpy(target).shape}")
    for name, values in (("pred", p), ("target", t)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} holds class ids outside 0..{num_classes - 1}")
    confusion = np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)
    inter = np.diag(confusion).astype(np.float64)
    sizes = confusion.sum(0) + confusion.sum(1)  # P + T
    dice: dict[int, float] = {}
    iou: dict[int, float] = {}
    for c in range(1 if ignore_background else 0, num_classes):
        if sizes[c] == 0:
            continue
        dice[c] = float(2.0 * inter[c] / sizes[c])
        iou[c] = float(inter[c] / (sizes[c] - inter[c]))
    nan = float("nan")
    return {"dice": dice, "iou": iou,
            "mean_dice": float(np.mean(list(dice.values()))) if dice else nan,
            "mean_iou": float(np.mean(list(iou.values()))) if iou else nan}


def summarize(values: Sequence[float], *, digits: int = 3) -> dict[str, Any]:
    """Mean, sample standard deviation and Student-t 95% interval of repeated scores (e.g. seeds).

    Args:
        values: one score per repeat; NaN values propagate (a repeat that failed is not hidden).
        digits: decimals in ``formatted``.

    Returns:
        ``{"mean", "sd", "n", "ci95_low", "ci95_high", "formatted"}``: ``sd`` with ddof=1 (0 for n = 1);
        the interval is ``mean ± t(0.975, n-1) * sd / sqrt(n)`` (NaN for n = 1, where it is undefined);
        ``formatted`` is ``"mean ± sd"``.
    """
    x = np.asarray([float(v) for v in values], dtype=np.float64)
    n = int(x.size)
    if n == 0:
        raise ValueError("summarize needs at least one value")
    mean = float(x.mean())
    sd = float(x.std(ddof=1)) if n > 1 else 0.0
    if n > 1:
        from scipy import stats  # lazy: only needed here

        half = float(stats.t.ppf(0.975, df=n - 1)) * sd / math.sqrt(n)
        low, high = mean - half, mean + half
    else:
        low = high = float("nan")
    return {"mean": mean, "sd": sd, "n": n, "ci95_low": low, "ci95_high": high,
            "formatted": f"{mean:.{digits}f} ± {sd:.{digits}f}"}
