"""The dataset over records, and ``build_dataset``: the one entry point from a source to a dataset."""
from __future__ import annotations

import operator
import os
import random
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from organfm.data.archive import DEFAULT_MAX_MEMBER_BYTES, TarArchive
from organfm.data.dedup import drop_duplicates
from organfm.data.errors import DataError, append_skip_log, count_skips
from organfm.data.intensity import INTENSITY_MODES, normalize_intensity
from organfm.data.readers import DEFAULT_MAX_IMAGE_PIXELS, Reader, create_reader, list_readers
from organfm.data.records import Record
from organfm.data.sample import IMAGE, INDEX, ORGAN, UNKNOWN_ORGAN, Sample
from organfm.data.sources import index_source
from organfm.data.splits import SPLITS, assign_splits, selected_split, load_or_create_key, load_split, new_key, save_split
from organfm.data.voxel_cap import DEFAULT_MAX_ARRAY_VOXELS, DEFAULT_MAX_VOLUME_VOXELS

__all__ = ["OrganDataset", "build_dataset", "resize_image"]

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as Pillow's "L" conversion


class OrganDataset(Dataset):
    """Items ``{"image", "organ", "index"}`` read from records, normalised to [0, 1] once on read.

    Usually made by :func:`build_dataset`. Picklable for DataLoader workers: decoded caches and
    decompressed archives are left out of the pickle and rebuilt by each worker on first use.

    Args:
        records: the items, in order.
        organs: organ names; an item's ``organ`` is its name's position here (-1 when unknown).
        readers: reader name -> reader.
        archives: archive path -> archive, for records that are archive members.
        intensity, window, percentiles: normalisation (see :func:`normalize_intensity`).
        channels: 1 (RGB becomes luminance) or 3 (gray is repeated).
        image_size: resize to (S, S) or (S, S, S) with antialiasing; ``None`` keeps the native size.
        dim: 2 for (C, H, W) items, 3 for (C, D, H, W).
        on_error: ``"raise"`` a DataError, or ``"skip"`` to return a random other item that reads
            in place of an unreadable one (see :meth:`__getitem__`), counting the skip.
        skip_log_dir: folder for per-process skip logs (see :func:`organfm.data.errors.count_skips`).
        assignment: ``(key, group, split)`` of every record of the source, for :meth:`save_split`.
        build_summary: facts from building (source, duplicates, splits) merged into :meth:`summary`.
        split_key: pseudonym key of the patient groups in ``assignment``, written beside saved splits.
        substitute_seed: seed of the substitutes' draw.
    """

    def __init__(self, records: Sequence[Record], *, organs: Sequence[str], readers: dict[str, Reader],
                 archives: dict[str, TarArchive] | None = None, intensity: str = "minmax",
                 window: Sequence[float] | None = None, percentiles: Sequence[float] = (0.5, 99.5),
                 channels: int = 1, image_size: int | None = None, dim: int = 2, on_error: str = "raise",
                 skip_log_dir: str | None = None, assignment: list[tuple[str, str, str]] | None = None,
                 build_summary: dict[str, Any] | None = None, split_key: bytes | None = None,
                 substitute_seed: int = 0) -> None:
        self.records = list(records)
        self.organs = list(organs)
        self._readers, self._archives = readers, archives or {}
        self.intensity, self.window, self.percentiles = intensity, window, tuple(percentiles)
        self.channels, self.image_size, self.dim = channels, image_size, dim
        self.on_error, self.skip_log_dir = on_error, skip_log_dir
        self._assignment = assignment if assignment is not None else [(r.key, r.group, r.split) for r in records]
        self._build_summary = build_summary or {}
        self._split_key = split_key if split_key is not None else new_key()
        self.substitute_seed = substitute_seed
        organ_index = {name: i for i, name in enumerate(self.organs)}
        self._organ_ids = [organ_index.get(r.organ, UNKNOWN_ORGAN) if r.organ else UNKNOWN_ORGAN for r in self.records]
        self.num_skipped = 0  # in this process; workers' skips are in the skip log
        self._bad: dict[int, str] = {}  # unreadable indices seen by this process: not decoded again

    @property
    def labels(self) -> list[Any]:
        """Per item: its label (str, int, or a tuple for multi-label rows) or ``None``."""
        return [r.label for r in self.records]

    @property
    def organ_ids(self) -> list[int]:
        """Per item: the organ id returned in ``item["organ"]``."""
        return list(self._organ_ids)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int | tuple[int, int]) -> Sample:
        """Item ``i``, or ``(i, sample_seed)`` as the resumable sampler yields it.

        With ``on_error="skip"`` an unreadable item is replaced by another item drawn at random from
        ``(substitute_seed, sample_seed, i)``: not always the same neighbour or item 0 (which would
        oversample it), and the same draw after a resume, in any worker. Each unreadable item is
        counted once per request, plus once for each substitute first found unreadable.
        """
        n = len(self.records)
        i, sample_seed = (i if isinstance(i, tuple) else (i, None))
        i = operator.index(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for {n} items")
        if self.on_error == "raise":
            return self._load(i)
        if i not in self._bad:
            try:
                return self._load(i)
            except DataError as e:
                self._bad[i] = str(e)
        self._note_skip(i, self._bad[i])
        for k in self._substitutes(i, sample_seed):
            if k in self._bad:
                continue  # known bad: whether this process found it or not, the draw moves on the same way
            try:
                return self._load(k)
            except DataError as e:
                self._bad[k] = str(e)
                self._note_skip(k, str(e))
        raise DataError(f"{self.records[i].where}: unreadable, and none of the other {n - 1} items could be read "
                        "either (see the skip log)")

    def _substitutes(self, i: int, sample_seed: int | None) -> Any:
        """Candidates for item ``i``: random draws, then every other index from a random start."""
        n = len(self.records)
        rng = random.Random(f"{self.substitute_seed}:{sample_seed}:{i}")  # str seeds are stable across runs
        for _ in range(min(64, n)):
            k = rng.randrange(n)
            if k != i:
                yield k
        start = rng.randrange(n)  # a mostly-bad dataset: a full deterministic sweep ends the search
        for step in range(n):
            if (start + step) % n != i:
                yield (start + step) % n

    def _note_skip(self, k: int, reason: str) -> None:
        self.num_skipped += 1
        if self.skip_log_dir is not None:
            append_skip_log(self.skip_log_dir, self.records[k].where, reason)

    def read_array(self, i: int) -> tuple[np.ndarray, dict[str, Any]]:
        """The raw decoded item ``i`` (cropped, before channel matching and normalisation) and its meta."""
        record = self.records[i]
        try:
            archive = self._archives.get(record.path)
            data = archive.read(record.member) if archive is not None and record.member is not None else None
            array, meta = self._readers[record.reader].read(record.path, data=data, member=record.member,
                                                            row=record.row, index=record.index)
        except (DataError, MemoryError):
            raise  # running out of memory is not a property of the file: never skip it
        except Exception as e:  # anything a decoder throws on bad data must still name the file
            raise DataError(f"{record.where}: {type(e).__name__}: {e}") from e
        if record.bbox is not None:
            array = array[(slice(None),) + tuple(slice(a, b) for a, b in zip(record.bbox[::2], record.bbox[1::2]))]
        if array.ndim != self.dim + 1 or array.size == 0:
            raise DataError(f"{record.where}: decoded shape {array.shape} is not a {self.dim}D channel-first image")
        return array, meta

    def _load(self, i: int) -> Sample:
        array, meta = self.read_array(i)
        array = _match_channels(array, self.channels, self.records[i].where)
        if not np.isfinite(array).all():
            # NaN backgrounds (common in processed MR) become the darkest finite value
            finite = array[np.isfinite(array)]
            array = np.nan_to_num(array, nan=finite.min() if finite.size else 0.0,
                                  posinf=finite.max() if finite.size else 0.0,
                                  neginf=finite.min() if finite.size else 0.0)
        if not meta.get("normalized"):
            array = normalize_intensity(array, self.intensity, window=self.window, percentiles=self.percentiles,
                                        dtype=meta.get("dtype"))
        image = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if self.image_size is not None:
            image = resize_image(image, self.image_size, clamp=self.intensity != "none")
        return {IMAGE: image, ORGAN: self._organ_ids[i], INDEX: i}

    def summary(self) -> dict[str, Any]:
        """Counts for logs: source, items, per-organ counts, duplicates, split sizes, skips (no patient data)."""
        summary = dict(self._build_summary)
        summary["n_items"] = len(self.records)
        summary["organs"] = dict(sorted(Counter(r.organ or "unknown" for r in self.records).items()))
        summary["skipped"] = self.num_skipped
        if self.skip_log_dir is not None:
            # every process (DataLoader workers included): read it at the end of a run for the final count
            summary["skipped_logged"] = count_skips(self.skip_log_dir)
        return summary

    def save_split(self, path: str | os.PathLike[str]) -> None:
        """Write the split of every record of the source (all splits) to a CSV that ``split_file`` reloads.

        The pseudonym key is written beside it (``<path>.key``, mode 0600) unless one is there.
        """
        save_split(self._assignment, path)
        load_or_create_key(path, self._split_key)


def _match_channels(array: np.ndarray, channels: int, where: str) -> np.ndarray:
    if array.shape[0] == channels:
        return array
    if array.shape[0] == 3 and channels == 1:
        return np.tensordot(_LUMA, array, axes=1)[None].astype(np.float32, copy=False)
    if array.shape[0] == 1 and channels == 3:
        return np.repeat(array, 3, axis=0)
    raise DataError(f"{where}: {array.shape[0]} channels cannot become {channels}")


def resize_image(image: torch.Tensor, size: int, *, clamp: bool = True) -> torch.Tensor:
    """(C, *S) -> (C, size, ...) float: antialiased bilinear in 2D, trilinear in 3D (torch has no antialiased
    trilinear); clamped to [0, 1] unless ``clamp`` is False (intensities not min-max scaled)."""
    image = image.float()
    spatial = (size,) * (image.ndim - 1)
    if tuple(image.shape[1:]) == spatial:
        return image
    if image.ndim == 3:
        out = F.interpolate(image[None], size=spatial, mode="bilinear", antialias=True, align_corners=False)[0]
    else:  # torch has no antialiased trilinear mode
        out = F.interpolate(image[None], size=spatial, mode="trilinear", align_corners=False)[0]
    return out.clamp_(0.0, 1.0) if clamp else out


def build_dataset(
    source: str | os.PathLike[str], *, split: str | None = "train", organ_from: str = "auto",
    label_map: str | None = None, class_map: str | None = None, class_map_key: str | None = None,
    organs: Sequence[str] | None = None, min_pixels: int = 64, crop_margin: int = 4, dedup: bool = True,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1), split_seed: int = 0, split_file: str | None = None,
    intensity: str = "minmax", window: Sequence[float] | None = None, percentiles: Sequence[float] = (0.5, 99.5),
    channels: int = 1, image_size: int | None = None, dim: int = 2, on_error: str = "raise",
    skip_log_dir: str | None = None, use_voi: bool | None = None,
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    max_volume_voxels: int = DEFAULT_MAX_VOLUME_VOXELS, max_array_voxels: int = DEFAULT_MAX_ARRAY_VOXELS,
) -> OrganDataset:
    """Index a source, drop exact duplicates, assign patient-level splits, and return one split.

    Args:
        source: organ folders (``root/<organ>/**/*``), a folder of DICOMs, a manifest (.csv/.jsonl),
            a MedMNIST-style .npz, a tar archive (.tar/.tar.gz, read in place), or one NIfTI/DICOM
            file (with ``label_map``: the image volume to cut organ crops from).
        split: the split to return (``"train"``, ``"val"``, ``"test"``, or a manifest's own name);
            ``"all"`` or ``None`` returns every record.
        organ_from: where organ names come from: auto, folder, manifest, dicom, file, label_map
            (see ``organfm.data.sources``).
        label_map: segmentation volume aligned with ``source``; gives one crop per (organ, axial slice).
        class_map: JSON mapping label id (string) -> organ name, flat or several maps under keys.
        class_map_key: which map of ``class_map`` to use (e.g. ``"total"``).
        organs: keep only these organs; also fixes ``ds.organs`` (and so the organ ids) to this list, sorted.
        min_pixels: smallest organ area in a slice (voxels for ``dim=3``) that gives a crop.
        crop_margin: pixels added on every side of an organ's bounding box.
        dedup: drop exact duplicates (same bytes), keeping the first in sorted order.
        split_fractions: train/val/test shares for records without a split.
        split_seed: seed of the hashed split assignment.
        split_file: CSV of a saved assignment: loaded if it exists (its splits win over hashing),
            written after assignment if it does not, so later runs reuse the same split. Its
            pseudonym key lives beside it (``<split_file>.key``); keep the two together.
        intensity: ``minmax``, ``percentile``, ``window``, ``dtype`` or ``none``.
        window: ``(center, width)`` for ``intensity="window"`` (e.g. ``(40, 400)`` HU).
        percentiles: ``(low, high)`` for ``intensity="percentile"``.
        channels: 1 (RGB -> luminance, the default) or 3 (gray repeated to 3 channels).
        image_size: resize every item to this size (bilinear, antialiased); ``None`` keeps native size.
        dim: 2 (volumes and multi-frame files expand into slices) or 3 (whole volumes).
        on_error: ``raise`` (DataError) or ``skip`` (drop unreadable files at indexing, substitute the
            next readable item at read time, and count the skip).
        skip_log_dir: folder where every process appends its skips (``read_skip_log`` reads them).
        use_voi: apply DICOM VOI windows; default: on, except with ``intensity="window"`` where your
            window applies to the modality values (HU) instead.
        max_member_bytes: largest tar member read (compressed tars are streamed, never held whole);
            a larger image member is a DataError naming archive and member, or a skip.
        max_image_pixels: largest PNG/JPEG/BMP/TIFF (width x height) decoded; a bomb is a DataError.
        max_volume_voxels: most voxels a NIfTI, DICOM or npz volume may declare, checked from its header
            before anything is inflated or allocated (``organfm.data.voxel_cap``).
        max_array_voxels: most elements of one npz array (all rows together: numpy inflates it whole).

    Returns:
        The dataset of the requested split. ``ds.organs`` is computed over all splits, so organ
        ids agree between the train, val and test datasets of one source.

    Raises:
        DataError: an unreadable input (with ``on_error="raise"``), named with the reason.
        ValueError: invalid options.
    """
    started = time.perf_counter()
    _check_options(intensity=intensity, window=window, channels=channels, dim=dim, on_error=on_error,
                   image_size=image_size, split_fractions=split_fractions)
    for name, value in (("max_member_bytes", max_member_bytes), ("max_image_pixels", max_image_pixels),
                        ("max_volume_voxels", max_volume_voxels), ("max_array_voxels", max_array_voxels)):
        if value < 1:
            raise ValueError(f"{name} must be positive, got {value}")
    voi = intensity != "window" if use_voi is None else use_voi
    reader_kwargs = {"dicom": {"use_voi": voi, "max_volume_voxels": max_volume_voxels},
                     "image": {"max_image_pixels": max_image_pixels},
                     "nifti": {"max_volume_voxels": max_volume_voxels},
                     "npz": {"max_array_voxels": max_array_voxels, "max_volume_voxels": max_volume_voxels}}
    readers = {name: create_reader(name, **reader_kwargs.get(name, {})) for name in list_readers()}
    index = index_source(source, readers=readers, organ_from=organ_from, label_map=label_map, class_map=class_map,
                         class_map_key=class_map_key, organs=organs, min_pixels=min_pixels, crop_margin=crop_margin,
                         dim=dim, on_error=on_error, max_member_bytes=max_member_bytes)
    split = selected_split(split)  # "all": every split
    records = index.records
    if organs is not None:
        records = [r for r in records if r.organ in set(organs)]
    organ_names = sorted(set(organs)) if organs is not None else sorted({r.organ for r in records if r.organ})
    if split == "train":  # what organ-aware pretraining consumes; evaluation indexes with split=None
        _warn_about_organs(records, organ_names, source, index.kind)
    removed: Counter[str | None] = Counter()
    if dedup:
        records, removed = drop_duplicates(records)
    saved = load_split(split_file) if split_file is not None and Path(split_file).is_file() else None
    key = load_or_create_key(split_file) if split_file is not None else new_key()
    assign_splits(records, fractions=split_fractions, seed=split_seed, saved=saved, key=key)
    assignment = [(r.key, r.group, r.split or "") for r in records]
    if split_file is not None and saved is None:
        save_split(assignment, split_file)
    split_sizes = Counter(r.split for r in records)
    if split is not None and split not in split_sizes and split not in SPLITS:
        raise ValueError(f"split {split!r} not in {source}; available: {', '.join(sorted(map(str, split_sizes)))}")
    if skip_log_dir is not None:
        for where, reason in index.skipped:
            append_skip_log(skip_log_dir, where, reason)
    build_summary = {
        "source": str(source), "kind": index.kind, "split": split, "dim": dim, "intensity": intensity,
        "duplicates_removed": sum(removed.values()),
        "duplicates_per_organ": {str(k or "unknown"): v for k, v in sorted(removed.items(), key=lambda kv: str(kv[0]))},
        "splits": {str(k): v for k, v in sorted(split_sizes.items(), key=lambda kv: str(kv[0]))},
        "skipped_at_index": len(index.skipped), "build_seconds": round(time.perf_counter() - started, 3),
    }
    selected = [r for r in records if split is None or r.split == split]
    if split is not None:  # an organ present in the source but absent from this split (a whole organ held out)
        present = {r.organ for r in selected}
        build_summary["organs_missing_from_split"] = [o for o in organ_names if o not in present]
    return OrganDataset(selected, organs=organ_names, readers=readers, archives=index.archives, intensity=intensity,
                        window=window, percentiles=percentiles, channels=channels, image_size=image_size, dim=dim,
                        on_error=on_error, skip_log_dir=skip_log_dir, assignment=assignment,
                        build_summary=build_summary, split_key=key, substitute_seed=split_seed)


