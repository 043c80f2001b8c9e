"""Full fine-tuning, shared by the protocols that train the backbone: the loop and classification fine-tuning.

``train_with_early_stopping`` is the one fine-tuning loop (``finetune``, ``fewshot``, ``finetune3d`` and
``segmentation`` use it); ``finetune_classification`` puts a new linear layer on a pretrained backbone, and
``finetune_once`` runs it on a task's splits with the ``finetune.*`` settings (:class:`FinetuneConfig`, here
because both ``finetune`` and ``fewshot`` read them and protocols never import each other).

Recipe (the usual one for ConvNeXt/ViT fine-tuning [0, 1], scaled down):
    - AdamW with the engine's parameter groups and weight-decay rule (``organfm.engine.param_groups``:
      weights with ``ndim >= 2`` decay, biases and norms do not), optional layer-wise lr decay;
    - learning rate: linear warmup over the first 10% of steps (at most one epoch), then cosine to
      1% of ``lr``; per-step, from ``organfm.engine.schedules.cosine_schedule``, written into the groups
      by ``set_scheduled_values`` (the engine's ``set_optimizer_values`` plus the layer-decay scale);
    - light augmentation on the fly: random resized crop (area 0.8-1, aspect 3/4-4/3) and a rotation of
      at most 10 degrees, one affine resample (no flips, no intensity or hue changes: laterality and
      Hounsfield units carry meaning in medical images);
    - after every epoch the validation split is scored; the weights of the best epoch (by
      ``monitor``, ties broken by the lower validation loss) are restored at the end and scored once
      on the test split; training stops after ``patience`` epochs without improvement.

Determinism: one ``torch.Generator`` seeded with ``seed`` draws the data order and every augmentation,
the new layers are initialised under ``torch.manual_seed(seed)`` (inside ``torch.random.fork_rng``, so
the caller's global RNG is untouched), and so is ``make_backbone()`` (a randomly initialised backbone is
then reproducible too). On CPU the same seed gives the same numbers bit for bit.

[0] Liu et al. A ConvNet for the 2020s. CVPR 2022 (fine-tuning recipe, layer-wise lr decay).
[1] Bao et al. BEiT. ICLR 2022 (layer-wise lr decay).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from organfm.engine.param_groups import build_param_groups, set_scheduled_values
from organfm.engine.schedules import cosine_schedule
from organfm.evaluation.metrics import CLASSIFICATION_METRICS, classification_metrics
from organfm.views.affine import random_affine

if TYPE_CHECKING:
    from organfm.evaluation.protocol import ModelRun
    from organfm.evaluation.task_data import TaskData

__all__ = ["FinetuneConfig", "balanced_class_weights", "class_weights", "finetune_classification", "finetune_once",
           "train_with_early_stopping"]

_EVAL_BATCH = 256


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator).split(batch_size)
    # a last batch of one sample would break batch norm (and adds a noisy step): drop it
    return list(order[:-1]) if len(order) > 1 and len(order[-1]) < 2 else list(order)


def train_with_early_stopping(model: nn.Module, param_groups: list[dict[str, Any]], *, num_train: int,
                              compute_loss: Callable[[torch.Tensor], torch.Tensor],
                              validate: Callable[[], tuple[float, float, dict[str, Any]]], epochs: int,
                              batch_size: int, lr: float, weight_decay: float, patience: int,
                              generator: torch.Generator,
                              on_step: Callable[[int, torch.optim.Optimizer], None] | None = None) -> dict[str, Any]:
    """The fine-tuning loop shared by classification and segmentation.

    Args:
        model: trained in place; holds the best epoch's weights on return.
        param_groups: from ``organfm.engine.param_groups.build_param_groups`` (``apply_weight_decay``,
            ``lr_scale``).
        num_train: training set size; batches of indices are drawn from ``generator``.
        compute_loss: indices (B,) -> scalar loss of that batch (augmentation inside).
        validate: () -> ``(score, val_loss, logs)``; higher ``score`` is better, NaN counts as worst.
        epochs: at most this many passes over the training set.
        batch_size: images per step.
        lr: peak learning rate (cosine schedule with warmup over at most 10% of steps, see module doc).
        weight_decay: AdamW weight decay of the groups with ``apply_weight_decay`` (constant).
        patience: stop after this many epochs without a better validation score.
        generator: seeded CPU generator for the data order.
        on_step: called as ``on_step(step, optimizer)`` after the step's values are set, before the update
            (for tests and logging).

    Returns:
        ``{"best_epoch" (1-based), "history": [per-epoch dict], "epochs_run", "stopped_early"}``.

    Raises:
        FloatingPointError: on a non-finite training loss, naming the epoch and step.
    """
    if epochs < 1 or batch_size < 1 or patience < 1:
        raise ValueError("epochs, batch_size and patience must be >= 1")
    steps_per_epoch = len(_batches(num_train, batch_size, torch.Generator().manual_seed(0)))
    total = epochs * steps_per_epoch
    schedule = cosine_schedule(lr, lr * 0.01, total, warmup_steps=min(steps_per_epoch, total // 10))
    optimizer = torch.optim.AdamW([{k: v for k, v in g.items() if k != "names"} for g in param_groups], lr=lr,
                                  weight_decay=weight_decay)
    best_key: tuple[float, float] = (-math.inf, -math.inf)
    best_state, best_epoch, since_best, history = None, 0, 0, []
    step = 0
    for epoch in range(1, epochs + 1):
        model.train()
        losses = []
        for indices in _batches(num_train, batch_size, generator):
            set_scheduled_values(optimizer, lr=float(schedule[step]), weight_decay=weight_decay)
            if on_step is not None:
                on_step(step, optimizer)
            loss = compute_loss(indices)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss {loss.item()} at epoch {epoch}, step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
        model.eval()
        with torch.no_grad():
            score, val_loss, logs = validate()
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": float(val_loss),
                        "lr": float(schedule[step - 1]), **logs})
        key = (-math.inf if math.isnan(score) else float(score), -float(val_loss))
        if key > best_key:
            best_key, best_epoch, since_best = key, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since_best += 1
            if since_best >= patience:
                break
    assert best_state is not None  # epoch 1 always improves on -inf
    model.load_state_dict(best_state)
    model.eval()
    return {"best_epoch": best_epoch, "history": history, "epochs_run": len(history),
            "stopped_early": len(history) < epochs}


def _check_split(name: str, split: tuple[torch.Tensor, torch.Tensor], label_ndim: int) -> None:
    images, labels = split
    if images.ndim < 4 or images.shape[0] != labels.shape[0] or labels.ndim != label_ndim:
        raise ValueError(f"{name}: expected images (N, C, H, W) and labels with {label_ndim} dims and the same N, "
                         f"got {tuple(images.shape)} and {tuple(labels.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} split is empty")


# --------------------------------------------------------------------------------------------- classification

class _Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def _num_features(backbone: nn.Module, sample: torch.Tensor) -> int:
    if hasattr(backbone, "num_features"):
        return int(backbone.num_features)
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        dim = int(backbone(sample[:1]).shape[-1])
    backbone.train(was_training)
    return dim


@torch.no_grad()
def _predict(model: nn.Module, images: torch.Tensor, device: str) -> torch.Tensor:
    model.eval()
    return torch.cat([model(images[i:i + _EVAL_BATCH].to(device)).float().cpu()
                      for i in range(0, len(images), _EVAL_BATCH)])


def _score_classification(model: nn.Module, split: tuple[torch.Tensor, torch.Tensor],
                          device: str) -> tuple[dict[str, Any], float]:
    logits = _predict(model, split[0], device)
    loss = float(F.cross_entropy(logits, split[1]).item())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a small val split may miss a class: AUC skips it, recorded in the dict
        metrics = classification_metrics(split[1].numpy(), logits.softmax(-1).numpy())
    return metrics, loss


def finetune_classification(make_backbone: Callable[[], nn.Module], train: tuple[torch.Tensor, torch.Tensor],
                            val: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor], *,
                            num_classes: int, epochs: int = 20, batch_size: int = 64, lr: float = 1e-3,
                            weight_decay: float = 0.05, layer_decay: float | None = None, patience: int = 5,
                            seed: int = 0, augment: bool = True, device: str = "cpu",
                            monitor: str = "balanced_accuracy",
                            class_weight: str | None = None) -> dict[str, Any]:
    """Fine-tune a fresh pretrained backbone + new linear layer end to end; score test at the best val epoch.

    Args:
        make_backbone: returns a FRESH backbone with the pretrained weights (called once here, so repeats
            never share weights); ``backbone(x)`` gives the pooled embedding (B, E).
        train, val, test: ``(images (N, C, H, W) float32, already scaled and normalised; labels (N,) int64)``.
        num_classes: K.
        epochs: at most this many epochs.
        batch_size: images per step.
        lr: peak learning rate of the cosine schedule (for the head; see ``layer_decay``).
        weight_decay: AdamW weight decay on weights (not biases/norms).
        layer_decay: layer-wise lr decay factor (e.g. 0.75), or None (``organfm.engine.param_groups``).
        patience: early stopping after this many epochs without a better validation ``monitor``.
        seed: data order, augmentation and head initialisation.
        augment: random resized crop + small rotation on training batches (``random_affine``).
        device: where to train ("cpu", "cuda", ...); the tensors may stay on the CPU.
        monitor: validation metric for model selection: ``"balanced_accuracy"`` or ``"auc"`` (any key
            of ``classification_metrics``).
        class_weight: None (plain cross-entropy) or ``"balanced"``: each class weighted by
            N / (K · N_k) on the training labels (scikit-learn's "balanced"), so a rare class counts as much
            as a common one and the argmax no longer settles on the majority class.

    Returns:
        ``{"metrics": classification_metrics on test, "best_epoch": int (1-based), "val_metrics": at that
        epoch, "history": [{"epoch", "train_loss", "val_loss", "lr", val metrics...}], "epochs_run": int,
        "stopped_early": bool}``.
    """
    for name, split in (("train", train), ("val", val), ("test", test)):
        _check_split(name, split, label_ndim=1)
    if monitor not in ("accuracy", "balanced_accuracy", "auc", "f1"):
        raise ValueError(f"monitor must be a classification metric, got {monitor!r}")
    for name, split in (("train", train), ("val", val), ("test", test)):
        if split[1].min() < 0 or split[1].max() >= num_classes:
            raise ValueError(f"{name} labels must lie in 0..{num_classes - 1}")
    images, labels = train[0], train[1].long()
    val, test = (val[0], val[1].long()), (test[0], test[1].long())
    weight = class_weights(labels, num_classes, class_weight)
    weight = weight.to(device) if weight is not None else None
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = make_backbone()
        head = nn.Linear(_num_features(backbone, images), num_classes)
        nn.init.trunc_normal_(head.weight, std=0.02, generator=generator)
        nn.init.zeros_(head.bias)
        model = _Classifier(backbone, head).to(device)
        groups = build_param_groups(backbone, head, layer_decay=layer_decay)

        def compute_loss(indices: torch.Tensor) -> torch.Tensor:
            x = images[indices].to(device)
            if augment:
                x, _ = random_affine(x, generator=generator)
            return F.cross_entropy(model(x), labels[indices].to(device), weight=weight)

        def validate() -> tuple[float, float, dict[str, Any]]:
            metrics, loss = _score_classification(model, val, device)
            return metrics[monitor], loss, {k: v for k, v in metrics.items() if k != "auc_skipped_classes"}

        fit = train_with_early_stopping(model, groups, num_train=len(images), compute_loss=compute_loss,
                                        validate=validate, epochs=epochs, batch_size=batch_size, lr=lr,
                                        weight_decay=weight_decay, patience=patience, generator=generator)
    val_metrics, _ = _score_classification(model, val, device)
    test_metrics, _ = _score_classification(model, test, device)
    if test_metrics["auc_skipped_classes"]:
        warnings.warn(f"test AUC skips classes {test_metrics['auc_skipped_classes']} (absent from the test labels)",
                      stacklevel=2)
    return {"metrics": test_metrics, "best_epoch": fit["best_epoch"], "val_metrics": val_metrics,
            "history": fit["history"], "epochs_run": fit["epochs_run"], "stopped_early": fit["stopped_early"]}


def class_weights(labels: torch.Tensor, num_classes: int, class_weight: str | None,
                  key: str = "class_weight") -> torch.Tensor | None:
    """The loss weights a ``class_weight`` setting names: None for null, ``balanced_class_weights`` for
    ``"balanced"``; anything else is a ValueError naming ``key`` (the setting's name where the user wrote it)."""
    if class_weight not in (None, "balanced"):
        raise ValueError(f"{key} must be null or balanced, got {class_weight!r}")
    return balanced_class_weights(labels, num_classes) if class_weight == "balanced" else None


def balanced_class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K,) float32 weights N / (K · N_k) of the classes in ``labels`` (0 for a class absent from them)."""
    counts = torch.bincount(labels.long(), minlength=num_classes).float()
    return torch.where(counts > 0, len(labels) / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))


@dataclass
class FinetuneConfig:
    """Full fine-tuning (``finetune_classification`` kwargs), also used by few-shot fine-tuning."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    layer_decay: float | None = None
    patience: int = 5
    seeds: int = 1
    monitor: str = "balanced_accuracy"
    augment: bool = True
    max_train: int | None = None  # a smaller training set for CPU runs


def finetune_once(run: ModelRun, data: TaskData, train_idx: np.ndarray, seed: int,
                  settings: FinetuneConfig) -> dict[str, float]:
    """Fine-tune on ``train_idx`` of the train split (val for selection), return the test metrics.

    Args:
        run: the model (a fresh backbone per call, its normalisation, its device).
        data: the task's ``train``, ``val`` and ``test`` splits.
        train_idx: (n,) indices into the train split.
        seed: data order, augmentation and head initialisation.
        settings: the task's ``finetune.*`` section.

    Returns:
        ``CLASSIFICATION_METRICS`` on test and ``"best_epoch"`` (as a float).
    """
    s = settings
    train, val, test = data.splits["train"], data.splits["val"], data.splits["test"]
    idx = torch.as_tensor(train_idx, dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tiny val/test splits: AUC skips are recorded anyway
        out = finetune_classification(
            run.make_backbone, (run.normalized(train.images[idx]), train.labels[idx]),
            (run.normalized(val.images), val.labels), (run.normalized(test.images), test.labels),
            num_classes=len(data.class_names), epochs=s.epochs, batch_size=s.batch_size, lr=s.lr,
            weight_decay=s.weight_decay, layer_decay=s.layer_decay, patience=s.patience, augment=s.augment,
            monitor=s.monitor, seed=seed, device=run.device)
    return {**{m: out["metrics"][m] for m in CLASSIFICATION_METRICS}, "best_epoch": float(out["best_epoch"])}
