"""3D volume classification: the encoder plus a linear layer fine-tuned end to end, AUC on test volumes.

``finetune3d`` reads ``<split>_images`` (N, D, H, W) and ``<split>_labels`` of a ``.npz`` (MedMNIST 3D),
preprocesses each volume as the model's contract says (``organfm.data.labelled.volume_input``; ``preprocess_volume``: its
intensity mode, e.g. Triad's percentile clip and min-max, and resize to its cube) and fine-tunes the encoder
plus a linear layer end to end.
The loop is ``organfm.evaluation.finetuning.finetune_classification`` (as protocol ``finetune``, no augmentation).

``finetune3d.mode=linear`` reads the same cubes through the *frozen* encoder instead: its pooled features, a
linear probe on them (``organfm.evaluation.probes.linear_probe``: standardised features, an (lr, weight decay)
grid chosen on val by ``finetune3d.monitor``, test scored once), the 3D counterpart of protocol ``linear``.
``class_weight=balanced`` weights the loss (fine-tuning or probe) by inverse class frequency: on an imbalanced set
such as AdrenalMNIST3D (22 % positive) an unweighted probe predicts the majority class whatever the features hold.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from organfm.data.labelled import load_npz_volumes, volume_input
from organfm.evaluation.finetuning import class_weights, finetune_classification
from organfm.evaluation.metrics import CLASSIFICATION_METRICS
from organfm.evaluation.probes import SELECT_METRICS, linear_probe
from organfm.evaluation.protocol import ModelRun, classification_values, make_row, metric_lists, register_protocol
from organfm.evaluation.task_data import TaskDataConfig

__all__ = ["Finetune3DConfig", "finetune3d", "model_cube"]


@dataclass
class Finetune3DConfig:
    """Fine-tuned 3D classification (``finetune_classification`` on cubes)."""

    source: str | None = None  # default: data.source (a .npz with <split>_images / <split>_labels)
    image_size: int | None = None  # cube edge; default: the model contract's, else data.image_size
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.05
    patience: int = 5
    seeds: int = 1
    monitor: str = "auc"  # validation metric that picks the epoch (finetune) or the probe's head (linear)
    max_train: int | None = None  # the first N volumes of each split (CPU budgets)
    max_val: int | None = None
    max_test: int | None = None
    mode: str = "finetune"  # finetune (end to end) | linear (frozen pooled features + a linear probe)
    class_weight: str | None = None  # None | balanced (the loss weighted by N / (K N_k))


def model_cube(run: ModelRun, default: int | None) -> int:
    """The cube edge a model was pretrained on (its contract's 3D ``input_size``), else ``default``."""
    size = run.contract.get("input_size") or []
    if len(size) == 4:
        return int(size[-1])
    if default is None:
        raise ValueError(f"{run.name}: no 3D input_size in its contract; set finetune3d.image_size")
    return int(default)


@register_protocol("finetune3d", config=Finetune3DConfig, inputs="own", splits=())
def finetune3d(run: ModelRun, data: TaskDataConfig, settings: Finetune3DConfig) -> list[dict[str, Any]]:
    """One row: test AUC (and the other classification metrics) over ``finetune3d.seeds`` fits."""
    s = settings
    if s.mode not in ("finetune", "linear"):
        raise ValueError(f"finetune3d.mode must be finetune or linear, got {s.mode!r}")
    path = data.resolve(s.source or data.source)
    cube = s.image_size or model_cube(run, data.image_size)
    prep = volume_input(run.contract, cube=cube)
    splits = {name: load_npz_volumes(path, name, cube, limit, prep=prep,
                                     max_volume_voxels=data.max_volume_voxels,
                                     max_array_voxels=data.max_array_voxels)
              for name, limit in (("train", s.max_train), ("val", s.max_val), ("test", s.max_test))}
    num_classes = int(max(int(y.max()) for _, y in splits.values())) + 1
    sizes = [len(y) for _, y in splits.values()]
    if s.mode == "linear":
        return [_linear_row(run, splits, num_classes, cube, sizes, prep.describe(), s)]
    train, val, test = ((run.normalized(x), y) for x, y in splits.values())
    values: dict[str, list[float]] = {}
    epochs = []
    for k in range(s.seeds):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            out = finetune_classification(run.make_backbone, train, val, test, num_classes=num_classes,
                                          epochs=s.epochs, batch_size=s.batch_size, lr=s.lr,
                                          weight_decay=s.weight_decay, patience=s.patience, augment=False,
                                          monitor=s.monitor, seed=run.seed + k, device=run.device,
                                          class_weight=s.class_weight)
        for m in CLASSIFICATION_METRICS:
            values.setdefault(m, []).append(out["metrics"][m])
        epochs.append(int(out["best_epoch"]))
    return [make_row(run.name, "finetune3d", f"{sizes[0]} train volumes, {cube}^3", values, best_epoch=epochs,
                     volumes=sizes, input=prep.describe())]


def _linear_row(run: ModelRun, splits: dict[str, Any], num_classes: int, cube: int, sizes: list[int],
                prep: Any, s: Finetune3DConfig) -> dict[str, Any]:
    """The frozen-encoder row: pooled features of each split, a linear probe chosen on val, test metrics."""
    from organfm.features.extraction import extract_features

    backbone = run.make_backbone()
    feats = {name: extract_features(backbone, x, batch_size=run.batch_size, device=run.device,
                                    mean=run.mean, std=run.std) for name, (x, _) in splits.items()}
    (_, y_train), (_, y_val), (_, y_test) = splits.values()
    if s.monitor not in SELECT_METRICS:
        raise ValueError(f"finetune3d.mode=linear chooses its head by one of {', '.join(SELECT_METRICS)}; "
                         f"finetune3d.monitor is {s.monitor!r}")
    weight = class_weights(y_train, num_classes, s.class_weight, key="finetune3d.class_weight")
    out = linear_probe(feats["train"], y_train, feats["val"], y_val, feats["test"], num_classes=num_classes,
                       seed=run.seed, device=run.device, class_weight=weight, select=s.monitor)
    return make_row(run.name, "finetune3d", f"linear probe (frozen), {sizes[0]} train volumes, {cube}^3",
                    metric_lists(classification_values(y_test, out["test_probs"])), volumes=sizes, input=prep,
                    chosen={"lr": out["lr"], "weight_decay": out["weight_decay"],
                            "val_accuracy": out["val_accuracy"], f"val_{s.monitor}": out["val_score"],
                            "class_weight": s.class_weight})
