"""Organ-labelled crops cut from a volume and its segmentation label map.

Given an image volume, a label map of the same shape and a class map (label id -> organ name),
every (organ, axial slice) where the organ covers at least ``min_pixels`` pixels becomes one
record: the organ's bounding box in that slice plus a margin, labelled with the organ's name. With
``dim=3`` each organ gives one record: its 3D bounding box plus the margin.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from organfm.data.errors import DataError
from organfm.data.labelled import read_labelled_volume
from organfm.data.nifti import NiftiReader
from organfm.data.records import Record, content_hash

__all__ = ["load_class_map", "index_organ_crops"]


def load_class_map(path: str | os.PathLike[str], key: str | None = None) -> dict[int, str]:
    """Read a class map JSON: ``{"1": "spleen", ...}``, or several such maps under top-level keys.

    Args:
        path: the JSON file.
        key: which map to use when the file holds several (e.g. ``"total"`` or ``"total_mr"`` in
            TotalSegmentator's); not needed for a flat map.

    Returns:
        label id -> organ name.
    """
    try:
        content = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot read class map ({type(e).__name__}: {e})") from e
    if not isinstance(content, dict):
        raise DataError(f"{path}: class map must be a JSON object")
    nested = [k for k, v in content.items() if isinstance(v, dict)]
    if key is not None:
        if key not in nested:
            raise ValueError(f"class_map_key {key!r} not in {path}; valid: {', '.join(nested) or '(flat map)'}")
        content = content[key]
    elif nested:
        raise ValueError(f"{path} holds several class maps ({', '.join(nested)}); pass class_map_key")
    try:
        return {int(label): str(name) for label, name in content.items()}
    except ValueError as e:
        raise DataError(f"{path}: class map keys must be integer label ids ({e})") from e


def index_organ_crops(image: str, label_map: str, class_map: dict[int, str], *, reader: NiftiReader,
                      key_prefix: str, organs: Sequence[str] | None = None, min_pixels: int = 64,
                      margin: int = 4, dim: int = 2) -> list[Record]:
    """One record per (organ, axial slice) (``dim=2``) or per organ (``dim=3``) of ``image``.

    Args:
        image: image volume (NIfTI).
        label_map: label map volume (NIfTI) aligned with ``image``.
        class_map: label id -> organ name; ids missing from it are ignored.
        reader: the NIfTI reader (its cache then already holds the volume when items are read).
        key_prefix: the image's name relative to the source root, for record keys.
        organs: keep only these organ names (all must be in ``class_map``).
        min_pixels: smallest organ area (voxels for ``dim=3``) that gives a record.
        margin: pixels added around the bounding box on every side (clipped to the image).
        dim: 2 for axial-slice crops, 3 for volume crops.

    Returns:
        Records with ``organ``, ``index`` (slice, ``dim=2``), ``bbox`` and a content hash of the
        crop's voxels; ``group`` is the image file's hash so all crops of a scan share a split.
    """
    wanted = _wanted_ids(class_map, organs)
    volume, labels, _ = read_labelled_volume(image, label_map, reader=reader)
    group = content_hash(Path(image).read_bytes())
    boxes = _slice_boxes(labels, wanted, min_pixels) if dim == 2 else _volume_boxes(labels, wanted, min_pixels)
    records = []
    for z, label_id, box in boxes:
        box = _with_margin(box, margin, volume.shape if z is None else volume.shape[1:])
        crop = volume[tuple(slice(a, b) for a, b in zip(box[::2], box[1::2]))] if z is None else \
            volume[z, box[0]:box[1], box[2]:box[3]]
        organ = class_map[label_id]
        records.append(Record(
            path=image, reader="nifti", key=f"{key_prefix}{'' if z is None else f'#{z}'}@{organ}",
            index=z, bbox=box, organ=organ, content_hash=content_hash(np.ascontiguousarray(crop).tobytes()),
            group=group, meta={"label_id": label_id, "label_map": label_map},
        ))
    return records


def _wanted_ids(class_map: dict[int, str], organs: Sequence[str] | None) -> set[int]:
    if organs is None:
        return {i for i in class_map if i != 0}
    unknown = sorted(set(organs) - set(class_map.values()))
    if unknown:
        raise ValueError(f"organs not in the class map: {', '.join(unknown)}")
    return {i for i, name in class_map.items() if name in set(organs) and i != 0}


def _slice_boxes(labels: np.ndarray, wanted: set[int], min_pixels: int) -> list[tuple[Any, int, tuple[int, ...]]]:
    boxes = []
    for z in range(labels.shape[0]):
        plane = labels[z]
        ids, counts = np.unique(plane, return_counts=True)
        for label_id in ids[(counts >= min_pixels)]:
            if int(label_id) not in wanted:
                continue
            mask = plane == label_id
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            boxes.append((z, int(label_id), (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)))
    return boxes


def _volume_boxes(labels: np.ndarray, wanted: set[int], min_pixels: int) -> list[tuple[Any, int, tuple[int, ...]]]:
    ids, counts = np.unique(labels, return_counts=True)
    boxes = []
    for label_id in ids[counts >= min_pixels]:
        if int(label_id) not in wanted:
            continue
        mask = labels == label_id
        box: tuple[int, ...] = ()
        for axis in range(3):
            hits = np.flatnonzero(mask.any(tuple(a for a in range(3) if a != axis)))
            box += (int(hits[0]), int(hits[-1]) + 1)
        boxes.append((None, int(label_id), box))
    return boxes


def _with_margin(box: tuple[int, ...], margin: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    out: tuple[int, ...] = ()
    for axis, size in enumerate(shape):
        out += (max(box[2 * axis] - margin, 0), min(box[2 * axis + 1] + margin, size))
    return out
