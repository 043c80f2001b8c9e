"""3D organ segmentation: a 3D U-Net on the encoder, patch training and sliding-window inference, Dice per organ.

The volume is prepared as the model's contract says (``organfm.data.labelled.volume_input``: its intensity
mode, then resampled to its ``spacing``, or resized whole to its cube as pretraining without a spacing did),
cut into contiguous train/val/test slabs along D (``organfm.data.slabs.split_slabs`` with ``block_size=None``;
one scan: this measures fitting within a scan, not generalisation to new patients); a ``BackboneUNet`` (the
encoder plus a random decoder) is trained on random patches of the contract's input size (``dice_ce_loss``)
through the shared fine-tuning loop (the engine's parameter groups, warmup + cosine lr;
``organfm.evaluation.finetuning``) and scored by Dice per class on the test slab with MONAI's sliding-window
inference.

With ``segmentation3d.subjects=synthetic`` the protocol measures generalisation to new subjects instead: whole
subjects of a synthetic label-map world (one anatomy template, warped and re-rendered per subject) are split into
train, val and test subjects, and every label is scored on the test subjects.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from organfm.data.labelled import VolumeInput, load_labelled_volume, volume_input
from organfm.data.slabs import split_slabs
from organfm.data.volumes import load_class_map
from organfm.engine.param_groups import build_param_groups
from organfm.evaluation.finetuning import train_with_early_stopping
from organfm.evaluation.metrics import segmentation_metrics
from organfm.evaluation.protocol import ModelRun, make_row, register_protocol
from organfm.evaluation.task_data import TaskDataConfig
from organfm.heads.decoders import BackboneUNet
from organfm.losses.dice_ce import dice_ce_loss

__all__ = ["Segmentation3DConfig", "Volume", "fit_segmentation3d", "load_volume", "segmentation3d",
           "train_segmentation3d"]

_DEFAULT_PATCH = 32  # segmentation patch edge for a model whose contract names no 3D input size
Volume = tuple[torch.Tensor, torch.Tensor]  # (image (D, H, W), labels (D, H, W) int64)


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
    lr: float = 1e-3  # peak lr: linear warmup, then cosine to 1% (organfm.evaluation.finetuning)
    weight_decay: float = 1e-4  # on weights only, not biases and norms (organfm.engine.param_groups)
    layer_decay: float | None = None  # layer-wise lr decay of the encoder (e.g. 0.75); None: one lr
    overlap: float = 0.25  # sliding-window overlap
    seeds: int = 1
    # "synthetic": instead of slabs of one scan, whole held-out subjects of a synthetic label-map world
    # (``SyntheticOrgans``, 3D: one anatomy template warped per subject, per-label tissue intensities jittered per
    # subject, RaSD's appearance model), train on some subjects and test on others; every label is scored
    subjects: str | None = None
    num_subjects: list[int] = field(default_factory=lambda: [16, 8, 16])  # train / val / test subjects
    num_labels: int = 4
    subject_seed: int = 1000  # the world (template and subjects); not a pretraining stream's seed
    subject_size: int | None = None  # cube edge; None: the contract's cube, else 32


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
def _sliding_logits(model: torch.nn.Module, image: torch.Tensor, patch: int, overlap: float,
                    device: str) -> torch.Tensor:
    """(D, H, W) -> logits (1, C, D, H, W) on ``device``: MONAI sliding windows of ``patch``³, Gaussian-weighted."""
    from monai.inferers import sliding_window_inference

    model.eval()
    return sliding_window_inference(image[None, None].to(device), (patch,) * 3, 4, model, overlap=overlap,
                                    mode="gaussian")


def fit_segmentation3d(make_backbone: Callable[[], nn.Module], train: Sequence[Volume], val: Sequence[Volume],
                       test: Sequence[Volume], num_classes: int, s: Segmentation3DConfig, *, seed: int,
                       device: str = "cpu", ignore_background: bool = True,
                       on_step: Callable[[int, torch.optim.Optimizer], None] | None = None) -> dict[str, Any]:
    """Train a ``BackboneUNet`` on random patches of the train volumes, keep the best validation Dice, score test.

    Training is the shared fine-tuning loop (``organfm.evaluation.finetuning.train_with_early_stopping``): the
    engine's parameter groups (no weight decay on biases and norms, optional layer-wise lr decay) and its
    warmup + cosine lr schedule. One of the loop's "epochs" is ``val_every`` iterations, each a batch of
    ``batch_size`` random patches (each from a train volume drawn at random); the validation volumes are scored
    after each (mean of their Dice; ties broken by the lower validation loss) and the best weights are restored
    before the test volumes are scored.

    Args:
        make_backbone: a FRESH encoder with the weights under test.
        train, val, test: ``(image (D, H, W) in the model's input scaling, labels (D, H, W) int64 0..C-1)`` pairs:
            slabs of one scan, or whole subjects.
        num_classes: C with background.
        s: the settings (``iterations`` is rounded up to a multiple of ``val_every``).
        seed: patch draws and decoder initialisation.
        device: where to train.
        ignore_background: leave class 0 out of the Dice means (False when class 0 is a tissue too).
        on_step: called as ``on_step(step, optimizer)`` before each update (tests, logging).

    Returns:
        ``{"metrics": segmentation_metrics pooled over the test volumes, "per_volume": segmentation_metrics of
        each test volume, "best_iteration": int, "history": the loop's per-validation records}``.

    Raises:
        ValueError: ``batch_size`` < 2, ``iterations`` / ``val_every`` < 1, or no train, val or test volume.
    """
    if s.batch_size < 2:
        # the shared loop drops single-sample batches (batch norm); say so instead of training nothing
        raise ValueError(f"segmentation3d.batch_size must be >= 2, got {s.batch_size}")
    if s.iterations < 1 or s.val_every < 1:
        raise ValueError(f"segmentation3d.iterations and val_every must be >= 1, got {s.iterations}, {s.val_every}")
    if not (train and val and test):
        raise ValueError(f"segmentation needs train, val and test volumes, got {len(train)}, {len(val)}, {len(test)}")
    patch = s.patch_size or _DEFAULT_PATCH
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = make_backbone()
        model = BackboneUNet(backbone, num_classes).to(device)
    groups = build_param_groups(backbone, model.decoder, layer_decay=s.layer_decay, head_prefix="decoder.")

    def scores(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        logits = _sliding_logits(model, x, patch, s.overlap, device)
        return logits, segmentation_metrics(logits.argmax(1).cpu(), y[None], num_classes,
                                            ignore_background=ignore_background)

    def compute_loss(indices: torch.Tensor) -> torch.Tensor:
        # patches are drawn fresh each step, so the loop's sample indices only give the batch size
        picks = torch.randint(len(train), (len(indices),), generator=g).tolist()
        patches = [_random_patch(*train[i], patch, g) for i in picks]
        xb = torch.stack([p[0] for p in patches])[:, None].to(device)
        yb = torch.stack([p[1] for p in patches]).to(device)
        return dice_ce_loss(model(xb), yb)

    def validate() -> tuple[float, float, dict[str, Any]]:
        dice, losses = [], []
        for x, y in val:
            logits, m = scores(x, y)
            losses.append(float(dice_ce_loss(logits, y[None].to(logits.device)).item()))
            dice.append(m["mean_dice"])
        score = float(np.nanmean(dice)) if not all(math.isnan(d) for d in dice) else math.nan
        return score, float(np.mean(losses)), {"mean_dice": score}

    num_checks = math.ceil(s.iterations / s.val_every)
    # no early stopping: patience = every check, so the loop runs all iterations and keeps the best check
    fit = train_with_early_stopping(model, groups, num_train=s.val_every * s.batch_size, compute_loss=compute_loss,
                                    validate=validate, epochs=num_checks, batch_size=s.batch_size, lr=s.lr,
                                    weight_decay=s.weight_decay, patience=num_checks, generator=g, on_step=on_step)
    preds = [_sliding_logits(model, x, patch, s.overlap, device).argmax(1)[0].cpu() for x, _ in test]
    per_volume = [segmentation_metrics(p[None], y[None], num_classes, ignore_background=ignore_background)
                  for p, (_, y) in zip(preds, test)]
    pooled = segmentation_metrics(torch.cat([p.flatten() for p in preds]), torch.cat([y.flatten() for _, y in test]),
                                  num_classes, ignore_background=ignore_background)
    return {"metrics": pooled, "per_volume": per_volume, "best_iteration": fit["best_epoch"] * s.val_every,
            "history": fit["history"]}


def train_segmentation3d(make_backbone: Callable[[], nn.Module], normalize: Callable[[torch.Tensor], torch.Tensor],
                         image: torch.Tensor, target: torch.Tensor, num_classes: int, s: Segmentation3DConfig, *,
                         seed: int, device: str = "cpu",
                         on_step: Callable[[int, torch.optim.Optimizer], None] | None = None) -> dict[str, Any]:
    """:func:`fit_segmentation3d` on contiguous train/val/test slabs of one volume along D.

    Args:
        make_backbone: a FRESH encoder with the weights under test.
        normalize: (N, 1, D, H, W) in [0, 1] -> the model's input scaling.
        image, target: (D, H, W) volume in [0, 1] and labels 0..C-1.
        num_classes, s, seed, device, on_step: as :func:`fit_segmentation3d`.

    Returns:
        :func:`fit_segmentation3d`'s result (``metrics`` on the test slab) with ``slabs``: [train, val, test]
        slice counts.
    """
    splits = [torch.from_numpy(i) for i in split_slabs(image.shape[0], fractions=s.fractions, gap=s.gap,
                                                         block_size=None)]
    x = normalize(image[None, None])[0, 0]
    train, val, test = ([(x[i], target[i])] for i in splits)
    out = fit_segmentation3d(make_backbone, train, val, test, num_classes, s, seed=seed, device=device,
                             on_step=on_step)
    return {**out, "slabs": [len(i) for i in splits]}


def synthetic_subjects(s: Segmentation3DConfig, size: int) -> tuple[list[Volume], list[Volume], list[Volume]]:
    """Train, val and test subjects ``(image (S, S, S) in [0, 1], labels (S, S, S))`` of the synthetic label-map
    world ``s.subject_seed``: disjoint items of one ``SyntheticOrgans`` anatomy template."""
    from organfm.synthesis.organs import LABEL_MAP, SyntheticOrgans

    if s.subjects != "synthetic":
        raise ValueError(f"segmentation3d.subjects must be 'synthetic' or null, got {s.subjects!r}")
    if len(s.num_subjects) != 3 or min(s.num_subjects) < 1:
        raise ValueError(f"segmentation3d.num_subjects must be [train, val, test] counts >= 1, got {s.num_subjects}")
    world = SyntheticOrgans(num_organs=1, images_per_organ=sum(s.num_subjects), size=size, dim=3,
                            num_labels=s.num_labels, seed=s.subject_seed, return_labels=True)
    items = [world[i] for i in range(len(world))]
    volumes = [(item["image"][0], item[LABEL_MAP][0].long()) for item in items]  # both (1, S, S, S)
    a, b = s.num_subjects[0], s.num_subjects[0] + s.num_subjects[1]
    return volumes[:a], volumes[a:b], volumes[b:]


def _segment_subjects(run: ModelRun, s: Segmentation3DConfig) -> list[dict[str, Any]]:
    """The ``subjects`` mode: one row, mean over test subjects of their Dice (every label), per label too."""
    size = s.subject_size or volume_input(run.contract).cube or _DEFAULT_PATCH
    train, val, test = synthetic_subjects(s, size)
    norm = lambda v: [(run.normalized(x[None, None])[0, 0], y) for x, y in v]  # noqa: E731
    train, val, test = norm(train), norm(val), norm(test)
    s = dataclasses.replace(s, patch_size=s.patch_size or size)
    names = [f"label_{k}" for k in range(s.num_labels)]
    values: dict[str, list[float]] = {}
    best = []
    for k in range(s.seeds):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            out = fit_segmentation3d(run.make_backbone, train, val, test, s.num_labels, s, seed=run.seed + k,
                                     device=run.device, ignore_background=False)
        per = out["per_volume"]
        values.setdefault("mean_dice", []).append(float(np.nanmean([m["mean_dice"] for m in per])))
        values.setdefault("pooled_dice", []).append(out["metrics"]["mean_dice"])
        for c, name in enumerate(names):
            values.setdefault(f"dice_{name}", []).append(float(np.nanmean([m["dice"].get(c, math.nan) for m in per])))
        best.append(out["best_iteration"])
    n_train, n_val, n_test = s.num_subjects
    return [make_row(run.name, "segmentation3d", f"{n_train}/{n_val}/{n_test} synthetic subjects, {s.num_labels} "
                     f"labels, {size}^3, patch {s.patch_size}^3", values, classes=names, subjects=list(s.num_subjects),
                     world={"generator": "SyntheticOrgans", "seed": s.subject_seed, "size": size,
                            "num_labels": s.num_labels}, best_iteration=best, patch_size=s.patch_size)]


@register_protocol("segmentation3d", config=Segmentation3DConfig, inputs="own", splits=())
def segmentation3d(run: ModelRun, data: TaskDataConfig, settings: Segmentation3DConfig) -> list[dict[str, Any]]:
    """One row: mean and per-organ Dice on the test slab (``subjects``: over the test subjects) over
    ``segmentation3d.seeds`` fits."""
    s = settings
    if s.subjects is not None:
        return _segment_subjects(run, s)
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
