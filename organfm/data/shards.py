"""The cached uint8 shard format: every image decoded once, stored as fixed-size bytes, memory-mapped.

A shard folder (written by ``organfm cache``) holds:

- ``images.npy``: uint8 (N, C, S, S), read with ``mmap_mode="r"`` (no decoding, no copy until indexed);
- ``organs.npy``: int64 (N,) organ ids (-1 unknown);
- ``meta.json``: format/version, shape, organ names, the data contract (intensity mode, window, the
  ``data.*`` settings that made it), ``content_hash`` (sha256 of the organ names, ids and pixels),
  ``source_fingerprint`` (sha256 of the settings and of every source file's path, size and mtime) and
  ``skipped`` (unreadable items left out, with ``data.on_error=skip``; they are listed in ``skips/``);
- ``.organfm-output``: the marker that makes it ``organfm cache``'s own folder (``organfm.outputs``).

The fingerprint decides reuse cheaply: a second ``organfm cache`` of an unchanged source returns the folder
as it is. The content hash identifies the data itself (it goes into a run's ``data.json``), and
``ShardDataset(..., verify=True)`` recomputes it to catch a damaged cache.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from organfm.data.errors import DataError

__all__ = ["FORMAT", "ShardDataset", "build_shards", "is_shard_dir", "source_fingerprint", "to_uint8", "write_shards"]

FORMAT, VERSION = "organfm-shards", 1


def is_shard_dir(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder written by :func:`build_shards`."""
    meta = Path(path) / "meta.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def to_uint8(image: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """A [0, 1] float image (C, H, W) as uint8 (C, S, S): resized (bilinear, antialiased) when S differs."""
    if image.ndim != 3:
        raise ValueError(f"shards hold 2D images (C, H, W), got shape {tuple(image.shape)}")
    if size is not None and tuple(image.shape[1:]) != (size, size):
        image = F.interpolate(image[None].float(), size=(size, size), mode="bilinear", antialias=True,
                              align_corners=False)[0]
    if image.dtype == torch.uint8:
        return image
    return (image.float().clamp(0, 1) * 255).round().to(torch.uint8)


def source_fingerprint(settings: dict[str, Any], source: str | os.PathLike[str] | None = None) -> str:
    """sha256 of the settings and of each file under ``source`` (relative path, size, mtime): no decoding."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    if source is not None and Path(source).exists():
        root = Path(source)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in files:
            st = p.stat()
            h.update(f"{p.relative_to(root) if p != root else p.name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _content_hash(images: np.ndarray, organs: np.ndarray, organ_names: list[str], chunk: int = 1024) -> str:
    h = hashlib.sha256(json.dumps(organ_names).encode())
    h.update(np.ascontiguousarray(organs, dtype="<i8").tobytes())
    for start in range(0, len(images), chunk):
        h.update(np.ascontiguousarray(images[start:start + chunk]).tobytes())
    return h.hexdigest()


def write_shards(dataset: Dataset, folder: str | os.PathLike[str], *, size: int | None = None,
                 contract: dict[str, Any] | None = None, fingerprint: str = "", progress: bool = False,
                 skipped_at_index: int = 0) -> dict[str, Any]:
    """Decode every item of ``dataset`` once and write the shard files into the (new, empty) ``folder``.

    An item the dataset replaced by another one (``data.on_error=skip``: its ``index`` is not the one asked
    for) is left out, never stored twice, and counted in ``meta.json`` (``skipped``).

    Args:
        dataset: items ``{"image": (C, H, W) float in [0, 1] or uint8, "organ": int}``; ``organs`` names.
        folder: where the files go (``organfm cache`` passes its ``<out>.partial`` folder).
        size: side S of the stored images (default: the first item's height; others are resized to it).
        contract: what the images mean (intensity mode, window, source, settings), stored in ``meta.json``.
        fingerprint: :func:`source_fingerprint` of the source, for reuse.
        progress: print a line every 10% of items.
        skipped_at_index: items the source dropped before this call (counted in ``meta.json``).

    Returns:
        The ``meta.json`` content.

    Raises:
        DataError: the data set is empty, or nothing in it could be read.
        DiskFullError: the device has no room for the images (checked before writing).
    """
    from organfm.outputs import NpyWriter, require_free_space

    n = len(dataset)  # type: ignore[arg-type]
    folder = Path(folder)
    if n == 0:
        raise DataError(f"nothing to cache into {folder}: the data set is empty")
    first_item = dataset[0]
    if size is None:  # the documented default: the first image's height, so a non-square first image is squared too
        size = int(first_item["image"].shape[-2])
    first = to_uint8(first_item["image"], size)
    row_shape = tuple(first.shape)
    require_free_space(folder, n * first.numel() + 8 * n, "cache")
    # ordinary writes, not a memory map: on a full disk a memory map dies of SIGBUS instead of raising
    images = NpyWriter(folder / "images.npy", row_shape, np.uint8, max_rows=n)
    organs: list[int] = []
    skipped: list[int] = []
    try:
        for i in range(n):
            item = dataset[i] if i else first_item
            if int(item.get("index", i)) != i:
                skipped.append(i)  # a substitute for an unreadable item: a duplicate row would be a silent lie
                continue
            img = first if i == 0 else to_uint8(item["image"], row_shape[-1])
            if img.shape != first.shape:
                raise DataError(f"item {i} ({dataset.records[i].key if hasattr(dataset, 'records') else i}) has "
                                f"{img.shape[0]} channels, item 0 has {first.shape[0]}: a cache holds one channel "
                                "count; convert the images to one colour mode (all grayscale or all RGB) first")
            images.write(img.numpy())
            organs.append(int(item["organ"]))
            if progress and (i + 1) % max(1, n // 10) == 0:
                print(f"organfm cache: {i + 1}/{n} images", flush=True)
    except BaseException:
        images.abort()
        raise
    images.close()
    if not organs:
        raise DataError(f"nothing to cache into {folder}: none of the {n} items could be read (see the skip log)")
    organ_ids = np.asarray(organs, dtype=np.int64)
    with open(folder / "organs.npy", "wb") as f:
        np.save(f, organ_ids)
    stored = np.load(folder / "images.npy", mmap_mode="r")  # reading a whole file is safe to map
    names = list(getattr(dataset, "organs", []))
    meta = {"format": FORMAT, "version": VERSION, "num_items": len(organs), "shape": list(row_shape),
            "dtype": "uint8", "organs": names,
            "organ_counts": {str(k): int(v) for k, v in zip(*np.unique(organ_ids, return_counts=True))},
            "skipped": len(skipped) + skipped_at_index, "skipped_rows": skipped,
            "contract": contract or {}, "source_fingerprint": fingerprint,
            "content_hash": _content_hash(stored, organ_ids, names)}
    del stored
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    return meta


def build_shards(dataset: Dataset, out_dir: str | os.PathLike[str], *, size: int | None = None,
                 contract: dict[str, Any] | None = None, fingerprint: str = "",
                 progress: bool = False) -> dict[str, Any]:
    """Write the shard folder ``out_dir`` from ``dataset`` (see :func:`write_shards`), replacing it whole.

    ``out_dir`` must be absent, empty or a shard folder: anything else is refused and left untouched. The
    files are written into ``<out_dir>.partial``, which replaces ``out_dir`` only once complete and is
    removed on any failure (a full disk included, reported naming ``out_dir``).

    Returns:
        The ``meta.json`` content.

    Raises:
        OutputFolderError: ``out_dir`` is a file or a folder that is not a shard cache.
        FolderBusy: another process is writing ``out_dir``.
    """
    from organfm.outputs import FolderLock, StagedFolder

    with FolderLock(out_dir, "cache"), StagedFolder(out_dir, "cache", recognise=is_shard_dir,
                                                    facts={"format": FORMAT}) as tmp:
        return write_shards(dataset, tmp, size=size, contract=contract, fingerprint=fingerprint, progress=progress)


class ShardDataset(Dataset):
    """A shard folder as a dataset: ``{"image": (C, S, S), "organ": int, "index": int}``.

    Args:
        path: the shard folder.
        as_float: images as float32 in [0, 1] (the per-sample CPU view path) instead of uint8.
        verify: recompute the content hash and raise ``DataError`` if it differs from ``meta.json``.
    """

    def __init__(self, path: str | os.PathLike[str], *, as_float: bool = False, verify: bool = False) -> None:
        self.path = Path(path)
        if not is_shard_dir(self.path):
            raise DataError(f"{self.path} is not an organfm shard folder (no meta.json of format {FORMAT!r}); "
                            "write one with `organfm cache data=... --out DIR`")
        self.meta = json.loads((self.path / "meta.json").read_text())
        try:
            self.images = np.load(self.path / "images.npy", mmap_mode="r")
            self.organ_ids = np.load(self.path / "organs.npy")
        except (OSError, ValueError) as e:
            raise DataError(f"{self.path}: unreadable shard arrays ({e}); rebuild with `organfm cache`") from None
        if self.images.shape[0] != self.meta["num_items"] or len(self.organ_ids) != self.meta["num_items"]:
            raise DataError(f"{self.path}: arrays hold {self.images.shape[0]} images and {len(self.organ_ids)} "
                            f"organ ids, meta.json says {self.meta['num_items']}; rebuild with `organfm cache`")
        if verify:
            found = _content_hash(self.images, self.organ_ids, self.meta["organs"])
            if found != self.meta["content_hash"]:
                raise DataError(f"{self.path}: content hash {found[:12]} differs from meta.json's "
                                f"{self.meta['content_hash'][:12]}: the cache was changed or damaged; rebuild it")
        self.organs: list[str] = list(self.meta["organs"])
        self.as_float = as_float

    @property
    def content_hash(self) -> str:
        return self.meta["content_hash"]

    def __len__(self) -> int:
        return int(self.meta["num_items"])

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = torch.from_numpy(np.array(self.images[index]))  # copy out of the map: workers own their batch
        if self.as_float:
            image = image.float() / 255
        return {"image": image, "organ": int(self.organ_ids[index]), "index": int(index)}

    def summary(self) -> dict[str, Any]:
        return {"source": str(self.path), "format": FORMAT, "n_items": len(self), "image_shape": self.meta["shape"],
                "organs": self.meta["organ_counts"], "content_hash": self.content_hash,
                "contract": self.meta["contract"]}
