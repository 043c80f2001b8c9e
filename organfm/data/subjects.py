"""Subjects with several organs: the manifest of multi-organ studies and its image dataset (Pan-FM).

A subject manifest is a CSV with one row per (subject, organ, image)::

    subject,organ,path,patient_id,split,diabetes,hypertension
    s001,heart,heart/s001.nii.gz,p01,train,1,0
    s001,liver,liver/s001.nii.gz,p01,train,1,0
    s002,brain,brain/s002.png,p02,test,0,1

``subject``, ``organ`` and ``path`` are required (relative paths are relative to the CSV); ``patient_id``
and ``split`` are optional (a split is ``train``, ``val`` or ``test`` in any case; another name is an error
naming the line, as in image manifests; without a ``split`` column pretraining uses every subject). The label
columns are the ones ``label_columns`` names (``data.label_columns``; other columns, such as ``age``, are
ignored), or, when it is not given, every other column. A label is binary (0/1) and the same on all rows of a
subject; an empty or non-0/1 cell in a label column is an error naming its line and column. A UTF-8 byte-order mark (spreadsheet exports) is allowed. Organs a subject lacks are simply absent. Images go through ``organfm.data.readers`` (2D
images or 3D volumes) and are scaled to [0, 1] and resized to one size.

Bad input is a :class:`DataError` naming the subject (or column) and the reason: a subject with no
readable organ, an organ not in the model's organ list, a label column with one class, a subject or
patient split across train and test, a subject whose rows disagree on its labels, the same organ twice.
With ``on_error="skip"`` the offending rows, subjects or label columns are dropped and counted instead.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from organfm.data.errors import DataError, append_skip_log
from organfm.data.intensity import normalize_intensity
from organfm.data.readers import create_reader, find_reader
from organfm.data.splits import parse_split

__all__ = ["Subject", "SubjectImages", "SubjectManifest", "read_subject_manifest"]

REQUIRED = ("subject", "organ", "path")
OPTIONAL = ("patient_id", "split")


@dataclass
class Subject:
    """One subject: its organ images, labels, patient and split."""

    id: str
    organs: dict[str, str]
    labels: dict[str, float]
    patient: str
    split: str | None = None


@dataclass
class SubjectManifest:
    """The subjects of a manifest, the organ slots and label columns, and what was skipped."""

    path: Path
    subjects: list[Subject]
    organs: list[str]
    label_names: list[str]
    skips: list[tuple[str, str]] = field(default_factory=list)

    def availability(self) -> np.ndarray:
        """(N, O) bool: which organ slots each subject has."""
        return np.array([[o in s.organs for o in self.organs] for s in self.subjects], dtype=bool).reshape(
            len(self.subjects), len(self.organs))

    def label_matrix(self) -> np.ndarray:
        """(N, D) float32 labels."""
        return np.array([[s.labels[n] for n in self.label_names] for s in self.subjects],
                        dtype=np.float32).reshape(len(self.subjects), len(self.label_names))


class _Problems:
    """Raise at the first problem, or record it as a counted skip (``on_error="skip"``)."""

    def __init__(self, on_error: str, log_dir: str | Path | None) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.on_error, self.log_dir, self.skips = on_error, log_dir, []

    def __call__(self, where: str, reason: str) -> None:
        if self.on_error == "raise":
            raise DataError(f"{where}: {reason}")
        self.skips.append((where, reason))
        if self.log_dir is not None:
            append_skip_log(self.log_dir, where, reason)


def read_subject_manifest(path: str | Path, *, organs: list[str] | None = None, split: str | None = None,
                          label_columns: list[str] | None = None, split_column_optional: bool = False,
                          on_error: str = "raise", skip_log_dir: str | Path | None = None,
                          check_files: bool = True) -> SubjectManifest:
    """Read and check a subject manifest.

    Args:
        path: the CSV.
        organs: the model's organ list (an organ outside it is an error); default: the manifest's organs in
            order of first appearance.
        split: keep only this split's subjects (needs a ``split`` column, unless ``split_column_optional``; None
            keeps all).
        label_columns: the columns that are labels, in order (each must exist; other columns are ignored); None:
            every column besides subject, organ, path, patient_id and split.
        split_column_optional: a manifest without a ``split`` column keeps every subject whatever ``split`` says
            (pretraining, which reads no labels); False: asking for a split of such a manifest is an error.
        on_error: ``"raise"`` or ``"skip"`` (drop and count; see the module docstring).
        skip_log_dir: where skips are logged (``organfm.data.errors``).
        check_files: an image path that does not exist is a problem of its row.

    Raises:
        DataError: the file or one of its subjects is bad (the message names which and why).
    """
    path = Path(path)
    problems = _Problems(on_error, skip_log_dir)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheet exports start with a BOM
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read subject manifest ({type(e).__name__}: {e})") from e
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise DataError(f"{path}: subject manifest lacks column(s) {', '.join(missing)} (needs subject, organ, path)")
    if label_columns is None:
        label_names = [c for c in columns if c not in REQUIRED + OPTIONAL]
    else:
        label_names = [str(c).strip() for c in label_columns]
        absent = [c for c in label_names if c not in columns]
        reserved = [c for c in label_names if c in REQUIRED + OPTIONAL]
        if absent or reserved:
            raise DataError(f"{path}: label_columns names " + "; ".join(
                ([f"{', '.join(absent)}, not column(s) of the manifest (its columns: {', '.join(columns)})"]
                 if absent else []) + ([f"{', '.join(reserved)}, which cannot be labels"] if reserved else [])))
    known = list(organs) if organs is not None else list(dict.fromkeys(r["organ"] for r in rows))
    subjects: dict[str, Subject] = {}
    dropped: set[str] = set()
    for line, row in enumerate(rows, start=2):
        # a typo is the manifest's error, not an unreadable row: refused under on_error=skip too, as image
        # manifests do, because a subject left out of every split is a silent loss
        row["split"] = parse_split(row.get("split"), f"{path} line {line}",
                                   empty="empty (such a subject is used only with data.split=null)") or ""
        sid, organ = row["subject"], row["organ"]
        where = f"{path}:{line} subject {sid!r}"
        if not sid:
            problems(f"{path}:{line}", "empty subject id")
            continue
        try:
            labels = {n: _binary(row[n], n, every_column=label_columns is None) for n in label_names}
        except ValueError as e:
            problems(where, str(e))
            dropped.add(sid)
            continue
        s = subjects.setdefault(sid, Subject(sid, {}, labels, row.get("patient_id") or sid, row.get("split") or None))
        if s.labels != labels:
            problems(where, f"labels {labels} differ from this subject's earlier rows {s.labels}")
            dropped.add(sid)
        if (row.get("split") or None) != s.split:
            problems(where, f"subject is split across {s.split} and {row.get('split') or None}: a subject's organs "
                     "must all be in one split")
            dropped.add(sid)
        if organ not in known:
            problems(where, f"organ {organ!r} is not in the model's organ list ({', '.join(known)})")
            continue
        if organ in s.organs:
            problems(where, f"organ {organ!r} appears twice")
            dropped.add(sid)
            continue
        image = row["path"]
        if not image:
            continue  # an empty path is a missing organ
        image_path = Path(image) if Path(image).is_absolute() else path.parent / image
        if check_files and not image_path.is_file():
            problems(where, f"{organ} image {image_path} does not exist")
            continue
        s.organs[organ] = str(image_path)
    for sid, s in subjects.items():
        if sid not in dropped and not s.organs:
            problems(f"{path} subject {sid!r}", "has no available organ")
            dropped.add(sid)
    kept = [s for sid, s in subjects.items() if sid not in dropped]
    _check_patients(kept, path, problems, dropped)
    kept = [s for s in kept if s.id not in dropped]
    if split is not None and "split" in columns:
        kept = [s for s in kept if s.split == split]
    elif split is not None and not split_column_optional:
        raise DataError(f"{path}: split={split!r} asked for, but the manifest has no split column")
    for name in list(label_names):
        classes = {s.labels[name] for s in kept}
        if len(classes) < 2:
            problems(f"{path} label column {name!r}", f"has one class only ({sorted(classes)} over {len(kept)} "
                     "subjects): AUROC is undefined")
            label_names.remove(name)
    if not kept:
        raise DataError(f"{path}: no usable subject" + (f" in split {split!r}" if split else ""))
    return SubjectManifest(path, kept, known, label_names, problems.skips)


def _binary(value: str, column: str, *, every_column: bool) -> float:
    if value in ("0", "1", "0.0", "1.0"):
        return float(value)
    what = "is empty" if value == "" else f"is {value!r}"
    hint = (" (not a label? name the label columns with data.label_columns=[...]; other columns are ignored)"
            if every_column else "")
    raise ValueError(f"label column {column!r} {what}: a label must be 0 or 1{hint}")


def _check_patients(subjects: list[Subject], path: Path, problems: _Problems, dropped: set[str]) -> None:
    """A patient's subjects (visits) must share one split, or the test set leaks the training patients."""
    splits: dict[str, dict[str, list[str]]] = {}
    for s in subjects:
        splits.setdefault(s.patient, {}).setdefault(str(s.split), []).append(s.id)
    for s in subjects:
        by_split = splits[s.patient]
        if len(by_split) > 1:
            where = " and ".join(f"{k} ({', '.join(v)})" for k, v in sorted(by_split.items()))
            problems(f"{path} subject {s.id!r}", f"patient {s.patient!r} is split across {where}")
            dropped.add(s.id)


