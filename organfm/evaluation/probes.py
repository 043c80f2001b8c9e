"""Probes on frozen features, shared by the protocols that score them: weighted kNN and a grid of linear heads.

**kNN** (DINO's protocol [0]): cosine similarity; the k nearest training features vote for their class with
weight ``exp(sim / T)`` (T = 0.07); the normalised votes are the class probabilities (for AUC), their argmax
the prediction. Similarities are computed block by block (test rows x train chunks, keeping a running top-k),
so memory is ``block_size x (chunk_size + k)`` floats whatever N and M are: 100k x 100k never materialises the
10^10 similarity matrix. Used by protocols ``knn`` and ``clusters`` (leave-one-out).

**Linear probe**: as in DINOv2's ``linear.py`` [1], a grid of linear heads (learning rate x weight decay) is
trained in ONE pass; every head sees the same mini-batches; the heads are one batched weight tensor (G, E, K),
so a step is one einsum, and SGD with momentum applies each head's own lr and weight decay. The head with the
best validation accuracy (ties: the lower validation loss) is chosen and scored on test. Features are
standardised with the training mean/std first, so one lr grid suits backbones whose feature scales differ by
orders of magnitude (random init vs pretrained). Used by protocols ``linear`` and ``fewshot``.

The settings sections ``knn.*`` and ``linear.*`` (:class:`KNNConfig`, :class:`LinearConfig`) live here with
the probes, because a second protocol reads each of them (``clusters`` the kNN temperature, ``fewshot`` the
linear grid) and protocols never import each other.

[0] Caron et al. Emerging Properties in Self-Supervised Vision Transformers. ICCV 2021 (``eval_knn.py``).
[1] Oquab et al. DINOv2: Learning Robust Visual Features without Supervision. TMLR 2024.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from organfm.evaluation.metrics import classification_metrics

__all__ = ["DEFAULT_LRS", "DEFAULT_WEIGHT_DECAYS", "KNNConfig", "LinearConfig", "knn_classify", "linear_probe",
           "linear_probe_kwargs"]


@dataclass
class KNNConfig:
    """Weighted kNN (``knn_classify``): one result row per k."""

    k: list[int] = field(default_factory=lambda: [10, 20])
    temperature: float = 0.07


@torch.no_grad()
def knn_classify(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor, *,
                 k: Sequence[int] | int = (10, 20), temperature: float = 0.07, num_classes: int | None = None,
                 block_size: int = 1024, chunk_size: int = 16384, exclude_self: bool = False,
                 device: str | torch.device = "cpu") -> dict[int, torch.Tensor]:
    """Class probabilities of each test feature from its k nearest training features.

    Args:
        train_features: (N, E); L2-normalised here (cosine similarity).
        train_labels: (N,) int class ids in ``0 .. K-1``.
        test_features: (M, E).
        k: one or several neighbour counts; all are scored from one search for ``max(k)``.
        temperature: T of the ``exp(sim / T)`` vote weights.
        num_classes: K; default ``max(train_labels) + 1``.
        block_size: test rows per block.
        chunk_size: training rows per similarity chunk.
        exclude_self: leave-one-out: test row i is training row i and never its own neighbour (pass the
            same features as train and test).
        device: where the similarities are computed.

    Returns:
        ``{k: probs (M, K) float32}`` on the CPU; each row sums to 1 (weighted votes / their sum).

    Raises:
        ValueError: a k larger than the number of usable neighbours, or mismatched shapes.
    """
    ks = sorted({int(v) for v in ([k] if isinstance(k, int) else k)})
    n, m = train_features.shape[0], test_features.shape[0]
    if train_labels.shape != (n,):
        raise ValueError(f"train_labels must be ({n},), got {tuple(train_labels.shape)}")
    if exclude_self and m != n:
        raise ValueError("exclude_self needs the same features as train and test")
    k_max = ks[-1]
    if ks[0] < 1 or k_max > n - int(exclude_self):
        raise ValueError(f"k must lie in 1..{n - int(exclude_self)} ({n} training features), got {ks}")
    classes = int(num_classes if num_classes is not None else int(train_labels.max()) + 1)
    train = F.normalize(train_features.float(), dim=1).to(device)
    test = F.normalize(test_features.float(), dim=1).to(device)
    labels = train_labels.long().to(device)
    probs = {kk: torch.empty(m, classes) for kk in ks}
    for start in range(0, m, block_size):
        sims, idx = _top_neighbours(test[start:start + block_size], train, k_max, chunk_size,
                                    start if exclude_self else None)
        for kk in ks:
            # subtracting the row maximum leaves the vote ratios unchanged and keeps exp() finite
            weights = ((sims[:, :kk] - sims[:, :1]) / temperature).exp()
            votes = torch.zeros(len(sims), classes, device=device).scatter_add_(1, labels[idx[:, :kk]], weights)
            probs[kk][start:start + len(sims)] = (votes / votes.sum(1, keepdim=True)).cpu()
    return probs


def _top_neighbours(queries: torch.Tensor, train: torch.Tensor, k: int, chunk_size: int,
                    self_offset: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Running top-k over training chunks: (B, k) similarities (descending) and their training indices."""
    b = len(queries)
    best_sims = queries.new_empty(b, 0)
    best_idx = torch.empty(b, 0, dtype=torch.long, device=queries.device)
    rows = torch.arange(b, device=queries.device)
    for c in range(0, len(train), chunk_size):
        sims = queries @ train[c:c + chunk_size].T  # (B, C): the only large tensor, bounded by the block sizes
        if self_offset is not None:
            cols = rows + self_offset - c  # where query i meets itself in this chunk
            hit = (cols >= 0) & (cols < sims.shape[1])
            sims[rows[hit], cols[hit]] = float("-inf")
        idx = torch.arange(c, c + sims.shape[1], device=queries.device).expand(b, -1)
        cand_sims, cand_idx = torch.cat([best_sims, sims], 1), torch.cat([best_idx, idx], 1)
        top = cand_sims.topk(min(k, cand_sims.shape[1]), dim=1)
        best_sims, best_idx = top.values, cand_idx.gather(1, top.indices)
    return best_sims, best_idx


