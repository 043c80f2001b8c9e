"""CT organ segmentation: U-Net fine-tuning on axial slices of a volume, Dice/IoU per organ on test slices.

The network is ``organfm.heads.decoders.BackboneUNet``: the backbone's multi-scale feature maps as the
encoder (trained along, full fine-tuning), a random conv-BN-ReLU decoder with skip connections and
bilinear upsampling back to the input size. It is 2D now; the decoder builds its layers from the
encoder's ``spatial_dims``, so a 3D encoder (``spatial_dims = 3``, 5D skips) slots in unchanged, and
``segmentation_metrics`` already accepts (N, D, H, W) maps.

Real data: ``organfm.data.labelled.load_ct_segmentation_slices`` turns a CT volume and its label map (e.g.
TotalSegmentator's) into axial slices with organ masks, and ``organfm.data.slabs.split_slabs`` splits
them in contiguous blocks of slices, so neighbouring (nearly identical) slices never sit on both sides of a
split.

Loss: cross-entropy + soft Dice (``organfm.losses.dice_ce_loss``: foreground classes, pooled over the
batch, smoothing 1) [0]. The loop is ``organfm.evaluation.finetuning.train_with_early_stopping``.

[0] Isensee et al. nnU-Net. Nature Methods 2021 (Dice + CE).
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from organfm.data.labelled import load_ct_segmentation_slices
from organfm.data.slabs import split_slabs
from organfm.data.volumes import load_class_map
from organfm.engine.param_groups import build_param_groups
from organfm.evaluation.finetuning import train_with_early_stopping
from organfm.evaluation.metrics import segmentation_metrics
from organfm.evaluation.protocol import ModelRun, make_row, register_protocol
from organfm.evaluation.task_data import TaskDataConfig
from organfm.heads.decoders import BackboneUNet
from organfm.losses.dice_ce import dice_ce_loss
from organfm.views.affine import random_affine

__all__ = ["SegmentationConfig", "SegmentationSplit", "finetune_segmentation", "load_segmentation_split",
           "segmentation"]

_EVAL_BATCH = 64


@dataclass
class SegmentationConfig:
    """Slices (``load_segmentation_split``) and U-Net fine-tuning (``finetune_segmentation``)."""

    image: str | None = None  # default: data.source
    label_map: str | None = None  # default: data.label_map
    classes: list[str] | None = None  # organ names, ids 1..C in this order; None: every class present
    window: list[float] = field(default_factory=lambda: [40.0, 400.0])
    image_size: int = 64
    block_size: int = 8
    fractions: list[float] = field(default_factory=lambda: [0.6, 0.2, 0.2])
    gap: int = 1
    min_foreground: int = 10
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 10
    seeds: int = 1


@dataclass
class SegmentationSplit:
    """A task's CT slices and masks, split in slice blocks.

    Attributes:
        train, val, test: ``(images (N, 1, S, S) float32 in [0, 1] (not normalised), masks (N, S, S) int64)``.
        class_names: ``["background", organ_1, ..., organ_C]`` (mask ids 0..C).
        sizes: slices per split ``[train, val, test]``.
    """

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    class_names: list[str]

    @property
    def sizes(self) -> list[int]:
        return [len(self.train[1]), len(self.val[1]), len(self.test[1])]


def load_segmentation_split(data: TaskDataConfig, settings: SegmentationConfig) -> SegmentationSplit:
    """The one CT-segmentation loading sequence: a task's volume and label map -> train/val/test slices.

    Reads ``segmentation.image`` (default ``data.source``) and ``segmentation.label_map`` (default
    ``data.label_map``) under ``data.root``, names labels with ``data.class_map``/``data.class_map_key``,
    keeps ``segmentation.classes`` (``load_ct_segmentation_slices``) and splits the slices in blocks
    (``split_slabs`` with ``segmentation.block_size``, ``fractions``, ``gap``).

    Args:
        data: the task's ``data.*`` section (``root``, ``source``, ``label_map``, ``class_map``, caps).
        settings: the task's ``segmentation.*`` section; change the slice size with the override
            ``segmentation.image_size=<S>``.

    Raises:
        ValueError: no image or label map named; FileNotFoundError: a file missing under ``data.root``.
    """
    s = settings
    image, label_map = data.resolve(s.image or data.source), data.resolve(s.label_map or data.label_map)
    if not image or not label_map:
        raise ValueError("segmentation needs segmentation.image (or data.source) and segmentation.label_map "
                         "(or data.label_map)")
    for what, path in (("image", image), ("label map", label_map)):
        if not os.path.exists(path):
            raise FileNotFoundError(f"segmentation {what} {path} not found (data.root={data.root!r}; unset: "
                                    "ORGANFM_DATA, else the shared/data folder beside the checkout)")
    class_map = load_class_map(data.resolve(data.class_map), data.class_map_key) if data.class_map else None
    images, masks, names = load_ct_segmentation_slices(image, label_map, class_map=class_map, classes=s.classes,
                                                       size=s.image_size, window=tuple(s.window),
                                                       min_foreground=s.min_foreground,
                                                       max_volume_voxels=data.max_volume_voxels)
    parts = split_slabs(len(images), fractions=s.fractions, gap=s.gap, block_size=s.block_size)
    train, val, test = ((images[p], masks[p]) for p in parts)
    return SegmentationSplit(train=train, val=val, test=test, class_names=names)


@torch.no_grad()
def _score_segmentation(model: nn.Module, split: tuple[torch.Tensor, torch.Tensor], num_classes: int,
                        device: str) -> tuple[dict[str, Any], float]:
    model.eval()
    preds, losses = [], []
    for i in range(0, len(split[0]), _EVAL_BATCH):
        logits = model(split[0][i:i + _EVAL_BATCH].to(device))
        target = split[1][i:i + _EVAL_BATCH].to(device)
        losses.append(dice_ce_loss(logits, target).item() * len(target))
        preds.append(logits.argmax(1).cpu())
    return segmentation_metrics(torch.cat(preds), split[1], num_classes), float(sum(losses) / len(split[0]))


def finetune_segmentation(make_backbone: Callable[[], nn.Module], train: tuple[torch.Tensor, torch.Tensor],
                          val: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor], *,
                          num_classes: int, epochs: int = 30, batch_size: int = 16, lr: float = 1e-3,
                          weight_decay: float = 1e-4, patience: int = 10, seed: int = 0, device: str = "cpu",
                          augment: bool = True) -> dict[str, Any]:
    """Fine-tune a U-Net (pretrained encoder, random decoder) and score Dice/IoU on test at the best val Dice.

    Same loop as ``finetune_classification`` (AdamW, warmup + cosine, early stopping, best weights
    restored, deterministic for a seed); the model is ``BackboneUNet(make_backbone(), num_classes)``.

    Args:
        make_backbone: returns a FRESH backbone with the pretrained weights, meeting the backbone contract
            (``forward_skips``, ``skip_channels``, ``spatial_dims``; see ``organfm.heads.decoders``).
        train, val, test: ``(images (N, C, H, W) float32, scaled and normalised; masks (N, H, W) int64 in
            0..K-1)``. ConvNeXt encoders need H, W >= 32.
        num_classes: K, background (0) included.
        epochs, batch_size, lr, weight_decay, patience, seed, device: as in ``finetune_classification``;
            selection by validation mean Dice (foreground), ties broken by the lower validation loss.
        augment: random resized crop + small rotation, the same draw for image and mask (``random_affine``).

    Returns:
        ``{"metrics": segmentation_metrics on test (background ignored), "best_epoch": int (1-based),
        "val_metrics": at that epoch, "history": [{"epoch", "train_loss", "val_loss", "lr", "mean_dice",
        "mean_iou"}], "epochs_run": int, "stopped_early": bool}``.
    """
    for name, split in (("train", train), ("val", val), ("test", test)):
        images, masks = split
        if images.ndim < 4 or masks.ndim != images.ndim - 1 or images.shape[0] != masks.shape[0] \
                or images.shape[2:] != masks.shape[1:]:
            raise ValueError(f"{name}: expected images (N, C, H, W) and masks (N, H, W) of the same N and size, "
                             f"got {tuple(images.shape)} and {tuple(masks.shape)}")
        if images.shape[0] == 0:
            raise ValueError(f"{name} split is empty")
        if masks.min() < 0 or masks.max() >= num_classes:
            raise ValueError(f"{name} masks must lie in 0..{num_classes - 1}")
    images, masks = train[0], train[1].long()
    val, test = (val[0], val[1].long()), (test[0], test[1].long())
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = make_backbone()
        model = BackboneUNet(backbone, num_classes).to(device)
        groups = build_param_groups(backbone, model.decoder, head_prefix="decoder.")

        def compute_loss(indices: torch.Tensor) -> torch.Tensor:
            x, y = images[indices].to(device), masks[indices].to(device)
            if augment:
                x, y = random_affine(x, y, generator=generator)
            return dice_ce_loss(model(x), y)

        def validate() -> tuple[float, float, dict[str, Any]]:
            metrics, loss = _score_segmentation(model, val, num_classes, device)
            return metrics["mean_dice"], loss, {"mean_dice": metrics["mean_dice"], "mean_iou": metrics["mean_iou"]}

        fit = train_with_early_stopping(model, groups, num_train=len(images), compute_loss=compute_loss,
                                        validate=validate, epochs=epochs, batch_size=batch_size, lr=lr,
                                        weight_decay=weight_decay, patience=patience, generator=generator)
    val_metrics, _ = _score_segmentation(model, val, num_classes, device)
    test_metrics, _ = _score_segmentation(model, test, num_classes, device)
    missing = sorted(set(range(1, num_classes)) - set(test_metrics["dice"]))
    if missing:
        warnings.warn(f"classes {missing} are absent from the test masks and predictions: no Dice for them",
                      stacklevel=2)
    return {"metrics": test_metrics, "best_epoch": fit["best_epoch"], "val_metrics": val_metrics,
            "history": fit["history"], "epochs_run": fit["epochs_run"], "stopped_early": fit["stopped_early"]}


@register_protocol("segmentation", config=SegmentationConfig, inputs="own", splits=())
def segmentation(run: ModelRun, data: TaskDataConfig, settings: SegmentationConfig) -> list[dict[str, Any]]:
    """One row: mean and per-organ Dice/IoU over ``segmentation.seeds`` fits (NaN where an organ is absent)."""
    s = settings
    split = load_segmentation_split(data, s)
    train, val, test = ((run.normalized(x), y) for x, y in (split.train, split.val, split.test))
    names = split.class_names
    values: dict[str, list[float]] = {}
    for k in range(s.seeds):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # classes absent from a small test block: NaN below
            out = finetune_segmentation(run.make_backbone, train, val, test, num_classes=len(names), epochs=s.epochs,
                                        batch_size=s.batch_size, lr=s.lr, weight_decay=s.weight_decay,
                                        patience=s.patience, seed=run.seed + k, device=run.device)
        m = out["metrics"]
        flat = {"mean_dice": m["mean_dice"], "mean_iou": m["mean_iou"]}
        for c in range(1, len(names)):
            flat[f"dice_{names[c]}"] = m["dice"].get(c, float("nan"))
            flat[f"iou_{names[c]}"] = m["iou"].get(c, float("nan"))
        for key, value in flat.items():
            values.setdefault(key, []).append(value)
    sizes = split.sizes
    return [make_row(run.name, "segmentation", f"{'/'.join(map(str, sizes))} slices", values,
                     classes=names[1:], slices=sizes)]
