"""3D organ segmentation: a 3D U-Net on the encoder, patch training and sliding-window inference, Dice per organ.

The volume is prepared as the model's contract says (``organfm.data.labelled.volume_input``: its intensity
mode, then resampled to its ``spacing``, or resized whole to its cube as pretraining without a spacing did),
cut into contiguous train/val/test slabs along D (``organfm.data.slabs.split_slabs``; one scan: this measures
fitting within a scan, not generalisation to new patients); a ``BackboneUNet`` (the encoder plus a random
decoder) is trained on random patches of the contract's input size (``dice_ce_loss``, AdamW) and scored by Dice
per class on the test slab with MONAI's sliding-window inference.
"""
from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from organfm.data.labelled import VolumeInput, load_labelled_volume, volume_input
from organfm.data.slabs import split_slabs
from organfm.data.volumes import load_class_map
from organfm.evaluation.metrics import segmentation_metrics
from organfm.evaluation.protocol import ModelRun, make_row, register_protocol
from organfm.evaluation.task_data import TaskDataConfig
from organfm.heads.decoders import BackboneUNet
from organfm.losses.dice_ce import dice_ce_loss

__all__ = ["Segmentation3DConfig", "load_volume", "segmentation3d", "train_segmentation3d"]

_DEFAULT_PATCH = 32  # segmentation patch edge for a model whose contract names no 3D input size


@dataclass
class Segmentation3DConfig:
    """3D U-Net segmentation of one labelled volume (``train_segmentation3d``)."""

    image: str | None = None  # default: data.source
    label_map: str | None = None  # default: data.label_map
    classes: list[str] = field(default_factory=lambda: ["liver", "spleen", "kidney_left", "kidney_right"])
    # None: the model contract's (volume_input); set, they override it for every model of the task
    window: list[float] | None = None  # CT window (centre, width) in HU instead of the contract's intensity
    spacing: list[float] | None = None  # resample to this voxel size (mm) instead of the contract's
    patch_size: int | None = None  # training patch and sliding window edge; None: the contract's cube, else 32
    fractions: list[float] = field(default_factory=lambda: [0.6, 0.2, 0.2])
    gap: int = 2  # slices dropped between slabs
    iterations: int = 200
    val_every: int = 50
    batch_size: int = 2
    lr: float = 1e-3
    weight_decay: float = 1e-4
    overlap: float = 0.25  # sliding-window overlap
    seeds: int = 1


