"""What one dataset item points at: a file, or a part of one (archive member, npz row, slice, crop)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Record", "content_hash", "hash_file"]


@dataclass(slots=True)
class Record:
    """One item: where its pixels are, which organ it shows, and which split it belongs to.

    Attributes:
        path: the file on disk (the archive or npz for members and rows).
        reader: registered reader name used to decode it (``"image"``, ``"dicom"``, ``"nifti"``, ``"npz"``).
        key: stable id relative to the source root, used in split files and skip logs.
        member: archive member name, or the npz array key.
        row: row of an npz array.
        index: frame of a multi-frame DICOM, or axial slice of a volume.
        bbox: crop box in the item's spatial axes, ``(y0, y1, x0, x1)`` or ``(z0, z1, y0, y1, x0, x1)``.
        organ: organ name, or ``None`` when unknown.
        label: optional class label (str or int) for evaluation.
        patient_id: grouping key for splits only; kept out of ``repr`` so it never reaches a log.
        split: ``"train"``/``"val"``/``"test"`` (or a manifest's own name), ``None`` until assigned.
        content_hash: hash of the item's bytes, for exact-duplicate detection.
        group: hash of what must stay in one split (patient, or the file a slice came from).
        meta: extra manifest columns and source details.
    """

    path: str
    reader: str
    key: str
    member: str | None = None
    row: int | None = None
    index: int | None = None
    bbox: tuple[int, ...] | None = None
    organ: str | None = None
    label: str | int | None = None
    patient_id: str | None = field(default=None, repr=False)
    split: str | None = None
    content_hash: str = ""
    group: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """Human-readable location for error messages: path, then member, row and index."""
        text = self.path
        if self.member is not None:
            text += f"::{self.member}"
        if self.row is not None:
            text += f"[{self.row}]"
        if self.index is not None:
            text += f"#{self.index}"
        return text


def content_hash(data: bytes | memoryview, *extra: object) -> str:
    """Hex digest of ``data`` (and of ``extra`` parts such as a slice index); fast, not cryptographic use."""
    h = hashlib.blake2b(data, digest_size=16)
    for part in extra:
        h.update(b"\0" + str(part).encode())
    return h.hexdigest()


def hash_file(path: str | Path) -> str:
    """Hex digest of a file's bytes, equal to ``content_hash(path.read_bytes())``.

    Streamed in 1 MiB chunks, so a large volume or weights file is never held in memory just to be hashed.

    Args:
        path: the file.

    Returns:
        The blake2b-128 hex digest (32 characters).
    """
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
