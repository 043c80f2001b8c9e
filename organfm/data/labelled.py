"""Labelled volumes for evaluation: an image volume with its label map, and 3D classification volumes.

One reading sequence serves every labelled-volume user: :func:`read_labelled_volume` reads an image and its
label map with ``NiftiReader`` (display orientation, so the two line up when their affines agree), checks that
they share a grid and rounds float-stored label maps; :func:`relabel` maps chosen organ names to ids 1..C.
On top of them: axial slices with organ masks (:func:`load_ct_segmentation_slices`, 2D segmentation), a whole
volume prepared as a model's contract says (:func:`load_labelled_volume`, 3D segmentation), and the
MedMNIST-3D-style ``.npz`` splits of 3D classification (:func:`load_npz_volumes`). :class:`VolumeInput`
(from :func:`volume_input`) is how one model's volumes are prepared: its contract's 3D preprocessing, or the
task's settings overriding it.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from organfm.data.errors import DataError
from organfm.data.intensity import normalize_intensity
from organfm.data.nifti import NiftiReader
from organfm.data.volume_set import preprocess_volume
from organfm.data.voxel_cap import (DEFAULT_MAX_ARRAY_VOXELS, DEFAULT_MAX_VOLUME_VOXELS, check_voxels,
                                    load_npz_array, npz_headers)

__all__ = ["VolumeInput", "load_ct_segmentation_slices", "load_labelled_volume", "load_npz_volumes",
           "read_labelled_volume", "relabel", "volume_input"]

# a contract without an intensity (random:/timm: models): 3D pretraining's own mapping, which suits CT and MR
_DEFAULT_INTENSITY = {"mode": "percentile", "percentiles": [0.5, 99.5], "window": None}


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


def read_labelled_volume(image_path: str | os.PathLike[str], label_path: str | os.PathLike[str], *,
                         reader: NiftiReader | None = None,
                         max_volume_voxels: int | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """An image volume and its label map on the same grid.

    Args:
        image_path: image volume (NIfTI), in modality units (HU for CT).
        label_path: label map of the same grid (integer label ids; float-stored maps are rounded).
        reader: the NIfTI reader to use (its cache then holds the volumes); None: an uncached one.
        max_volume_voxels: the uncached reader's voxel cap (``data.max_volume_voxels``); None: its default.

    Returns:
        ``(volume (D, H, W), labels (D, H, W) integer, volume meta)``; integer label maps keep their dtype
        (a uint8 map of a whole CT stays 8x smaller than int64), float ones become int64.

    Raises:
        DataError: the label map's shape differs from the image's.
    """
    if reader is None:
        reader = NiftiReader(cache_size=0) if max_volume_voxels is None else \
            NiftiReader(cache_size=0, max_volume_voxels=max_volume_voxels)
    volume, meta = reader.read_volume(str(image_path))
    labels, _ = reader.read_volume(str(label_path))
    if labels.shape != volume.shape:
        raise DataError(f"{label_path}: label map shape {labels.shape} differs from image {image_path} {volume.shape}")
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        labels = np.rint(labels).astype(np.int64)  # float-stored label maps (common after resampling)
    return volume, labels, meta


def relabel(labels: np.ndarray, class_map: Mapping[int, str] | None, classes: Sequence[str] | None, *,
            what: str = "classes") -> tuple[np.ndarray, list[str]]:
    """Label ids -> 0 (background) .. C for the chosen organs; every other label becomes background.

    Args:
        labels: (D, H, W) integer label ids.
        class_map: label id -> organ name; None: the raw ids present, named ``"label_<id>"``.
        classes: organ names in the order of their new ids 1..C; None: every class of ``class_map`` present
            in ``labels`` (ascending id).
        what: the setting that named ``classes``, for the error message.

    Returns:
        ``(target (D, H, W) int64 in 0..C, classes)``.

    Raises:
        ValueError: a class not in the class map, or no class at all.
    """
    labels = labels.astype(np.int64, copy=False)
    # ids <= 0 are background (some maps mark unlabelled voxels -1): never a class of their own
    present = {i for i in np.unique(labels).tolist() if i > 0}
    if class_map is None:
        class_map = {int(i): f"label_{int(i)}" for i in sorted(present)}
    name_to_id = {name: int(i) for i, name in class_map.items() if int(i) != 0}
    if classes is None:
        classes = [class_map[i] for i in sorted(class_map) if i in present and i != 0]
    unknown = [c for c in classes if c not in name_to_id]
    if unknown:
        raise ValueError(f"{what} not in the class map: {', '.join(unknown)}; valid: {', '.join(name_to_id)}")
    if not classes:
        raise ValueError("no classes to segment")
    lookup = np.zeros(max(int(labels.max()), max(name_to_id[c] for c in classes)) + 1, dtype=np.int64)
    for new_id, name in enumerate(classes, start=1):
        lookup[name_to_id[name]] = new_id
    return lookup[np.clip(labels, 0, None)], list(classes)


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
    volume, labels, _ = read_labelled_volume(image_path, label_path, max_volume_voxels=max_volume_voxels)
    masks, classes = relabel(labels, class_map, classes)
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


def _pad_square(images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = images.shape[-2:]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    pad = (left, side - w - left, top, side - h - top)
    return F.pad(images, pad, value=0.0), F.pad(masks, pad, value=0)  # 0 = air after windowing / background


def load_labelled_volume(image_path: str | os.PathLike[str], label_path: str | os.PathLike[str], *,
                         class_map: Mapping[int, str], classes: Sequence[str], prep: VolumeInput,
                         max_volume_voxels: int = DEFAULT_MAX_VOLUME_VOXELS,
                         what: str = "classes") -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """A whole labelled volume prepared as a model's contract says (3D segmentation).

    The image is scaled by ``prep``'s intensity, then resampled to its spacing; without a spacing but with a
    cube, the whole volume is resized to the cube, as 3D pretraining without a spacing fed it.

    Args:
        image_path, label_path: the image volume and its label map (NIfTI).
        class_map: label id -> organ name.
        classes: organ names, ids 1..C in this order.
        prep: the model's preprocessing (:func:`volume_input`).
        max_volume_voxels: the reader's voxel cap.
        what: the setting that named ``classes``, for the error message.

    Returns:
        ``(image (D, H, W) in [0, 1], labels (D, H, W) int64 in 0..C, class names with background)``.
    """
    volume, labels, meta = read_labelled_volume(image_path, label_path, max_volume_voxels=max_volume_voxels)
    target, classes = relabel(labels, class_map, classes, what=what)
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
    return image_t, target_t, ["background", *classes]


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
