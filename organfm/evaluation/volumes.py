"""3D evaluation: fine-tuned volume classification (AUC) and 3D U-Net segmentation with sliding-window inference.

``finetune3d`` reads ``<split>_images`` (N, D, H, W) and ``<split>_labels`` of a ``.npz`` (MedMNIST 3D),
preprocesses each volume as the model's contract says (:func:`volume_input`; ``preprocess_volume``: its
intensity mode, e.g. Triad's percentile clip and min-max, and resize to its cube) and fine-tunes the encoder
plus a linear layer end to end.

``segmentation3d`` segments organs in a volume with a NIfTI label map: the volume is prepared as the model's
contract says (:func:`volume_input`: its intensity mode, then resampled to its ``spacing``, or resized whole to
its cube as pretraining without a spacing did), cut into contiguous train/val/test slabs along D (one scan:
this measures fitting within a scan, not generalisation to new patients); a ``BackboneUNet`` (the encoder plus
a random decoder) is trained on random patches of the contract's input size and scored by Dice per class on
the test slab with MONAI's sliding-window inference.
"""
from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from organfm.data.errors import DataError
from organfm.data.intensity import normalize_intensity
from organfm.data.volume_set import preprocess_volume
from organfm.data.voxel_cap import (DEFAULT_MAX_ARRAY_VOXELS, DEFAULT_MAX_VOLUME_VOXELS, check_voxels,
                                    load_npz_array, npz_headers)
from organfm.evaluation.protocol import ModelRun, make_row, register_protocol

__all__ = ["Finetune3DConfig", "Segmentation3DConfig", "VolumeInput", "finetune3d", "load_labelled_volume",
           "load_npz_volumes", "model_cube", "segmentation3d", "train_segmentation3d", "volume_input"]

# a contract without an intensity (random:/timm: models): 3D pretraining's own mapping, which suits CT and MR
_DEFAULT_INTENSITY = {"mode": "percentile", "percentiles": [0.5, 99.5], "window": None}
_DEFAULT_PATCH = 32  # segmentation patch edge for a model whose contract names no 3D input size


@dataclass(frozen=True)
class VolumeInput:
    """How one model's volumes are prepared: its contract's 3D preprocessing, or the task settings overriding it.

    Attributes:
        intensity: ``mode`` (an ``organfm.data.intensity`` mode), ``window`` (centre, width), ``percentiles``.
        spacing: (D, H, W) voxel size in mm to resample to; None: no resampling to a voxel size.
        cube: the edge S of the model's (1, S, S, S) input; None when its contract names no 3D input size.
    """

    intensity: dict[str, Any]
    spacing: tuple[float, ...] | None
    cube: int | None

    def scale(self, volume: np.ndarray, dtype: str | None = None) -> np.ndarray:
        """(D, H, W) voxels in modality units -> float32 in [0, 1] by ``intensity`` (``dtype``: the stored one)."""
        return normalize_intensity(volume, self.intensity["mode"], window=self.intensity.get("window"),
                                   percentiles=self.intensity.get("percentiles") or (0.5, 99.5), dtype=dtype)

    def describe(self) -> dict[str, Any]:
        """What a results row records about the input."""
        return {"intensity": self.intensity["mode"], "window": self.intensity.get("window"),
                "spacing": list(self.spacing) if self.spacing else None, "cube": self.cube}


def volume_input(contract: Mapping[str, Any], *, window: Sequence[float] | None = None,
                 spacing: Sequence[float] | None = None, cube: int | None = None) -> VolumeInput:
    """The 3D preprocessing a model was pretrained with, read from its contract (``backbone.json``).

    Args:
        contract: the model's contract: ``intensity`` (``mode``, ``percentiles``, ``window``, ``spacing``) and
            ``input_size`` (1, D, H, W); a contract without them gets 3D pretraining's percentile clip, no
            resampling and no cube.
        window: (centre, width): window the volume instead of the contract's intensity (a task that pins it).
        spacing: resample to this voxel size instead of the contract's.
        cube: the input edge instead of the contract's.
    """
    raw = contract.get("intensity")
    raw = raw if isinstance(raw, Mapping) else ({"mode": raw} if raw else {})
    if window is not None:
        intensity = {"mode": "window", "window": [float(w) for w in window]}
    elif raw.get("mode"):
        mode = str(raw["mode"])
        intensity = {"mode": "percentile" if mode == "percentile_minmax" else mode, "window": raw.get("window"),
                     "percentiles": raw.get("percentiles")}
    else:
        intensity = dict(_DEFAULT_INTENSITY)
    target = spacing if spacing is not None else raw.get("spacing")
    size = contract.get("input_size") or []
    edge = cube if cube is not None else (int(size[-1]) if len(size) == 4 else None)
    return VolumeInput(intensity=intensity, spacing=tuple(float(x) for x in target) if target else None, cube=edge)


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
    monitor: str = "auc"
    max_train: int | None = None  # the first N volumes of each split (CPU budgets)
    max_val: int | None = None
    max_test: int | None = None


