"""A task's labelled data: its ``data.*`` section, and its splits as tensors, read once per evaluation.

:class:`TaskDataConfig` is the ``data`` section of a task (what to read, where, how big); the splits are
shared by every model and protocol; a protocol that reads its own files (``inputs="own"``) gets the section.

The source is indexed once (``build_dataset(split=None)``: de-duplication and patient-level splits
included), each split is capped by a seeded stratified subsample where the task says so (CPU budgets),
and its images are decoded into one (N, 1, S, S) tensor in [0, 1]. Each split carries an identity hash
of what went into it (item keys and content hashes, size, intensity), the data part of the feature
cache key.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from organfm.config import DataConfig
from organfm.data import build_dataset
from organfm.data.records import Record
from organfm.data.subsets import stratified_subset

__all__ = ["SplitData", "TaskData", "TaskDataConfig", "dataset_kwargs", "load_task_data", "public_metadata"]

# keys of the task's data section that are not ``build_dataset`` arguments
# label_columns: subject manifests' (Pan-FM), not an image dataset's
_NOT_DATASET_ARGS = {"root", "source", "split", "label", "class_names", "max_train", "max_val", "max_test",
                     "label_columns"}
_PATH_ARGS = ("label_map", "class_map", "split_file")

# manifest columns that may identify a person never reach a report
_PRIVATE_HINTS = ("patient", "name", "birth", "mrn", "accession", "study", "series", "sop", "uid", "path", "date")


@dataclass
class TaskDataConfig(DataConfig):
    """The labelled images: pretraining's ``DataConfig`` keys (``build_dataset`` kwargs) plus labels, size, caps.

    A task reads every split of its source (``data.split`` must stay unset) and real files only (no
    ``synthetic`` source; the ``synthetic_*`` keys are unused here).
    """

    # folder holding the shared data; relative paths below resolve against it. None: $ORGANFM_DATA, else the
    # shared/data folder beside the checkout (organfm.presets.default_data_root), never the current folder
    root: str | None = None
    source: str = ""  # npz | folder | manifest | tar | NIfTI volume (with label_map: organ crops)
    split: str | None = None
    label: Literal["organ", "label"] = "organ"  # organ: the organ/folder name; label: the record's label
    class_names: list[str] | None = None  # names of label ids 0..K-1 (label=label with int labels)
    image_size: int = 64
    min_pixels: int = 64
    split_fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    max_train: int | None = None  # stratified, seeded caps per split (CPU budgets); None keeps all
    max_val: int | None = None
    max_test: int | None = None

    def resolve(self, path: str | None) -> str | None:
        """``path`` resolved against ``root`` (absolute paths and None pass through)."""
        if path is None:
            return None
        from organfm.presets import default_data_root

        p = Path(os.path.expanduser(path))
        root = self.root if self.root is not None else default_data_root()
        return str(p if p.is_absolute() else Path(os.path.expanduser(root)) / p)


class _Task(Protocol):
    """What reading a task's data needs of the task (its ``data`` section and seed): no protocol section."""

    data: TaskDataConfig
    seed: int


@dataclass
class SplitData:
    """One split: images, labels, the records they came from, and an identity hash.

    Attributes:
        images: (N, 1, S, S) float32 in [0, 1] (not yet normalised: that depends on the model).
        labels: (N,) int64 class ids.
        records: the N source records (for the leakage guard and report metadata).
        identity: hex hash of the items, size and intensity (feature-cache key part).
        name: the split's name.
    """

    images: torch.Tensor
    labels: torch.Tensor
    records: list[Record]
    identity: str
    name: str

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class TaskData:
    """Every split a task needs, with the class names and a summary for ``results.json``."""

    splits: dict[str, SplitData]
    class_names: list[str]
    summary: dict[str, Any] = field(default_factory=dict)


