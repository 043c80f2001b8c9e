"""Patient-level train/val/test splits that no patient and no duplicate image crosses.

Records that must stay together form one group: the same patient, the same source file (all
slices and crops of one scan), or the same content (exact duplicates, when they were kept). Groups
that share any of these are merged, and each merged group gets its split from a hash of its key
and the seed, so the assignment of one scan never depends on which other scans are present.
Splits already given by the data (a manifest column, npz keys) are kept as they are.

Split files name a patient's group by a keyed hash (blake2b with a random 32-byte key) of the
patient id, never by a plain hash, which an 8-digit id would give up to a search in minutes. The
key lives beside the split file (``splits.csv.key``, mode 0600) so a reused split file keeps placing
a patient's new images with the old ones; exports never carry it. Which split a group lands in is
still drawn from the seed and the in-memory identity, so it does not depend on the key.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from organfm.data.errors import DataError
from organfm.data.records import Record, content_hash
from organfm.outputs.atomic import write_atomic

__all__ = ["ALL", "selected_split", "SPLITS", "SavedSplit", "parse_split", "assign_splits", "save_split", "load_split", "key_path", "load_or_create_key",
           "new_key"]

SPLITS = ("train", "val", "test")
ALL = "all"  # ``data.split=all``: every image of every split (``None`` says the same)


def selected_split(split: str | None) -> str | None:
    """The split to select, ``None`` for all of them (``"all"`` and ``None`` both mean every image)."""
    return None if split is None or split == ALL else split


def parse_split(value: object, where: str, *, empty: str = "empty to assign it by hashing") -> str | None:
    """A manifest's split cell as ``train``/``val``/``test`` (any case), or None when empty.

    A typo is an error, not a row silently left out of every split: every manifest (image or subject) uses
    this one check, so each says "line 7: unknown split 'trian' (did you mean 'train'?)".

    Args:
        value: the cell (None or "" for no split).
        where: the file and line, e.g. ``"subjects.csv line 7"``.
        empty: what an empty cell means, for the message.

    Raises:
        DataError: an unknown split name.
    """
    import difflib

    if value is None or str(value).strip() == "":
        return None
    split = str(value).strip().lower()
    if split not in SPLITS:
        close = difflib.get_close_matches(split, SPLITS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(f"{where}: unknown split {value!r}{hint}; a split is one of {', '.join(SPLITS)}, or {empty}")
    return split
# group key prefixes, in root priority order; patient ids are only ever stored hashed
_PATIENT, _SOURCE, _CONTENT = "0p:", "1s:", "2c:"


@dataclass
class SavedSplit:
    """A split assignment read back from a file: by record key, and by group for new records."""

    by_key: dict[str, str] = field(default_factory=dict)
    by_group: dict[str, str] = field(default_factory=dict)


def assign_splits(records: list[Record], *, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0,
                  saved: SavedSplit | None = None, key: bytes | None = None) -> None:
    """Fill in ``split`` for records that have none, and set ``group`` to the merged group key (in place).

    Args:
        records: records with ``content_hash`` and ``group`` (the source file's hash) set.
        fractions: train, val, test shares (normalised to sum to 1).
        seed: changes the assignment; the same seed always gives the same splits.
        saved: a loaded assignment; its entries win over hashing (given splits still win over it).
        key: secret of the patient pseudonyms in ``group`` (see :func:`load_or_create_key`); a fresh
            random one if ``None``.
    """
    total = float(sum(fractions))
    if len(fractions) != len(SPLITS) or total <= 0 or min(fractions) < 0:
        raise ValueError(f"split_fractions must be three non-negative numbers, got {tuple(fractions)}")
    bounds = [sum(fractions[: i + 1]) / total for i in range(len(SPLITS))]
    roots = _merged_groups(records)
    key = new_key() if key is None else key
    pseudonyms = {root: _pseudonym(root, key) for root in set(roots)}
    split_of_group: dict[str, str] = {}
    for record, root in zip(records, roots):
        record.group = pseudonyms[root]
        if record.split is not None:
            split_of_group.setdefault(record.group, record.split)  # a given split pulls its whole group along
    for record, root in zip(records, roots):
        if record.split is not None:
            continue
        if saved is not None and record.key in saved.by_key:
            record.split = saved.by_key[record.key]
        elif record.group in split_of_group:
            record.split = split_of_group[record.group]
        elif saved is not None and record.group in saved.by_group:
            record.split = saved.by_group[record.group]
        else:
            record.split = _hashed_split(root, seed, bounds)  # key-independent: same seed, same split
        split_of_group.setdefault(record.group, record.split)


def save_split(assignment: Iterable[tuple[str, str, str]], path: str | os.PathLike[str]) -> None:
    """Write ``key,group,split`` rows to a CSV atomically (patient groups are keyed hashes: no ids on disk).

    Args:
        assignment: ``(record.key, record.group, record.split)`` for every record, every split.
        path: the CSV to write (parent folders are created).
    """
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["key", "group", "split"])
    writer.writerows(assignment)
    write_atomic(path, text.getvalue())  # a crash mid-write must not leave a split file a later run trusts


def key_path(split_file: str | os.PathLike[str]) -> Path:
    """Where the pseudonym key of ``split_file`` lives: beside it, ``<name>.key``."""
    return Path(f"{split_file}.key")


def new_key() -> bytes:
    """A fresh random pseudonym key (32 bytes)."""
    return secrets.token_bytes(32)


def load_or_create_key(split_file: str | os.PathLike[str], key: bytes | None = None) -> bytes:
    """The pseudonym key beside ``split_file``: read it, or write ``key`` (or a new one) there.

    Args:
        split_file: the split CSV the key belongs to.
        key: the key to store when none exists yet (e.g. the one the split was made with).

    Raises:
        DataError: the key file exists but is not 64 hex digits.
    """
    path = key_path(split_file)
    if path.is_file():
        text = path.read_text(encoding="ascii", errors="replace").strip()
        try:
            stored = bytes.fromhex(text)
        except ValueError:
            stored = b""
        if len(stored) != 32:
            raise DataError(f"{path}: not a split key (expected 64 hex digits); delete it together with "
                            f"{Path(split_file).name} to make a new split")
        return stored
    key = new_key() if key is None else key
    write_atomic(path, key.hex() + "\n", mode=0o600)  # a secret: readable by its owner only
    return key


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


def _pseudonym(root: str, key: bytes) -> str:
    # only patient groups derive from an identifier; file and content hashes stay as they are
    if not root.startswith(_PATIENT):
        return root
    return _PATIENT + hashlib.blake2b(root.encode(), key=key, digest_size=16).hexdigest()


def _hashed_split(group: str, seed: int, bounds: list[float]) -> str:
    u = int.from_bytes(hashlib.blake2b(f"{seed}:{group}".encode(), digest_size=8).digest(), "big") / 2**64
    for name, bound in zip(SPLITS, bounds):
        if u < bound:
            return name
    return SPLITS[-1]
