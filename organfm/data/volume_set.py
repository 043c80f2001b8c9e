"""Whole volumes for 3D pretraining: found in a folder, a manifest, a ``.npz`` or one file; checked; made cubes.

Every volume is read once, checked (a 2D image, a 4D volume or NaN voxels is a :class:`DataError` naming
the file, or a counted skip with ``on_error="skip"``), preprocessed as Triad does (percentile clip at
0.5/99.5, min-max to [0, 1], linear resize to the cube; with ``spacing`` first resampled to that voxel
size and centre-cropped or padded instead) and kept in memory as a float16 cube, with its acquisition
metadata (``organfm.data.acquisition``).

Sources: a ``.npz`` (``<split>_images`` of shape (N, D, H, W), MedMNIST 3D; optional per-volume
``<split>_<field>`` arrays for the acquisition fields), a NIfTI file, a DICOM series folder, a folder
holding NIfTI files and/or DICOM series folders (recursively), or a CSV manifest with a ``path`` column
(NIfTI file or DICOM series folder, relative to the manifest) and optional acquisition-field columns. A
NIfTI file's acquisition plane comes from its affine and its other fields from a BIDS JSON sidecar beside it
(``x.json`` for ``x.nii.gz``), when there is one; a manifest column overrides either.
"""
from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from organfm.data.acquisition import FIELDS, acquisition_from_sidecar, orientation_from_affine
from organfm.data.errors import DataError, append_skip_log
from organfm.data.voxel_cap import (DEFAULT_MAX_ARRAY_VOXELS, DEFAULT_MAX_VOLUME_VOXELS, check_voxels,
                                    load_npz_array, npz_headers)

__all__ = ["LoadedVolume", "list_volume_sources", "load_volumes", "preprocess_volume"]

_NIFTI = (".nii", ".nii.gz")


@dataclass
class LoadedVolume:
    """One preprocessed volume: ``cube`` (S, S, S) float16 in [0, 1], where it came from, its acquisition fields."""

    cube: torch.Tensor
    where: str
    acquisition: dict[str, Any] = field(default_factory=dict)
    label: int | None = None  # a per-volume class (a .npz's ``<split>_labels``), for monitoring only


def preprocess_volume(volume: np.ndarray, *, cube: int, where: str, spacing: Sequence[float] | None = None,
                      target_spacing: Sequence[float] | None = None,
                      percentiles: tuple[float, float] = (0.5, 99.5),
                      intensity: Mapping[str, Any] | None = None) -> torch.Tensor:
    """(D, H, W) voxels -> (cube, cube, cube) float32 in [0, 1].

    Args:
        volume: the voxels, any real dtype.
        cube: output edge S.
        where: the file (for errors).
        spacing: the volume's (D, H, W) voxel size in mm (needed with ``target_spacing``).
        target_spacing: resample to this voxel size, then centre-crop/pad to the cube; None: resize the whole
            volume to the cube (Triad's linear zoom).
        percentiles: clip range before min-max.
        intensity: a model contract's intensity (``mode``, ``window``, ``percentiles``, ``dtype``;
            ``organfm.data.intensity``) in place of the percentile clip; None: the percentile clip (pretraining).

    Raises:
        DataError: not 3D, a singleton axis (a 2D image), or NaN/Inf voxels.
    """
    v = np.asarray(volume)
    if v.ndim == 4 and v.shape[0] == 1:
        v = v[0]
    if v.ndim != 3:
        raise DataError(f"{where}: a volume must be 3D (D, H, W), got shape {tuple(v.shape)}"
                        + (" (4D: split the time/channel axis into separate volumes)" if v.ndim == 4 else ""))
    if min(v.shape) < 2:
        raise DataError(f"{where}: a 2D image (shape {tuple(v.shape)}) where a 3D volume is expected")
    v = v.astype(np.float32)
    bad = int((~np.isfinite(v)).sum())
    if bad:
        raise DataError(f"{where}: {bad} NaN/Inf voxels")
    if intensity is None:
        lo, hi = (float(p) for p in np.percentile(v, percentiles))
        v = np.clip(v, lo, hi)
        v = ((v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)).astype(np.float32)
    else:
        from organfm.data.intensity import normalize_intensity

        mode = str(intensity.get("mode") or "percentile")
        v = normalize_intensity(v, "percentile" if mode == "percentile_minmax" else mode,
                                window=intensity.get("window"), percentiles=intensity.get("percentiles") or percentiles,
                                dtype=intensity.get("dtype"))
    t = torch.from_numpy(np.ascontiguousarray(v))[None, None]
    if target_spacing is None:
        t = F.interpolate(t, size=(cube,) * 3, mode="trilinear", align_corners=False)
        return t[0, 0]
    if spacing is None or any(not np.isfinite(s) or s <= 0 for s in spacing):
        raise DataError(f"{where}: voxel spacing unknown ({spacing}); cannot resample to {list(target_spacing)} mm")
    size = [max(1, round(n * s / ts)) for n, s, ts in zip(v.shape, spacing, target_spacing)]
    t = F.interpolate(t, size=size, mode="trilinear", align_corners=False)[0, 0]
    return _center_fit(t, cube)