DEFAULT_LRS = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
DEFAULT_WEIGHT_DECAYS = (0.0, 1e-4, 1e-3, 1e-2)
SELECT_METRICS = ("accuracy", "balanced_accuracy", "auc")  # what linear_probe can choose its head by



@dataclass
class LinearConfig:
    """Linear-probe grid (``linear_probe``)."""

    lrs: list[float] = field(default_factory=lambda: list(DEFAULT_LRS))
    weight_decays: list[float] = field(default_factory=lambda: list(DEFAULT_WEIGHT_DECAYS))
    epochs: int = 100
    batch_size: int = 256


def linear_probe_kwargs(settings: LinearConfig, num_classes: int, device: str | torch.device) -> dict[str, Any]:
    """``linear_probe`` keyword arguments from a task's ``linear.*`` section (shared by ``linear`` and ``fewshot``)."""
    return dict(num_classes=num_classes, lrs=settings.lrs, weight_decays=settings.weight_decays,
                epochs=settings.epochs, batch_size=settings.batch_size, device=device)



def linear_probe(train_features: torch.Tensor, train_labels: torch.Tensor, val_features: torch.Tensor,
                 val_labels: torch.Tensor, test_features: torch.Tensor | None = None, *,
                 num_classes: int | None = None, lrs: Sequence[float] = DEFAULT_LRS,
                 weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS, epochs: int = 100, batch_size: int = 256,
                 momentum: float = 0.9, seed: int = 0, device: str | torch.device = "cpu",
                 class_weight: torch.Tensor | None = None, select: str = "accuracy") -> dict[str, Any]:
    """Train every (lr, weight decay) head at once, select on validation, predict test.

    Args:
        train_features: (N, E) frozen features; train_labels: (N,) int in ``0 .. K-1``.
        val_features: (V, E); val_labels: (V,), for choosing the head.
        test_features: (M, E), or None.
        num_classes: K; default ``max(train, val labels) + 1``.
        lrs: peak learning rates (cosine-decayed to 0 over all steps).
        weight_decays: L2 coefficients; the grid is ``lrs x weight_decays``.
        epochs: passes over the training features.
        batch_size: features per step (shared by all heads).
        momentum: SGD momentum.
        seed: initial order of the mini-batches (heads start at zero: the problem is convex).
        device: where the heads train.
        class_weight: (K,) weights of the classes in the training and validation cross-entropy (e.g.
            ``organfm.evaluation.finetuning.balanced_class_weights``), or None for plain cross-entropy. On an
            imbalanced set an unweighted head predicts the majority class (balanced accuracy 0.5) whatever the
            features hold.
        select: the validation metric the head is chosen by: ``"accuracy"``, ``"balanced_accuracy"`` or
            ``"auc"`` (``organfm.evaluation.metrics.classification_metrics``); ties go to the lower loss.

    Returns:
        ``{"lr", "weight_decay"}`` of the chosen head, ``"val_accuracy"``, ``"val_loss"``, ``"val_score"`` (its
        ``select`` metric), ``"grid"`` (one ``{"lr", "weight_decay", "val_accuracy", "val_loss", "val_score"}``
        per head), ``"val_probs"`` (V, K) and ``"test_probs"`` (M, K) or None, float32 softmax outputs on the CPU.

    Raises:
        ValueError: empty train or val features, an unknown ``select``, or ``class_weight`` not of shape (K,).
    """
    if len(train_features) == 0 or len(val_features) == 0:
        raise ValueError("linear_probe needs non-empty train and val features")
    if select not in SELECT_METRICS:
        raise ValueError(f"select must be one of {', '.join(SELECT_METRICS)}, got {select!r}")
    k = int(num_classes if num_classes is not None else max(int(train_labels.max()), int(val_labels.max())) + 1)
    grid = [(float(lr), float(wd)) for lr in lrs for wd in weight_decays]
    mean = train_features.float().mean(0)
    std = train_features.float().std(0, unbiased=False).clamp_min(1e-6)

    def prepare(x: torch.Tensor) -> torch.Tensor:
        return ((x.float() - mean) / std).to(device)

    x, y = prepare(train_features), train_labels.long().to(device)
    g, e = len(grid), x.shape[1]
    if class_weight is not None:
        if tuple(class_weight.shape) != (k,):
            raise ValueError(f"class_weight must have shape ({k},), got {tuple(class_weight.shape)}")
        class_weight = class_weight.float().to(device)
    weight = torch.zeros(g, e, k, device=device, requires_grad=True)
    bias = torch.zeros(g, k, device=device, requires_grad=True)
    lr = torch.tensor([p[0] for p in grid], device=device)
    wd = torch.tensor([p[1] for p in grid], device=device).view(g, 1, 1)
    buf_w, buf_b = torch.zeros_like(weight), torch.zeros_like(bias)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    total, step = epochs * steps_per_epoch, 0
    with _single_thread(torch.device(device).type == "cpu"):
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=generator).to(device)
            for i in range(0, len(x), batch_size):
                idx = order[i:i + batch_size]
                logits = torch.einsum("ne,gek->gnk", x[idx], weight) + bias[:, None]
                # sum over heads of each head's mean loss: each head's gradient is its own
                loss = F.cross_entropy(logits.reshape(-1, k), y[idx].repeat(g), weight=class_weight,
                                       reduction="sum") / len(idx)
                grad_w, grad_b = torch.autograd.grad(loss, [weight, bias])
                scale = 0.5 * (1 + math.cos(math.pi * step / total))
                with torch.no_grad():
                    buf_w.mul_(momentum).add_(grad_w + wd * weight)
                    buf_b.mul_(momentum).add_(grad_b)
                    weight -= (scale * lr).view(g, 1, 1) * buf_w
                    bias -= (scale * lr).view(g, 1) * buf_b
                step += 1

    with torch.no_grad():
        val_logits = _logits(prepare(val_features), weight, bias)
        vy = val_labels.long().to(device)
        val_acc = (val_logits.argmax(-1) == vy).float().mean(1)
        val_loss = torch.stack([F.cross_entropy(val_logits[h], vy, weight=class_weight) for h in range(g)])
        finite = torch.isfinite(val_loss)
        val_acc[~finite] = -1.0  # a diverged head's NaN logits must never be chosen
        score = [_score(select, vy, val_logits[h]) if finite[h] else -1.0 for h in range(g)]
        # best val metric, ties broken by the lower loss
        order = sorted(range(g), key=lambda h: (-score[h], _finite(float(val_loss[h]))))
        best = order[0]
        test_probs = None
        if test_features is not None:
            test_probs = _logits(prepare(test_features), weight[best:best + 1], bias[best:best + 1])[0]
            test_probs = test_probs.softmax(-1).float().cpu()
    return {
        "lr": grid[best][0], "weight_decay": grid[best][1],
        "val_accuracy": float(val_acc[best]), "val_loss": float(val_loss[best]), "val_score": score[best],
        "grid": [{"lr": lr_, "weight_decay": wd_, "val_accuracy": float(val_acc[h]), "val_loss": float(val_loss[h]),
                  "val_score": score[h]} for h, (lr_, wd_) in enumerate(grid)],
        "val_probs": val_logits[best].softmax(-1).float().cpu(), "test_probs": test_probs,
    }


@contextlib.contextmanager
def _single_thread(enabled: bool) -> Iterator[None]:
    # the steps are tiny matmuls: with 2+ intra-op threads on a busy CPU, thread hand-offs cost 30-70x the
    # arithmetic (measured: 0.5 ms vs 30 ms per step); one thread is always at least as fast here
    previous = torch.get_num_threads()
    if enabled:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _score(select: str, labels: torch.Tensor, logits: torch.Tensor) -> float:
    """One head's validation ``select`` metric from its (V, K) logits (-1 where it is undefined, e.g. NaN AUC)."""
    if select == "accuracy":
        return float((logits.argmax(-1) == labels).float().mean())
    with warnings.catch_warnings():  # a val split without one class: no AUC, which the -1 below reports
        warnings.simplefilter("ignore", UserWarning)
        value = classification_metrics(labels.cpu().numpy(), logits.softmax(-1).float().cpu().numpy())[select]
    return float(value) if math.isfinite(value) else -1.0


def _logits(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ne,gek->gnk", x, weight) + bias[:, None]


def _finite(value: float) -> float:
    return value if math.isfinite(value) else math.inf