def load_task_data(task: _Task, limits: Mapping[str, int | None]) -> TaskData:
    """Read the task's splits.

    Args:
        task: the task (``task.data`` says what to read; paths resolve against ``data.root``).
        limits: split name (``train``, ``val``, ``test``, or ``all`` for every record) -> the most items
            to keep (a stratified subsample seeded by ``task.seed``), or None for all of them.

    Returns:
        The splits, in the order of ``limits``.

    Raises:
        FileNotFoundError: the source is not under ``data.root``.
        ValueError: missing labels, an empty split, unsupported multi-label rows.
    """
    d = task.data
    source = task.data.resolve(d.source)
    if source is None or not Path(source).exists():
        raise FileNotFoundError(f"data source {d.source!r} not found ({source}; data.root={d.root!r}): pass "
                                "data.root=<folder holding the shared data> or set ORGANFM_DATA")
    dataset = build_dataset(source, split=None, **dataset_kwargs(task))
    labels, class_names = _labels(dataset, task)
    splits: dict[str, SplitData] = {}
    for name, limit in limits.items():
        indices = np.array([i for i, r in enumerate(dataset.records) if name in ("all", r.split)], dtype=np.int64)
        if len(indices) == 0:
            raise ValueError(f"{d.source}: the {name!r} split is empty (splits: {dataset.summary().get('splits')})")
        if limit is not None and len(indices) > limit:
            keep = stratified_subset(labels[indices], fraction=limit / len(indices), seed=task.seed)
            indices = indices[keep]  # about ``limit`` items: per-class counts are rounded
        images = torch.stack([dataset[int(i)]["image"] for i in indices]) if len(indices) else torch.zeros(0)
        records = [dataset.records[int(i)] for i in indices]
        identity = _identity(name, records, d.image_size, d.intensity, d.window)
        splits[name] = SplitData(images=images, labels=torch.from_numpy(labels[indices]), records=records,
                                 identity=identity, name=name)
    summary = {"source": d.source, "classes": class_names,
               "splits": {n: {"n": len(s), "per_class": np.bincount(s.labels.numpy(),
                                                                    minlength=len(class_names)).tolist()}
                          for n, s in splits.items()},
               "duplicates_removed": dataset.summary().get("duplicates_removed", 0),
               "source_splits": dataset.summary().get("splits", {})}
    return TaskData(splits=splits, class_names=class_names, summary=summary)


def dataset_kwargs(task: _Task) -> dict[str, Any]:
    """``build_dataset`` keyword arguments of ``task.data`` (pretraining's ``DataConfig`` keys plus the task's
    size and split keys), paths resolved against ``data.root``; ``synthetic_*`` keys are pretraining-only."""
    d = task.data
    kwargs = {f.name: getattr(d, f.name) for f in fields(d)
              if f.name not in _NOT_DATASET_ARGS and not f.name.startswith("synthetic_")}
    for key in _PATH_ARGS:
        kwargs[key] = task.data.resolve(kwargs[key])
    for key in ("window", "split_fractions"):
        if kwargs.get(key) is not None:
            kwargs[key] = tuple(kwargs[key])
    return kwargs


def public_metadata(record: Record, label: int, class_names: Sequence[str], split: str) -> dict[str, Any]:
    """What a report may show about one item: class, organ, split and non-identifying manifest columns."""
    meta: dict[str, Any] = {"class": class_names[label], "organ": record.organ or "", "split": split}
    for key, value in record.meta.items():
        if isinstance(value, (str, int, float, bool)) and not any(h in key.lower() for h in _PRIVATE_HINTS):
            meta[key] = value
    return meta


def _labels(dataset: Any, task: _Task) -> tuple[np.ndarray, list[str]]:
    """Class id per record (organ ids, or the records' own labels) and the class names."""
    d = task.data
    if d.label == "organ":
        ids = np.asarray(dataset.organ_ids, dtype=np.int64)
        if (ids < 0).any():
            raise ValueError(f"{d.source}: {(ids < 0).sum()} items have no organ name; use data.label=label")
        return ids, list(dataset.organs)
    raw = dataset.labels
    missing = sum(v is None for v in raw)
    if missing:
        raise ValueError(f"{d.source}: {missing} items have no label (data.label=label needs one per item)")
    if any(isinstance(v, tuple) for v in raw):
        raise ValueError(f"{d.source}: multi-label rows are not supported by the classification protocols")
    if all(isinstance(v, (int, np.integer)) for v in raw):
        ids = np.asarray(raw, dtype=np.int64)
        k = int(ids.max()) + 1
        names = list(d.class_names) if d.class_names else [str(i) for i in range(k)]
        if len(names) < k:
            raise ValueError(f"data.class_names has {len(names)} names for label ids 0..{k - 1}")
        return ids, names
    names = list(d.class_names) if d.class_names else sorted({str(v) for v in raw})
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted({str(v) for v in raw} - set(index))
    if unknown:
        raise ValueError(f"labels not in data.class_names: {', '.join(unknown[:5])}")
    return np.asarray([index[str(v)] for v in raw], dtype=np.int64), names


def _identity(split: str, records: Sequence[Record], size: int, intensity: str, window: Any) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps({"split": split, "size": size, "intensity": intensity, "window": window}).encode())
    for r in records:
        digest.update(f"{r.key}\0{r.content_hash}\n".encode())
    return digest.hexdigest()
