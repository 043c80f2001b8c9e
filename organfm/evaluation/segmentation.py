"""Segmentation protocol: fine-tune a U-Net on the pretrained encoder; Dice and IoU per class on test.

The network is ``organfm.heads.decoders.BackboneUNet``: the backbone's multi-scale feature maps as the
encoder (trained along, full fine-tuning), a random conv-BN-ReLU decoder with skip connections and
bilinear upsampling back to the input size. It is 2D now; the decoder builds its layers from the
encoder's ``spatial_dims``, so a 3D encoder (``spatial_dims = 3``, 5D skips) slots in unchanged, and
``segmentation_metrics`` already accepts (N, D, H, W) maps.

Real data: ``load_ct_segmentation_slices`` turns a CT volume and its label map (e.g. TotalSegmentator's)
into axial slices with organ masks, and ``split_slice_blocks`` splits them in contiguous blocks of slices,
so neighbouring (nearly identical) slices never sit on both sides of a split.

Loss: cross-entropy + soft Dice (foreground classes, pooled over the batch, smoothing 1) [0].

[0] Isensee et al. nnU-Net. Nature Methods 2021 (Dice + CE).
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from organfm.engine.param_groups import build_param_groups
from organfm.evaluation.finetune import train_with_early_stopping
from organfm.views.affine import random_affine
from organfm.evaluation.metrics import segmentation_metrics
from organfm.heads.decoders import BackboneUNet

__all__ = ["SegmentationSplit", "dice_ce_loss", "finetune_segmentation", "load_ct_segmentation_slices",
           "load_segmentation_split", "split_slice_blocks"]

_EVAL_BATCH = 64


# ------------------------------------------------------------------------------------------------------ data

def load_ct_segmentation_slices(image_path: str | os.PathLike[str], label_path: str | os.PathLike[str], *,
                                class_map: dict[int, str] | None, classes: Sequence[str] | None, size: int,
                                window: tuple[float, float] = (40, 400),
                                min_foreground: int = 10,
                                max_volume_voxels: int | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Axial slices of a CT volume with masks of the chosen organs, relabelled 0 (background) .. C.

    Both volumes are read with ``NiftiReader`` (display orientation, so image and label map line up when
    their affines agree). Each kept slice is windowed to [0, 1], padded to a square (air for the image,
    background for the mask) and resized to ``size`` (bilinear with antialiasing for the image, nearest
    for the mask; no resampling when the square side already equals ``size``).

    Args:
        image_path: CT volume (NIfTI), in HU.
        label_path: label map of the same grid (integer label ids).
        class_map: label id -> organ name (e.g. ``organfm.data.volumes.load_class_map(json, "total")``);
            None to use the raw ids, named ``"label_<id>"``.
        classes: organ names to segment, in the order of their new ids 1..C; None for every class of
            ``class_map`` present in the label map (ascending id). Other labels become background.
        size: side S of the square output slices.
        window: CT window ``(center, width)`` in HU mapped to [0, 1] (default soft tissue 40/400).
        min_foreground: keep a slice only if the chosen organs cover at least this many voxels in it
            (counted before resizing).

    Returns:
        ``(images (N, 1, S, S) float32 in [0, 1], masks (N, S, S) int64 in 0..C, class_names)`` with N
        the kept slices in ascending (inferior -> superior) order and ``class_names[0] == "background"``.
    """
    from organfm.data.errors import DataError
    from organfm.data.intensity import normalize_intensity
    from organfm.data.nifti import NiftiReader

    reader = NiftiReader(cache_size=0) if max_volume_voxels is None else \
        NiftiReader(cache_size=0, max_volume_voxels=max_volume_voxels)  # data.max_volume_voxels
    volume, _ = reader.read_volume(str(image_path))
    labels, _ = reader.read_volume(str(label_path))
    if labels.shape != volume.shape:
        raise DataError(f"{label_path}: label map shape {labels.shape} differs from image {volume.shape}")
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        labels = np.rint(labels)
    labels = labels.astype(np.int64)
    present = set(np.unique(labels).tolist()) - {0}
    if class_map is None:
        class_map = {int(i): f"label_{int(i)}" for i in sorted(present)}
    name_to_id = {name: int(i) for i, name in class_map.items() if int(i) != 0}
    if classes is None:
        classes = [class_map[i] for i in sorted(class_map) if i in present and i != 0]
    unknown = [c for c in classes if c not in name_to_id]
    if unknown:
        raise ValueError(f"classes not in the class map: {', '.join(unknown)}; valid: {', '.join(name_to_id)}")
    if not classes:
        raise ValueError("no classes to segment")
    lookup = np.zeros(max(int(labels.max()), max(name_to_id[c] for c in classes)) + 1, dtype=np.int64)
    for new_id, name in enumerate(classes, start=1):
        lookup[name_to_id[name]] = new_id
    masks = lookup[np.clip(labels, 0, None)]
    keep = np.flatnonzero((masks > 0).sum(axis=(1, 2)) >= min_foreground)
    if keep.size == 0:
        raise ValueError(f"no slice has >= {min_foreground} voxels of {', '.join(classes)}")
    images = torch.from_numpy(normalize_intensity(volume[keep], "window", window=window))[:, None]
    masks_t = torch.from_numpy(np.ascontiguousarray(masks[keep]))
    images, masks_t = _pad_square(images, masks_t)
    if images.shape[-1] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                               align_corners=False).clamp_(0, 1)
        masks_t = F.interpolate(masks_t[:, None].float(), size=(size, size), mode="nearest-exact")[:, 0].long()
    return images.contiguous(), masks_t.contiguous(), ["background", *classes]


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


