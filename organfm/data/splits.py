"""Patient-level train/val/test splits that no patient and no duplicate image crosses.

Records that must stay together form one group: the same patient, the same source file (all
slices and crops of one scan), or the same content (exact duplicates, when they were kept). Groups
that share any of these are merged, and each merged group gets its split from a hash of its key
and the seed, so the assignment of one scan never depends on which other scans are present.
Splits already given by the data (a manifest column, npz keys) are kept as they are.
"""
from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from organfm.data.records import Record, content_hash

__all__ = ["SPLITS", "SavedSplit", "assign_splits", "save_split", "load_split"]

SPLITS = ("train", "val", "test")
# group key prefixes, in root priority order; patient ids are only ever stored hashed
_PATIENT, _SOURCE, _CONTENT = "0p:", "1s:", "2c:"


@dataclass
class SavedSplit:
    """A split assignment read back from a file: by record key, and by group for new records."""

    by_key: dict[str, str] = field(default_factory=dict)
    by_group: dict[str, str] = field(default_factory=dict)


def assign_splits(records: list[Record], *, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0,
                  saved: SavedSplit | None = None) -> None:
    """Fill in ``split`` for records that have none, and set ``group`` to the merged group key (in place).

    Args:
        records: records with ``content_hash`` and ``group`` (the source file's hash) set.
        fractions: train, val, test shares (normalised to sum to 1).
        seed: changes the assignment; the same seed always gives the same splits.
        saved: a loaded assignment; its entries win over hashing (given splits still win over it).
    """
    total = float(sum(fractions))
    if len(fractions) != len(SPLITS) or total <= 0 or min(fractions) < 0:
        raise ValueError(f"split_fractions must be three non-negative numbers, got {tuple(fractions)}")
    bounds = [sum(fractions[: i + 1]) / total for i in range(len(SPLITS))]
    roots = _merged_groups(records)
    split_of_group: dict[str, str] = {}
    for record, root in zip(records, roots):
        record.group = root
        if record.split is not None:
            split_of_group.setdefault(root, record.split)  # a given split pulls its whole group along
    for record in records:
        if record.split is not None:
            continue
        if saved is not None and record.key in saved.by_key:
            record.split = saved.by_key[record.key]
        elif record.group in split_of_group:
            record.split = split_of_group[record.group]
        elif saved is not None and record.group in saved.by_group:
            record.split = saved.by_group[record.group]
        else:
            record.split = _hashed_split(record.group, seed, bounds)
        split_of_group.setdefault(record.group, record.split)


def save_split(assignment: Iterable[tuple[str, str, str]], path: str | os.PathLike[str]) -> None:
    """Write ``key,group,split`` rows to a CSV (group keys are hashes: no patient ids on disk).

    Args:
        assignment: ``(record.key, record.group, record.split)`` for every record, every split.
        path: the CSV to write (parent folders are created).
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "group", "split"])
        writer.writerows(assignment)


def load_split(path: str | os.PathLike[str]) -> SavedSplit:
    """Read a CSV written by :func:`save_split`."""
    saved = SavedSplit()
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"key", "split"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: a split file needs 'key' and 'split' columns")
        for row in reader:
            saved.by_key[row["key"]] = row["split"]
            if row.get("group"):
                saved.by_group.setdefault(row["group"], row["split"])
    return saved


def _merged_groups(records: Sequence[Record]) -> list[str]:
    """Union-find over patient / source file / content: one root key per record."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving keeps chains short
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            # the smaller key becomes the root: patients before files before contents (by prefix),
            # so a patient's split does not change when one more of their images is added
            parent[max(ra, rb)] = min(ra, rb)

    bases = []
    for record in records:
        if record.patient_id:
            base = _PATIENT + content_hash(record.patient_id.encode())
        else:
            base = _SOURCE + (record.group or record.content_hash)
        bases.append(base)
        union(base, _CONTENT + record.content_hash)
        if record.patient_id and record.group:
            union(base, _SOURCE + record.group)  # slices of one scan stay with their patient
    return [find(base) for base in bases]


def _hashed_split(group: str, seed: int, bounds: list[float]) -> str:
    u = int.from_bytes(hashlib.blake2b(f"{seed}:{group}".encode(), digest_size=8).digest(), "big") / 2**64
    for name, bound in zip(SPLITS, bounds):
        if u < bound:
            return name
    return SPLITS[-1]