def load_volume(data: TaskDataConfig, settings: Segmentation3DConfig,
                prep: VolumeInput | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The task's labelled volume: ``(image (D, H, W) in [0, 1], labels (D, H, W) int64 in 0..C, class names)``.

    Args:
        data: the task's ``data.*`` section (``label_map``, ``class_map``, caps; paths under ``root``).
        settings: the task's ``segmentation3d.*`` section (``image``, ``label_map``, ``classes``).
        prep: the model's preprocessing (``volume_input``); None: from ``settings`` alone (no contract).

    Raises:
        ValueError: no label map or class map named.
    """
    s = settings
    prep = prep if prep is not None else volume_input({}, window=s.window, spacing=s.spacing)
    image_path = data.resolve(s.image or data.source)
    label_path = data.resolve(s.label_map or data.label_map)
    if not label_path or not data.class_map:
        raise ValueError("segmentation3d needs data.label_map and data.class_map")
    class_map = load_class_map(data.resolve(data.class_map), data.class_map_key)
    return load_labelled_volume(image_path, label_path, class_map=class_map, classes=s.classes, prep=prep,
                                max_volume_voxels=data.max_volume_voxels, what="segmentation3d.classes")


def _random_patch(image: torch.Tensor, target: torch.Tensor, size: int,
                  g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``size``³ patch (zero-padded where the slab is smaller), centred on foreground half of the time."""
    pad = [max(0, size - n) for n in image.shape]
    if any(pad):
        spec = [p for n in reversed(pad) for p in (n // 2, n - n // 2)]
        image, target = F.pad(image, spec), F.pad(target, spec)
    fg = torch.nonzero(target > 0)
    if len(fg) and torch.rand((), generator=g).item() < 0.5:
        center = fg[torch.randint(len(fg), (), generator=g)]
        starts = [int(min(max(c - size // 2, 0), n - size)) for c, n in zip(center.tolist(), image.shape)]
    else:
        starts = [int(torch.randint(n - size + 1, (), generator=g)) for n in image.shape]
    sl = tuple(slice(a, a + size) for a in starts)
    return image[sl], target[sl]


@torch.no_grad()
def _sliding_predict(model: torch.nn.Module, image: torch.Tensor, patch: int, overlap: float,
                     device: str) -> torch.Tensor:
    """(D, H, W) -> predicted labels (D, H, W): MONAI sliding windows of ``patch``³, Gaussian-weighted."""
    from monai.inferers import sliding_window_inference

    model.eval()
    logits = sliding_window_inference(image[None, None].to(device), (patch,) * 3, 4, model, overlap=overlap,
                                      mode="gaussian")
    return logits.argmax(1)[0].cpu()


def train_segmentation3d(make_backbone: Callable[[], nn.Module], normalize: Callable[[torch.Tensor], torch.Tensor],
                         image: torch.Tensor, target: torch.Tensor, num_classes: int, s: Segmentation3DConfig, *,
                         seed: int, device: str = "cpu") -> dict[str, Any]:
    """Train a ``BackboneUNet`` on random patches of the train slab, keep the best validation Dice, score test.

    Args:
        make_backbone: a FRESH encoder with the weights under test.
        normalize: (N, 1, D, H, W) in [0, 1] -> the model's input scaling.
        image, target: (D, H, W) volume in [0, 1] and labels 0..C-1.
        num_classes: C with background.
        s: the settings.
        seed: patch order and decoder initialisation.

    Returns:
        ``{"metrics": segmentation_metrics on the test slab, "best_iteration": int, "slabs": [train, val, test]}``.
    """
    if s.patch_size is None:
        s = dataclasses.replace(s, patch_size=_DEFAULT_PATCH)
    train_sl, val_sl, test_sl = split_slabs(image.shape[0], s.fractions, s.gap)
    x = normalize(image[None, None])[0, 0]
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BackboneUNet(make_backbone(), num_classes).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    best, best_state, best_it = -1.0, None, 0
    for it in range(1, s.iterations + 1):
        model.train()
        patches = [_random_patch(x[train_sl], target[train_sl], s.patch_size, g) for _ in range(s.batch_size)]
        xb = torch.stack([p[0] for p in patches])[:, None].to(device)
        yb = torch.stack([p[1] for p in patches]).to(device)
        loss = dice_ce_loss(model(xb), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if it % s.val_every == 0 or it == s.iterations:
            pred = _sliding_predict(model, x[val_sl], s.patch_size, s.overlap, device)
            score = segmentation_metrics(pred[None], target[val_sl][None], num_classes)["mean_dice"]
            score = -0.5 if np.isnan(score) else score
            if score > best:
                best, best_state, best_it = score, copy.deepcopy(model.state_dict()), it
    model.load_state_dict(best_state)
    pred = _sliding_predict(model, x[test_sl], s.patch_size, s.overlap, device)
    sizes = [sl.stop - sl.start for sl in (train_sl, val_sl, test_sl)]
    return {"metrics": segmentation_metrics(pred[None], target[test_sl][None], num_classes), "best_iteration": best_it,
            "slabs": sizes}


@register_protocol("segmentation3d", config=Segmentation3DConfig, inputs="own", splits=())
def segmentation3d(run: ModelRun, data: TaskDataConfig, settings: Segmentation3DConfig) -> list[dict[str, Any]]:
    """One row: mean and per-organ Dice on the test slab over ``segmentation3d.seeds`` fits."""
    s = settings
    prep = volume_input(run.contract, window=s.window, spacing=s.spacing)
    image, target, names = load_volume(data, s, prep)
    # the encoder was pretrained on (1, S, S, S) inputs: train and infer on patches of that size
    s = dataclasses.replace(s, patch_size=s.patch_size or prep.cube or _DEFAULT_PATCH)
    values: dict[str, list[float]] = {}
    out: dict[str, Any] = {}
    for k in range(s.seeds):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            out = train_segmentation3d(run.make_backbone, run.normalized, image, target, len(names), s,
                                       seed=run.seed + k, device=run.device)
        m = out["metrics"]
        values.setdefault("mean_dice", []).append(m["mean_dice"])
        for c in range(1, len(names)):
            values.setdefault(f"dice_{names[c]}", []).append(m["dice"].get(c, float("nan")))
    return [make_row(run.name, "segmentation3d", f"{'/'.join(map(str, out['slabs']))} slices, patch {s.patch_size}^3",
                     values, classes=names[1:], slabs=out["slabs"], input=prep.describe(),
                     image_shape=list(image.shape), patch_size=s.patch_size)]
