"""Manifests: a CSV or JSONL file listing images with their organ, label, patient and split.

Columns: ``path`` (required; relative to the manifest's folder, or absolute), and optionally
``organ``, ``label``, ``patient_id``, ``split`` and ``label_map`` (a segmentation of the image, to
cut organ crops from it). Any other column is kept as metadata of the row.

A ``split`` must be ``train``, ``val`` or ``test`` (any case), or empty to be assigned by hashing: a
typo such as ``trian`` is an error naming the line, not a row silently left out of every split.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from organfm.data.errors import DataError
from organfm.data.splits import parse_split

__all__ = ["ManifestRow", "load_manifest", "is_manifest", "MANIFEST_COLUMNS"]

MANIFEST_COLUMNS = ("path", "organ", "label", "patient_id", "split", "label_map")
_SUFFIXES = (".csv", ".jsonl")


@dataclass
class ManifestRow:
    """One manifest line; ``path`` and ``label_map`` are resolved to absolute paths."""

    line: int
    path: str
    organ: str | None = None
    label: str | int | None = None
    patient_id: str | None = field(default=None, repr=False)
    split: str | None = None
    label_map: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def is_manifest(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a manifest (by suffix: .csv or .jsonl)."""
    return str(path).lower().endswith(_SUFFIXES)


def load_manifest(path: str | os.PathLike[str]) -> list[ManifestRow]:
    """Read a CSV (with a header line) or JSONL manifest.

    Args:
        path: the manifest file.

    Returns:
        One row per non-empty line, in file order. In CSV files a label that is an integer
        literal becomes an ``int``; JSONL values keep their JSON types.

    Raises:
        DataError: unreadable file, missing ``path`` column, or a malformed line (named by number).
    """
    manifest = Path(path)
    try:
        text = manifest.read_text(encoding="utf-8-sig")  # -sig: spreadsheet exports start with a BOM
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{manifest}: cannot read manifest ({type(e).__name__}: {e})") from e
    if manifest.suffix.lower() == ".jsonl":
        entries = _jsonl_entries(text, manifest)
    else:
        entries = _csv_entries(text, manifest)
    return [_row(line, entry, manifest) for line, entry in entries]


def _csv_entries(text: str, manifest: Path) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or "path" not in [f.strip() for f in reader.fieldnames]:
        raise DataError(f"{manifest}: manifest has no 'path' column (columns: {reader.fieldnames})")
    entries = []
    for entry in reader:
        line = reader.line_num
        clean = {k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in entry.items() if k is not None}
        if clean.get("label") not in (None, "") and _is_int(clean["label"]):
            clean["label"] = int(clean["label"])
        if any(v not in (None, "") for v in clean.values()):
            entries.append((line, clean))
    return entries


def _jsonl_entries(text: str, manifest: Path) -> list[tuple[int, dict[str, Any]]]:
    entries = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(f"{manifest} line {line}: invalid JSON ({e.msg})") from e
        if not isinstance(entry, dict):
            raise DataError(f"{manifest} line {line}: expected a JSON object")
        entries.append((line, entry))
    return entries


def _row(line: int, entry: dict[str, Any], manifest: Path) -> ManifestRow:
    def value(key: str) -> Any:
        v = entry.get(key)
        return None if v is None or v == "" else v

    if value("path") is None:
        raise DataError(f"{manifest} line {line}: empty 'path'")
    label_map = value("label_map")
    split = parse_split(value("split"), f"{manifest} line {line}")
    return ManifestRow(
        line=line,
        path=_resolve(str(value("path")), manifest),
        organ=None if value("organ") is None else str(value("organ")),
        label=value("label"),
        patient_id=None if value("patient_id") is None else str(value("patient_id")),
        split=split or None,
        label_map=None if label_map is None else _resolve(str(label_map), manifest),
        extra={k: v for k, v in entry.items() if k not in MANIFEST_COLUMNS},
    )


def _resolve(path: str, manifest: Path) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else manifest.parent / p)


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