class SubjectImages(Dataset):
    """Item ``i`` -> the same dict as ``SyntheticSubjects``: ``images`` (O, 1, *S) in [0, 1], ``available``,
    ``labels``, ``organ_ids``, ``index``.

    Args:
        manifest: a read manifest.
        size: S; every organ image is resized to it (bilinear / trilinear).
        dim: 2 or 3 (3: volumes; a 2D image is an error).
        intensity: ``organfm.data.intensity`` mode.
        window: ``(center, width)`` for ``intensity="window"``.
        on_error: an unreadable organ image raises (``"raise"``), or the organ counts as missing and the skip is
            logged (``"skip"``); a subject left with no readable organ always raises.
        skip_log_dir: where skips are logged.
    """

    def __init__(self, manifest: SubjectManifest, size: int, *, dim: int = 2, intensity: str = "minmax",
                 window: list[float] | None = None, on_error: str = "raise",
                 skip_log_dir: str | Path | None = None) -> None:
        self.manifest, self.size, self.dim, self.intensity, self.window = manifest, size, dim, intensity, window
        self.problems = _Problems(on_error, skip_log_dir)
        self.organs = manifest.organs
        self._labels = torch.from_numpy(manifest.label_matrix())

    def __len__(self) -> int:
        return len(self.manifest.subjects)

    def _read(self, image_path: str) -> torch.Tensor:
        name = find_reader(image_path)
        if name is None:
            raise DataError(f"{image_path}: no reader for this file type")
        array, meta = create_reader(name).read(image_path)
        if self.dim == 2 and array.ndim == 4:  # a volume fed to a 2D model: its middle slice
            array = array[:, array.shape[1] // 2]
        if array.ndim != 1 + self.dim:
            raise DataError(f"{image_path}: a {array.ndim - 1}D image where {self.dim}D is expected")
        x = torch.from_numpy(normalize_intensity(array.mean(0, keepdims=True), self.intensity, window=self.window,
                                                 dtype=(meta or {}).get("dtype")))
        mode = "bilinear" if self.dim == 2 else "trilinear"
        return F.interpolate(x[None], size=(self.size,) * self.dim, mode=mode, align_corners=False)[0]

    def __getitem__(self, index: int) -> dict:
        s = self.manifest.subjects[index]
        images = torch.zeros((len(self.organs), 1) + (self.size,) * self.dim)
        available = torch.zeros(len(self.organs), dtype=torch.bool)
        for o, organ in enumerate(self.organs):
            if organ in s.organs:
                try:
                    images[o] = self._read(s.organs[organ])
                except DataError as e:
                    self.problems(f"subject {s.id!r}, organ {organ}", str(e))
                    continue
                available[o] = True
        if not available.any():
            raise DataError(f"subject {s.id!r}: none of its organs ({', '.join(s.organs)}) could be read")
        return {"images": images, "available": available, "labels": self._labels[index],
                "organ_ids": torch.arange(len(self.organs)), "index": index}

    def summary(self) -> dict:
        avail = self.manifest.availability()
        return {"source": str(self.manifest.path), "num_subjects": len(self), "organs": self.organs,
                "labels": self.manifest.label_names, "skipped": len(self.manifest.skips),
                "organ_availability": dict(zip(self.organs, avail.mean(0).round(3).tolist()))}