def model_cube(run: ModelRun, default: int | None) -> int:
    """The cube edge a model was pretrained on (its contract's 3D ``input_size``), else ``default``."""
    size = run.contract.get("input_size") or []
    if len(size) == 4:
        return int(size[-1])
    if default is None:
        raise ValueError(f"{run.name}: no 3D input_size in its contract; set finetune3d.image_size")
    return int(default)


def load_npz_volumes(path: str, split: str, cube: int, limit: int | None = None, *,
                     prep: VolumeInput | None = None, max_volume_voxels: int = DEFAULT_MAX_VOLUME_VOXELS,
                     max_array_voxels: int = DEFAULT_MAX_ARRAY_VOXELS) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images (N, 1, S, S, S) in [0, 1], labels (N,) int64)`` of one split of a MedMNIST-3D-style ``.npz``.

    The arrays' ``.npy`` headers are checked against ``max_array_voxels`` (each row against
    ``max_volume_voxels``) before anything is inflated (``organfm.data.voxel_cap``).

    Args:
        prep: the model's preprocessing (:func:`volume_input`): its intensity, and its spacing where the npz
            has a ``<split>_spacing`` array (N, 3); None: pretraining's percentile clip and cube resize.
    """
    headers = npz_headers(path, where=path)
    missing = [k for k in (f"{split}_images", f"{split}_labels") if k not in headers]
    if missing:
        raise DataError(f"{path}: no '{missing[0]}' array (a 3D classification npz has <split>_images and "
                        "<split>_labels)")
    check_voxels(headers[f"{split}_images"][0][1:], where=f"{path}::{split}_images", cap=max_volume_voxels,
                 what="each row declares")
    images, labels = (load_npz_array(path, f"{split}_{k}", where=path, max_voxels=max_array_voxels)
                      for k in ("images", "labels"))
    if images.ndim != 4:
        raise DataError(f"{path}: {split}_images has shape {images.shape}; 3D volumes (N, D, H, W) expected")
    n = len(images) if limit is None else min(limit, len(images))
    intensity = None if prep is None else dict(prep.intensity, dtype=str(images.dtype))
    spacings = None
    if prep is not None and prep.spacing is not None:
        if f"{split}_spacing" in headers:
            spacings = load_npz_array(path, f"{split}_spacing", where=path, max_voxels=max_array_voxels)
        else:  # MedMNIST holds no voxel size: the contract's resampling cannot be followed, only its cube
            warnings.warn(f"{path}: no '{split}_spacing' array, so volumes are resized to the {cube}^3 cube "
                          f"instead of resampled to the model's {list(prep.spacing)} mm", stacklevel=2)
    cubes = [preprocess_volume(images[i], cube=cube, where=f"{path}[{split}_images][{i}]", intensity=intensity,
                               spacing=None if spacings is None else [float(x) for x in spacings[i]],
                               target_spacing=None if spacings is None else prep.spacing)  # type: ignore[union-attr]
             for i in range(n)]
    return torch.stack(cubes)[:, None], torch.as_tensor(np.asarray(labels[:n]).reshape(n, -1)[:, 0], dtype=torch.long)


@register_protocol("finetune3d", config=Finetune3DConfig, inputs="own", splits=())
def finetune3d(run: ModelRun, data: Any = None) -> list[dict[str, Any]]:
    """One row: test AUC (and the other classification metrics) over ``finetune3d.seeds`` fits."""
    from organfm.evaluation.finetune import finetune_classification
    from organfm.evaluation.metrics import CLASSIFICATION_METRICS

    task, s = run.task, run.task.finetune3d
    path = task.data_path(s.source or task.data.source)
    cube = s.image_size or model_cube(run, task.data.image_size)
    prep = volume_input(run.contract, cube=cube)
    splits = {name: load_npz_volumes(path, name, cube, limit, prep=prep, max_volume_voxels=task.data.max_volume_voxels,
                                     max_array_voxels=task.data.max_array_voxels)
              for name, limit in (("train", s.max_train), ("val", s.max_val), ("test", s.max_test))}
    num_classes = int(max(int(y.max()) for _, y in splits.values())) + 1
    train, val, test = ((run.normalized(x), y) for x, y in splits.values())
    values: dict[str, list[float]] = {}
    epochs = []
    for k in range(s.seeds):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            out = finetune_classification(run.make_backbone, train, val, test, num_classes=num_classes,
                                          epochs=s.epochs, batch_size=s.batch_size, lr=s.lr,
                                          weight_decay=s.weight_decay, patience=s.patience, augment=False,
                                          monitor=s.monitor, seed=task.seed + k, device=run.device)
        for m in CLASSIFICATION_METRICS:
            values.setdefault(m, []).append(out["metrics"][m])
        epochs.append(int(out["best_epoch"]))
    sizes = [len(y) for _, y in splits.values()]
    return [make_row(run.name, "finetune3d", f"{sizes[0]} train volumes, {cube}^3", values, best_epoch=epochs,
                     volumes=sizes, input=prep.describe())]


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


def load_labelled_volume(task: Any, s: Segmentation3DConfig,
                         prep: VolumeInput | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``(image (D, H, W) in [0, 1], labels (D, H, W) int64 in 0..C, class names with background)``.

    Args:
        task: the task (``data.*`` paths and caps).
        s: the settings.
        prep: the model's preprocessing (:func:`volume_input`); None: from ``s`` alone (no contract). The image
            is scaled by its intensity, then resampled to its spacing; without a spacing but with a cube, the
            whole volume is resized to the cube, as 3D pretraining without a spacing fed it.
    """
    prep = prep if prep is not None else volume_input({}, window=s.window, spacing=s.spacing)
    from organfm.data.nifti import NiftiReader
    from organfm.data.volumes import load_class_map

    image_path = task.data_path(s.image or task.data.source)
    label_path = task.data_path(s.label_map or task.data.label_map)
    if not label_path or not task.data.class_map:
        raise ValueError("segmentation3d needs data.label_map and data.class_map")
    class_map = load_class_map(task.data_path(task.data.class_map), task.data.class_map_key)
    reader = NiftiReader(cache_size=0, max_volume_voxels=task.data.max_volume_voxels)
    volume, meta = reader.read_volume(image_path)
    labels, _ = reader.read_volume(label_path)
    if volume.shape != labels.shape:
        raise DataError(f"{label_path}: label map shape {labels.shape} differs from image {image_path} {volume.shape}")
    ids = {name: i for i, name in class_map.items()}
    unknown = [c for c in s.classes if c not in ids]
    if unknown:
        raise ValueError(f"segmentation3d.classes not in the class map: {', '.join(unknown)}")
    raw = np.rint(np.asarray(labels)).astype(np.int64)
    target = np.zeros_like(raw)
    for k, name in enumerate(s.classes, start=1):
        target[raw == ids[name]] = k
    x = prep.scale(np.asarray(volume), dtype=meta.get("dtype"))
    image_t, target_t = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(target)
    size = None
    if prep.spacing is not None:
        size = [max(1, round(n * a / b)) for n, a, b in zip(x.shape, meta["spacing"], prep.spacing)]
    elif prep.cube is not None:
        # pretraining squeezed each whole volume into the cube: the encoder knows anatomy at that scale only
        size = [prep.cube] * 3
    if size is not None and list(size) != list(x.shape):
        image_t = F.interpolate(image_t[None, None], size=size, mode="trilinear", align_corners=False)[0, 0]
        target_t = F.interpolate(target_t[None, None].float(), size=size, mode="nearest-exact")[0, 0].long()
    return image_t, target_t, ["background", *s.classes]