def _warn_about_organs(records: Sequence[Record], organ_names: Sequence[str], source: Any, kind: str) -> None:
    """Warnings for organ labels that make organ-aware training quietly degenerate."""
    if not records:
        return
    if not organ_names:
        hint = "the manifest has no 'organ' column (or it is empty)" if kind == "manifest" else \
            "no organ folders or organ tags were found"
        warnings.warn(f"{source}: 0 organs: {hint}; every item's organ is unknown, so organ-aware methods "
                      "(Coda, Pan-FM) learn nothing organ-specific. Set organ_from, or label the organs", stacklevel=3)
    elif len(organ_names) == 1:
        warnings.warn(f"{source}: only one organ ({organ_names[0]!r}): Coda's inter-organ branch has no "
                      "negatives and organ-aware losses are degenerate; add other organs or use an "
                      "organ-agnostic method (dino)", stacklevel=3)
    first_of: dict[str, Record] = {}
    conflicts = []
    for record in records:
        other = first_of.setdefault(record.content_hash, record)
        if other is not record and record.organ != other.organ and record.organ and other.organ:
            conflicts.append(f"{other.key} is {other.organ!r}, {record.key} is {record.organ!r}")
    if conflicts:
        warnings.warn(f"{source}: {len(conflicts)} duplicate images carry conflicting organ labels (e.g. "
                      f"{'; '.join(conflicts[:3])}); de-duplication keeps the first label: fix the labels",
                      stacklevel=3)


def _check_options(*, intensity: str, window: Sequence[float] | None, channels: int, dim: int, on_error: str,
                   image_size: int | None, split_fractions: Sequence[float]) -> None:
    # before indexing, which can take seconds on a large source
    if len(split_fractions) != 3 or min(split_fractions) < 0 or sum(split_fractions) <= 0:
        raise ValueError(f"split_fractions must be three non-negative numbers, got {tuple(split_fractions)}")
    if intensity not in INTENSITY_MODES:
        raise ValueError(f"unknown intensity {intensity!r}; valid: {', '.join(INTENSITY_MODES)}")
    if intensity == "window" and (window is None or len(window) != 2 or float(window[1]) <= 0):
        raise ValueError(f'intensity="window" needs window=(center, width) with width > 0, got {window}')
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be a positive int or None, got {image_size}")