def load_segmentation_split(task: Any) -> SegmentationSplit:
    """The one CT-segmentation loading sequence: a task's volume and label map -> train/val/test slices.

    Reads ``segmentation.image`` (default ``data.source``) and ``segmentation.label_map`` (default
    ``data.label_map``) under ``data.root``, names labels with ``data.class_map``/``data.class_map_key``,
    keeps ``segmentation.classes`` (``load_ct_segmentation_slices``) and splits the slices in blocks
    (``split_slice_blocks`` with ``segmentation.block_size``, ``fractions``, ``gap``).

    Args:
        task: a resolved ``TaskConfig`` (``organfm.evaluation.load_task``); change the slice size with the
            override ``segmentation.image_size=<S>``.

    Raises:
        ValueError: no image or label map named; FileNotFoundError: a file missing under ``data.root``.
    """
    from organfm.data.volumes import load_class_map

    s = task.segmentation
    image, label_map = task.data_path(s.image or task.data.source), task.data_path(s.label_map or task.data.label_map)
    if not image or not label_map:
        raise ValueError("segmentation needs segmentation.image (or data.source) and segmentation.label_map "
                         "(or data.label_map)")
    for what, path in (("image", image), ("label map", label_map)):
        if not os.path.exists(path):
            raise FileNotFoundError(f"segmentation {what} {path} not found (data.root={task.data.root!r}; unset: "
                                    "ORGANFM_DATA, else the shared/data folder beside the checkout)")
    class_map = load_class_map(task.data_path(task.data.class_map), task.data.class_map_key) \
        if task.data.class_map else None
    images, masks, names = load_ct_segmentation_slices(image, label_map, class_map=class_map, classes=s.classes,
                                                       size=s.image_size, window=tuple(s.window),
                                                       min_foreground=s.min_foreground,
                                                       max_volume_voxels=task.data.max_volume_voxels)
    parts = split_slice_blocks(len(images), block_size=s.block_size, fractions=s.fractions, gap=s.gap)
    train, val, test = ((images[p], masks[p]) for p in parts)
    return SegmentationSplit(train=train, val=val, test=test, class_names=names)


def _pad_square(images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = images.shape[-2:]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    pad = (left, side - w - left, top, side - h - top)
    return F.pad(images, pad, value=0.0), F.pad(masks, pad, value=0)  # 0 = air after windowing / background


def split_slice_blocks(num_slices: int, *, block_size: int = 8, fractions: Sequence[float] = (0.6, 0.2, 0.2),
                       gap: int = 1) -> tuple[np.ndarray, ...]:
    """Split slice positions ``0 .. num_slices-1`` into contiguous blocks, interleaved across splits.

    Blocks of ``block_size`` consecutive slices are dealt to the splits in turn, each block going to the
    split furthest below its share so far (for 0.6/0.2/0.2: train, val, train, test, train, ...), so
    every split samples the whole body range. Where two neighbouring blocks go to different splits, the
    first ``gap`` slices of the later block are dropped: slices on different sides are then at least
    ``gap + 1`` apart.

    Args:
        num_slices: N, e.g. ``len(images)`` from ``load_ct_segmentation_slices`` (positions in z order).
        block_size: slices per block.
        fractions: share of blocks per split (e.g. train, val, test); must sum to 1.
        gap: slices dropped at each boundary between splits.

    Returns:
        One sorted int64 index array per fraction.
    """
    fractions = [float(f) for f in fractions]
    if min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {fractions}")
    if block_size < 1 or gap < 0:
        raise ValueError("block_size must be >= 1 and gap >= 0")
    starts = list(range(0, num_slices, block_size))
    needed = sum(f > 0 for f in fractions)
    if len(starts) < needed:
        raise ValueError(f"{num_slices} slices make {len(starts)} blocks of {block_size}; {needed} splits need "
                         f"at least {needed} blocks (lower block_size)")
    assigned = [0] * len(fractions)
    owner = []
    for b in range(len(starts)):
        deficit = [f * (b + 1) - a for f, a in zip(fractions, assigned)]
        split = max(range(len(fractions)), key=lambda s: (deficit[s], -s))
        assigned[split] += 1
        owner.append(split)
    parts: list[list[int]] = [[] for _ in fractions]
    for b, start in enumerate(starts):
        first = start + (gap if b > 0 and owner[b] != owner[b - 1] else 0)
        parts[owner[b]].extend(range(first, min(start + block_size, num_slices)))
    return tuple(np.asarray(p, dtype=np.int64) for p in parts)


# ---------------------------------------------------------------------------------------------------- training

def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, *, smooth: float = 1.0) -> torch.Tensor:
    """Cross-entropy + (1 - soft Dice), Dice averaged over the foreground classes, pooled over the batch.

    Args:
        logits: (B, K, [D], H, W).
        target: (B, [D], H, W) int64 in 0..K-1.
        smooth: added to numerator and denominator, so a class absent from the batch and not predicted
            scores ~1 instead of 0/0.

    Returns:
        scalar loss.
    """
    num_classes = logits.shape[1]
    probs = logits.float().softmax(1)
    onehot = F.one_hot(target, num_classes).movedim(-1, 1).to(probs.dtype)
    dims = (0, *range(2, logits.ndim))
    inter = (probs * onehot).sum(dims)
    sizes = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + smooth) / (sizes + smooth)
    return F.cross_entropy(logits.float(), target) + (1 - dice[1:].mean() if num_classes > 1 else 0.0)


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