def _center_fit(t: torch.Tensor, cube: int) -> torch.Tensor:
    """Centre-crop or zero-pad each axis of (D, H, W) to ``cube``."""
    for axis in range(3):
        n = t.shape[axis]
        if n > cube:
            t = t.narrow(axis, (n - cube) // 2, cube)
        elif n < cube:
            pad = [0, 0] * 3
            before = (cube - n) // 2
            pad[2 * (2 - axis)], pad[2 * (2 - axis) + 1] = before, cube - n - before
            t = F.pad(t, pad)
    return t


Loader = Callable[[], tuple[np.ndarray, dict[str, Any]]]


def _nifti_loader(path: Path, max_voxels: int = DEFAULT_MAX_VOLUME_VOXELS) -> Loader:
    def load() -> tuple[np.ndarray, dict[str, Any]]:
        import nibabel as nib

        try:
            image = nib.load(str(path))
        except Exception as e:  # nibabel raises many types on a bad file
            raise DataError(f"{path}: not a readable NIfTI file ({type(e).__name__}: {e})") from e
        if len(image.shape) > 3 and any(n > 1 for n in image.shape[3:]):
            raise DataError(f"{path}: a 4D volume of shape {tuple(image.shape)}; split the time/channel axis into "
                      "separate 3D files")
        from organfm.data.nifti import NiftiReader

        volume, meta = NiftiReader(cache_size=0, max_volume_voxels=max_voxels).read_volume(str(path))
        # a BIDS sidecar (x.json beside x.nii.gz) describes the acquisition as a DICOM header would
        acquisition = acquisition_from_sidecar(path)
        orientation = orientation_from_affine(image.affine)
        if orientation is not None:
            acquisition["orientation"] = orientation
        return np.asarray(volume), dict(acquisition, spacing=list(meta["spacing"]))

    return load


def _dicom_loader(folder: Path, max_voxels: int = DEFAULT_MAX_VOLUME_VOXELS) -> Loader:
    def load() -> tuple[np.ndarray, dict[str, Any]]:
        from organfm.data.dicom_series import read_dicom_series

        volume, meta = read_dicom_series(folder, max_volume_voxels=max_voxels)
        return volume, dict(meta["acquisition"], spacing=list(meta["spacing"]))

    return load


def _is_series(folder: Path) -> bool:
    return any(p.is_file() and not p.name.endswith(_NIFTI) and (p.suffix.lower() in (".dcm", ".dicom") or
                                                               _has_preamble(p)) for p in folder.iterdir())


def _has_preamble(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(132)[128:132] == b"DICM"


def _path_loader(path: Path, where: str, max_voxels: int = DEFAULT_MAX_VOLUME_VOXELS) -> Loader:
    if path.is_dir():
        return _dicom_loader(path, max_voxels)
    if path.name.endswith(_NIFTI):
        return _nifti_loader(path, max_voxels)
    raise DataError(f"{where}: {path.name} is neither a NIfTI file nor a DICOM series folder")


def list_volume_sources(source: str, *, split: str | None = "train", max_volume_voxels: int = DEFAULT_MAX_VOLUME_VOXELS,
                        max_array_voxels: int = DEFAULT_MAX_ARRAY_VOXELS) -> list[tuple[str, Loader, dict[str, Any]]]:
    """``(where, loader, extra acquisition fields)`` for every volume of ``source`` (nothing is decoded yet).

    ``max_volume_voxels`` caps each volume, ``max_array_voxels`` each npz array (``organfm.data.voxel_cap``);
    both are checked from headers before anything is inflated.
    """
    path = Path(source).expanduser()
    cap = max_volume_voxels
    if not path.exists():
        raise DataError(f"{source}: no such file or folder")
    if path.suffix == ".npz":
        return _npz_sources(path, split or "train", max_volume_voxels, max_array_voxels)
    if path.suffix == ".csv":
        return _manifest_sources(path, cap)
    if path.is_file():
        return [(str(path), _path_loader(path, str(path), cap), {})]
    if _is_series(path):
        return [(str(path), _dicom_loader(path, cap), {})]
    out = []
    for child in sorted(path.rglob("*")):
        if child.is_file() and child.name.endswith(_NIFTI):
            out.append((str(child), _nifti_loader(child, cap), {}))
        elif child.is_dir() and _is_series(child):
            out.append((str(child), _dicom_loader(child, cap), {}))
    if not out:
        raise DataError(f"{source}: holds no NIfTI file and no DICOM series")
    return out


_LABEL = "__label__"  # carried beside the acquisition fields from a source to its LoadedVolume, never described


def _npz_sources(path: Path, split: str, max_volume_voxels: int = DEFAULT_MAX_VOLUME_VOXELS,
                 max_array_voxels: int = DEFAULT_MAX_ARRAY_VOXELS) -> list[tuple[str, Loader, dict[str, Any]]]:
    headers = npz_headers(str(path), where=str(path))  # shapes from the .npy headers: nothing inflated yet
    keys = set(headers)
    key = f"{split}_images" if f"{split}_images" in keys else ("images" if "images" in keys else None)
    if key is None:
        raise DataError(f"{path}: no '{split}_images' array (keys: {', '.join(sorted(keys))})")
    if len(headers[key][0]) >= 2:
        check_voxels(headers[key][0][1:], where=f"{path}::{key}", cap=max_volume_voxels, what="each row declares")

    def array(name: str) -> np.ndarray:
        return load_npz_array(str(path), name, where=str(path), max_voxels=max_array_voxels)

    images = array(key)
    if images.ndim == 3:
        raise DataError(f"{path}: {key} has shape {images.shape}: 2D images where 3D volumes (N, D, H, W) are expected")
    if images.ndim == 5 and images.shape[1] != 1:
        raise DataError(f"{path}: {key} has shape {images.shape}: 4D volumes (several channels); one channel expected")
    if images.ndim not in (4, 5):
        raise DataError(f"{path}: {key} has shape {images.shape}; expected (N, D, H, W)")
    prefix = key[: -len("images")]
    extras = {f: array(prefix + f) for f in FIELDS if prefix + f in keys}
    labels = array(prefix + "labels").reshape(len(images), -1)[:, 0] if prefix + "labels" in keys else None
    out = []
    for i in range(len(images)):
        meta = {f: (v[i].tolist() if v.ndim > 1 else v[i].item()) for f, v in extras.items()}
        if labels is not None:
            meta[_LABEL] = int(labels[i])
        out.append((f"{path}[{key}][{i}]", lambda i=i: (images[i], {}), meta))
    return out


def _manifest_sources(path: Path, max_voxels: int = DEFAULT_MAX_VOLUME_VOXELS) -> list[tuple[str, Loader, dict[str, Any]]]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or "path" not in rows[0]:
        raise DataError(f"{path}: a volume manifest needs a 'path' column")
    out = []
    for n, row in enumerate(rows, start=2):
        target = Path(row["path"]).expanduser()
        target = target if target.is_absolute() else path.parent / target
        where = f"{path}:{n} ({target})"
        meta = {f: row[f] for f in FIELDS if row.get(f) not in (None, "")}
        if "spacing" in meta:
            meta["spacing"] = [float(s) for s in str(meta["spacing"]).replace("x", " ").split()]
        out.append((where, _path_loader(target, where, max_voxels) if target.exists() else _missing(where), meta))
    return out


def _missing(where: str) -> Loader:
    def load() -> tuple[np.ndarray, dict[str, Any]]:
        raise DataError(f"{where}: no such file or folder")

    return load


def load_volumes(source: str, *, cube: int, split: str | None = "train", target_spacing: Sequence[float] | None = None,
                 on_error: str = "raise", skip_log_dir: str | None = None,
                 max_volume_voxels: int = DEFAULT_MAX_VOLUME_VOXELS,
                 max_array_voxels: int = DEFAULT_MAX_ARRAY_VOXELS) -> tuple[list[LoadedVolume], int]:
    """Read, check and preprocess every volume of ``source``.

    Each volume's header is checked against ``max_volume_voxels`` (each npz array against
    ``max_array_voxels``) before it is inflated: a decompression bomb is a DataError (or a skip).

    Returns:
        ``(volumes, skipped)``; with ``on_error="skip"`` a bad volume is logged in ``skip_log_dir`` and counted.

    Raises:
        DataError: a bad volume with ``on_error="raise"``, or no usable volume at all.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    volumes, skipped = [], 0
    for where, load, extra in list_volume_sources(source, split=split, max_volume_voxels=max_volume_voxels,
                                                  max_array_voxels=max_array_voxels):
        try:
            voxels, meta = load()
            acquisition = {**meta, **extra}
            label = acquisition.pop(_LABEL, None)
            spacing = acquisition.get("spacing")
            cube_t = preprocess_volume(voxels, cube=cube, where=where, spacing=spacing, target_spacing=target_spacing)
        except DataError as e:
            if on_error == "raise":
                raise
            skipped += 1
            if skip_log_dir is not None:
                append_skip_log(skip_log_dir, where, str(e))
            continue
        volumes.append(LoadedVolume(cube_t.to(torch.float16), where, acquisition, label))
    if not volumes:
        raise DataError(f"{source}: no usable volume ({skipped} skipped)")
    return volumes, skipped