def _slabs(depth: int, fractions: list[float], gap: int) -> list[slice]:
    """Contiguous train/val/test slabs along D with ``gap`` slices dropped between them."""
    usable = depth - 2 * gap
    sizes = [int(usable * f) for f in fractions[:2]]
    sizes.append(usable - sum(sizes))
    out, start = [], 0
    for n in sizes:
        out.append(slice(start, start + n))
        start += n + gap
    if min(sizes) < 1:
        raise ValueError(f"{depth} slices cannot make train/val/test slabs with fractions {fractions} and gap {gap}")
    return out


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


def train_segmentation3d(make_backbone, normalize, image: torch.Tensor, target: torch.Tensor, num_classes: int,
                         s: Segmentation3DConfig, *, seed: int, device: str = "cpu") -> dict[str, Any]:
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
    from organfm.evaluation.metrics import segmentation_metrics
    from organfm.evaluation.segmentation import dice_ce_loss
    from organfm.heads.decoders import BackboneUNet

    if s.patch_size is None:
        s = dataclasses.replace(s, patch_size=_DEFAULT_PATCH)
    train_sl, val_sl, test_sl = _slabs(image.shape[0], s.fractions, s.gap)
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
def segmentation3d(run: ModelRun, data: Any = None) -> list[dict[str, Any]]:
    """One row: mean and per-organ Dice on the test slab over ``segmentation3d.seeds`` fits."""
    task, s = run.task, run.task.segmentation3d
    prep = volume_input(run.contract, window=s.window, spacing=s.spacing)
    image, target, names = load_labelled_volume(task, s, prep)
    # the encoder was pretrained on (1, S, S, S) inputs: train and infer on patches of that size
    s = dataclasses.replace(s, patch_size=s.patch_size or prep.cube or _DEFAULT_PATCH)
    values: dict[str, list[float]] = {}
    out: dict[str, Any] = {}
    for k in range(s.seeds):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            out = train_segmentation3d(run.make_backbone, run.normalized, image, target, len(names), s,
                                       seed=task.seed + k, device=run.device)
        m = out["metrics"]
        values.setdefault("mean_dice", []).append(m["mean_dice"])
        for c in range(1, len(names)):
            values.setdefault(f"dice_{names[c]}", []).append(m["dice"].get(c, float("nan")))
    return [make_row(run.name, "segmentation3d", f"{'/'.join(map(str, out['slabs']))} slices, patch {s.patch_size}^3",
                     values, classes=names[1:], slabs=out["slabs"], input=prep.describe(),
                     image_shape=list(image.shape), patch_size=s.patch_size)]
