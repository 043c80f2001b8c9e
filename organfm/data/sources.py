"""From a source (folder, manifest, npz, tar, file, volume + label map) to a list of records.

Indexing is cheap but strict: it checks existence, suffix and headers (DICOM without pixels,
NIfTI header, image signature) and hashes content for duplicate detection, so a broken dataset
fails here, before training, with a message naming the file. Full decoding happens at read time.

Organ names come from ``organ_from``:

============  ===============================================================================
``folder``    folder source: first folder under the root; tar: the member's parent folder;
              manifest: the file's parent folder
``manifest``  the manifest's ``organ`` column
``dicom``     DICOM BodyPartExamined, lower-cased
``file``      the source file's stem (npz: ``pneumoniamnist``), or each manifest path's stem
``label_map`` class names of a segmentation (needs ``label_map`` and ``class_map``)
``auto``      label_map if given; else the manifest column, the folder, the npz stem, and for
              DICOM files outside organ folders BodyPartExamined
============  ===============================================================================
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from organfm.data.archive import DEFAULT_MAX_MEMBER_BYTES, TarArchive, is_tar
from organfm.data.errors import DataError
from organfm.data.manifest import is_manifest, load_manifest
from organfm.data.readers import Header, Reader, find_reader, npz_layout
from organfm.data.records import Record, content_hash, hash_file
from organfm.data.runfiles import printable
from organfm.data.splits import SPLITS
from organfm.data.volumes import index_organ_crops, load_class_map
from organfm.data.voxel_cap import DEFAULT_MAX_ARRAY_VOXELS, load_npz_array, npz_headers

__all__ = ["ORGAN_FROM", "SourceIndex", "index_source"]

ORGAN_FROM = ("auto", "folder", "manifest", "dicom", "file", "label_map")


@dataclass
class SourceIndex:
    """Records of a source, with the archives they live in and what indexing skipped.

    Attributes:
        kind: ``folder``, ``manifest``, ``npz``, ``tar``, ``file`` or ``label_map``.
        records: in a deterministic order (sorted keys; manifest order for manifests).
        archives: archive path -> opened archive, for records that are archive members.
        skipped: ``(where, reason)`` of files dropped with ``on_error="skip"``.
    """

    kind: str
    records: list[Record]
    archives: dict[str, TarArchive] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def index_source(source: str | os.PathLike[str], *, readers: dict[str, Reader], organ_from: str = "auto",
                 label_map: str | None = None, class_map: str | None = None, class_map_key: str | None = None,
                 organs: Sequence[str] | None = None, min_pixels: int = 64, crop_margin: int = 4, dim: int = 2,
                 on_error: str = "raise", max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> SourceIndex:
    """List the records of ``source``; see ``build_dataset`` for the meaning of the arguments.

    Args:
        source: folder, manifest (.csv/.jsonl), .npz, tar archive, NIfTI/DICOM file, or DICOM folder.
        readers: reader name -> instance, shared with the dataset so caches carry over.
        max_member_bytes: largest archive member read; larger image members are refused (or skipped).

    Returns:
        The source index. Raises DataError for unreadable inputs unless ``on_error="skip"``.
    """
    indexer = _Indexer(readers=readers, organ_from=organ_from, dim=dim, on_error=on_error)
    path = Path(source).expanduser()
    if label_map is not None:
        if organ_from not in ("auto", "label_map"):
            raise ValueError(f"organ_from={organ_from!r} cannot be used with label_map; use 'label_map'")
        if class_map is None:
            raise ValueError("label_map needs class_map (label id -> organ name JSON)")
        crops = indexer.crops(str(path), str(Path(label_map).expanduser()), load_class_map(class_map, class_map_key),
                              key_prefix=path.name, organs=organs, min_pixels=min_pixels, margin=crop_margin)
        return SourceIndex("label_map", crops, skipped=indexer.skipped)
    if organ_from == "label_map" and not is_manifest(path):
        raise ValueError('organ_from="label_map" needs label_map= and class_map=')
    if not path.exists():
        raise DataError(f"{path}: source does not exist")
    if path.is_dir():
        return SourceIndex("folder", indexer.folder(path), skipped=indexer.skipped)
    if is_manifest(path):
        class_ids = load_class_map(class_map, class_map_key) if class_map is not None else None
        records = indexer.manifest(path, class_ids, organs=organs, min_pixels=min_pixels, margin=crop_margin)
        return SourceIndex("manifest", records, skipped=indexer.skipped)
    if is_tar(path):
        archive = TarArchive(path, keep=_wanted_member, max_member_bytes=max_member_bytes)
        return SourceIndex("tar", indexer.archive(archive), {archive.path: archive}, indexer.skipped)
    if organ_from not in ("auto", "file", "dicom"):
        raise ValueError(f"organ_from={organ_from!r} does not apply to a single file; use auto, file or dicom")
    records = indexer.file(str(path), key=path.name, organ=_stem(path.name) if organ_from == "file" else None)
    return SourceIndex("npz" if path.suffix.lower() == ".npz" else "file", records, skipped=indexer.skipped)


class _Indexer:
    """Turns files into records with one set of options; collects skips when ``on_error="skip"``."""

    def __init__(self, *, readers: dict[str, Reader], organ_from: str, dim: int, on_error: str) -> None:
        if organ_from not in ORGAN_FROM:
            raise ValueError(f"unknown organ_from {organ_from!r}; valid: {', '.join(ORGAN_FROM)}")
        self.readers, self.organ_from, self.dim, self.on_error = readers, organ_from, dim, on_error
        self.skipped: list[tuple[str, str]] = []

    def _guard(self, where: str, fn: Any, *args: Any, **kwargs: Any) -> list[Record]:
        try:
            return fn(*args, **kwargs)
        except DataError as e:
            if self.on_error == "raise":
                raise
            self.skipped.append((printable(where), str(e)))
            return []

    def folder(self, root: Path) -> list[Record]:
        if self.organ_from not in ("auto", "folder", "dicom"):
            raise ValueError(f"organ_from={self.organ_from!r} does not apply to a folder; use auto, folder or dicom")
        records = []
        for file in sorted(p for p in root.rglob("*") if p.is_file() and not _hidden(p.relative_to(root).parts)):
            rel = file.relative_to(root)
            if find_reader(file.name) is None and not _is_dicom_file(file):
                continue  # not an image (README, json sidecars, ...)
            # names that are not UTF-8 are read from their real path; keys and organs show them escaped
            organ = printable(rel.parts[0]) if len(rel.parts) > 1 and self.organ_from != "dicom" else None
            records += self._guard(str(file), self.file, str(file), key=printable(rel.as_posix()), organ=organ)
        return records

    def archive(self, archive: TarArchive) -> list[Record]:
        if self.organ_from not in ("auto", "folder", "dicom"):
            raise ValueError(f"organ_from={self.organ_from!r} does not apply to an archive; use auto, folder or dicom")
        records: list[Record] = []
        for member, reason in archive.rejected:  # unsafe names, members over the size cap
            records += self._guard(f"{archive.path}::{member}", _refuse, f"{archive.path}::{member}: {reason}")
        for member in sorted(archive.members):
            parts = member.split("/")
            reader_name = find_reader(member)
            if not _wanted_member(member):
                continue
            parent = printable(parts[-2]) if len(parts) > 1 and self.organ_from != "dicom" else None
            records += self._guard(f"{archive.path}::{member}", self._member, archive, member, parent, reader_name)
        return records

    def _member(self, archive: TarArchive, member: str, organ: str | None, reader_name: str | None) -> list[Record]:
        # read inside the guard: a member that cannot be read is skipped like a file that cannot be decoded
        return self.file(archive.path, key=printable(member), organ=organ, data=archive.read(member), member=member,
                         reader_name=reader_name)

    def manifest(self, manifest: Path, class_ids: dict[int, str] | None, *, organs: Sequence[str] | None,
                 min_pixels: int, margin: int) -> list[Record]:
        records = []
        for row in load_manifest(manifest):
            where = f"{manifest} line {row.line}"
            key = os.path.relpath(row.path, manifest.parent).replace(os.sep, "/")
            if row.label_map is not None or self.organ_from == "label_map":
                if class_ids is None or row.label_map is None:
                    raise ValueError(f"{where}: organ crops need a label_map column and class_map=")
                new = self._guard(where, self.crops, row.path, row.label_map, class_ids, key_prefix=key,
                                  organs=organs, min_pixels=min_pixels, margin=margin)
            else:
                organ = {"folder": Path(row.path).parent.name, "file": _stem(Path(row.path).name),
                         "dicom": None}.get(self.organ_from, row.organ)
                new = self._guard(where, self._manifest_file, row.path, key, organ, where)
            for record in new:
                record.label = row.label if row.label is not None else record.label
                record.patient_id = row.patient_id or record.patient_id
                record.split = row.split or record.split
                record.meta.update(row.extra)
            records += new
        return records

    def _manifest_file(self, path: str, key: str, organ: str | None, where: str) -> list[Record]:
        if not Path(path).is_file():
            raise DataError(f"{where}: {path} does not exist")
        return self.file(path, key=key, organ=organ)

    def crops(self, image: str, label_map: str, class_ids: dict[int, str], *, key_prefix: str,
              organs: Sequence[str] | None, min_pixels: int, margin: int) -> list[Record]:
        for path in (image, label_map):
            if find_reader(path) != "nifti":
                raise DataError(f"{path}: organ crops need NIfTI volumes (.nii or .nii.gz)")
            if not Path(path).is_file():
                raise DataError(f"{path}: file not found")
        return index_organ_crops(image, label_map, class_ids, reader=self.readers["nifti"],  # type: ignore[arg-type]
                                 key_prefix=key_prefix, organs=organs, min_pixels=min_pixels, margin=margin,
                                 dim=self.dim)

    def file(self, path: str, *, key: str, organ: str | None, data: bytes | None = None,
             member: str | None = None, reader_name: str | None = None) -> list[Record]:
        """Records of one file: itself, its frames or slices (``dim=2``), or its npz rows."""
        name = member or path
        where = path if member is None else f"{path}::{member}"
        if data is None and not Path(path).is_file():
            raise DataError(f"{where}: file not found")
        size = len(data) if data is not None else os.path.getsize(path)
        if size == 0:
            raise DataError(f"{where}: empty file")
        reader_name = reader_name or find_reader(name) or (
            "dicom" if member is None and _is_dicom_file(Path(path)) else None)
        if reader_name is None:
            raise DataError(f"{where}: unsupported file type (no reader for this suffix)")
        if reader_name == "npz":
            return self._npz(path, key=key, organ=organ)
        reader: Any = self.readers[reader_name]
        try:
            header: Header = reader.read_header(path, data=data, member=member)
        except (DataError, MemoryError):
            raise
        except Exception as e:  # e.g. pydicom parses elements lazily and fails on first access to a damaged one
            raise DataError(f"{where}: cannot read header ({type(e).__name__}: {e})") from e
        if header.body_part and (self.organ_from == "dicom" or (self.organ_from == "auto" and organ is None)):
            organ = header.body_part
        file_hash = content_hash(data) if data is not None else hash_file(path)
        base = Record(path=path, reader=reader_name, key=key, member=member, organ=organ, content_hash=file_hash,
                      group=file_hash, patient_id=header.patient_key)
        if self.dim == 3:
            if header.num_items < 2:
                raise DataError(f"{where}: a 2D image, but dim=3 needs volumes (NIfTI, multi-frame DICOM)")
            return [base]
        if not header.stacked:
            return [base]
        # one record per frame / axial slice; slices of one file share its group, so one split
        return [_replace(base, index=k, key=f"{key}#{k}", content_hash=content_hash(file_hash.encode(), k))
                for k in range(header.num_items)]

    def _npz(self, path: str, *, key: str, organ: str | None) -> list[Record]:
        if self.organ_from in ("auto", "file") and organ is None:
            organ = _stem(Path(path).name)
        reader = self.readers["npz"]
        # headers first: a labels member is inflated whole too, so it gets the same cap as the images
        names = list(npz_headers(path, where=path))
        cap = getattr(reader, "max_array_voxels", DEFAULT_MAX_ARRAY_VOXELS)
        labels_of = {n: load_npz_array(path, n, where=path, max_voxels=cap) for n in names if n.endswith("_labels")}
        image_keys = sorted((n for n in names if n.endswith("_images")), key=_split_order)
        if not image_keys:
            raise DataError(f"{path}: no '<split>_images' arrays (found: {', '.join(names)})")
        records = []
        for image_key in image_keys:
            split = image_key[: -len("_images")]
            images = reader.load_array(path, image_key)  # type: ignore[attr-defined]
            try:
                is_volume, _ = npz_layout(images.shape)
            except ValueError as e:
                raise DataError(f"{path}::{image_key}: {e}") from e
            labels = labels_of.get(f"{split}_labels")
            if labels is not None and len(labels) != len(images):
                raise DataError(f"{path}::{split}_labels: {len(labels)} labels for {len(images)} images")
            if self.dim == 3 and not is_volume:
                raise DataError(f"{path}::{image_key}: 2D images, but dim=3 needs volumes")
            for row in range(len(images)):
                row_hash = content_hash(np.ascontiguousarray(images[row]).data)
                base = Record(path=path, reader="npz", key=f"{key}::{image_key}[{row}]", member=image_key, row=row,
                              organ=organ, label=None if labels is None else _label(labels[row]), split=split,
                              content_hash=row_hash, group=row_hash)
                if is_volume and self.dim == 2:
                    records += [_replace(base, index=k, key=f"{base.key}#{k}", content_hash=content_hash(
                        row_hash.encode(), k)) for k in range(images.shape[1])]
                else:
                    records.append(base)
        return records


def _wanted_member(name: str) -> bool:
    """Archive members that become records; module level so a TarArchive holding it pickles."""
    # .DS_Store, AppleDouble "._x" files, npz (a source, not an image) are left in the archive
    return not _hidden(name.split("/")) and find_reader(name) not in (None, "npz")


def _refuse(message: str) -> list[Record]:
    raise DataError(message)


def _replace(record: Record, **changes: Any) -> Record:
    # a fresh meta dict: copies must not share one
    return dataclasses.replace(record, meta=dict(record.meta), **changes)


def _label(value: np.ndarray) -> int | tuple[int, ...]:
    flat = np.asarray(value).reshape(-1)
    # (N, 1) class labels become ints; multi-label rows (N, K) stay tuples
    return int(flat[0]) if flat.size == 1 else tuple(int(v) for v in flat)


def _split_order(key: str) -> tuple[int, str]:
    split = key[: -len("_images")]
    return (SPLITS.index(split) if split in SPLITS else len(SPLITS), split)


def _stem(name: str) -> str:
    # "example_ct.nii.gz" -> "example_ct": Path.stem would keep ".nii"
    return name.split(".", 1)[0] or name


def _hidden(parts: Sequence[str]) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in parts)


def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False
