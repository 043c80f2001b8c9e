"""Readers: a tiny protocol, chosen by file suffix, that turns a file into a float32 channel-first array.

A reader has ``suffixes`` and ``read(path, ...) -> (array, meta)``. The array is float32 with shape
(C, H, W), or (C, D, H, W) for volumes and frame stacks; intensities are the file's own values
(HU for CT), except where the file carries a display window (DICOM VOI), in which case they are
already in [0, 1] and ``meta["normalized"]`` says so. ``meta`` carries ``path``, ``dtype`` (of the
stored pixels), ``photometric``, ``modality``, ``spacing`` (mm, same axis order as the array's
spatial axes) and ``window``. Readers never put patient identifiers in ``meta``.

Readers used for files of a source also implement ``read_header(path, data=..., member=...)``,
which returns a :class:`Header` without decoding pixels (the cheap index-time check). Heavy libraries (pydicom, nibabel) are
imported inside the readers that need them, in ``dicom.py`` and ``nifti.py``.
"""
from __future__ import annotations

import functools
import io
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from organfm.data.errors import DataError
from organfm.data.voxel_cap import DEFAULT_MAX_ARRAY_VOXELS, DEFAULT_MAX_VOLUME_VOXELS
from organfm.registry import Registry

__all__ = [
    "Reader", "Header", "READERS", "register_reader", "create_reader", "list_readers", "find_reader",
    "ImageReader", "NpzReader", "location", "npz_layout", "DEFAULT_MAX_IMAGE_PIXELS",
]

READERS: Registry[Reader] = Registry("reader")


def register_reader(name: str) -> Callable[[type], type]:
    """Class decorator: register a reader (an object with ``suffixes`` and ``read``) as ``name``."""

    def wrap(cls: type) -> type:
        READERS.register(name)(cls)
        _suffix_table.cache_clear()
        return cls

    return wrap


def create_reader(name: str, **kwargs: Any) -> Reader:
    """Construct the reader registered as ``name`` (``None`` kwargs are dropped)."""
    return READERS.create(name, **kwargs)


def list_readers() -> list[str]:
    """Names of the registered readers."""
    return READERS.names()


class Reader(Protocol):
    """Decodes one file (or one part of it) into ``(array, meta)``; see the module docstring."""

    suffixes: tuple[str, ...]

    def read(self, path: str, *, data: bytes | None = None, member: str | None = None,
             row: int | None = None, index: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Decode one item.

        Args:
            path: the file, or the archive holding it (used for errors and cache keys).
            data: the file's bytes, when it is an archive member.
            member: archive member name, or the npz array key.
            row: npz row.
            index: frame or axial slice; ``None`` returns all of them as a (C, D, H, W) stack.

        Returns:
            float32 array (C, H, W) or (C, D, H, W), and its meta dict.

        Raises:
            DataError: the file cannot be decoded; the message names it.
        """
        ...


@dataclass(frozen=True)
class Header:
    """What an index-time check learns about a file without decoding its pixels.

    Attributes:
        num_items: 2D items the file holds along its stacking axis (frames, axial slices); 1 for an image.
        stacked: ``read`` without ``index`` returns a (C, D, H, W) stack, so 2D items need an ``index``.
        body_part: DICOM BodyPartExamined, lower-cased, if any.
        modality: DICOM Modality, if any.
        patient_key: DICOM PatientID, else the first of Study/Series/FrameOfReference UID that is
            set; used only to keep a patient in one split, never shown.
    """

    num_items: int = 1
    stacked: bool = False
    body_part: str | None = None
    modality: str | None = None
    patient_key: str | None = field(default=None, repr=False)


def location(path: str, member: str | None = None) -> str:
    """``path``, or ``path::member`` for a part of an archive or npz file."""
    return path if member is None else f"{path}::{member}"


def find_reader(name: str, head: bytes | None = None) -> str | None:
    """Name of the reader for a file name, by suffix; DICOM files without a suffix are found by magic.

    Args:
        name: file (or member) name; matching is case-insensitive and prefers the longest suffix,
            so ``.nii.gz`` wins over ``.gz``.
        head: the file's first bytes (at least 132), to recognise the DICOM ``DICM`` marker.

    Returns:
        The reader name, or ``None`` when nothing reads the file.
    """
    table = _suffix_table()
    lower = name.lower()
    last = lower.rfind(".")
    if last >= 0:
        second = lower.rfind(".", 0, last)
        if second >= 0 and lower[second:] in table:  # ".nii.gz" before ".gz"
            return table[lower[second:]]
        if lower[last:] in table:
            return table[lower[last:]]
    if head is not None and head[128:132] == b"DICM" and "dicom" in READERS:
        return "dicom"  # DICOM series are often stored without a suffix (e.g. "CT.1.3.12.2...16573")
    return None


@functools.lru_cache(maxsize=1)
def _suffix_table() -> dict[str, str]:
    # cleared by register_reader; find_reader runs once per file, 59k times for MedNIST
    return {suffix: name for name in READERS.names()
            for suffix in READERS.get(name).suffixes}  # type: ignore[attr-defined]


DEFAULT_MAX_IMAGE_PIXELS = 1 << 27  # 134M pixels (11.6k x 11.6k); Pillow refuses above 179M itself

# PNG, JPEG, BMP, TIFF (both byte orders): a renamed or empty file fails at index time, no decode
_IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*")


@register_reader("image")
class ImageReader:
    """PNG / JPEG / BMP / TIFF through Pillow, 8- or 16-bit, gray or RGB.

    16-bit images stay uint16 until normalisation (no silent 16 -> 8-bit loss); palette, alpha and
    CMYK images become RGB. Output (1, H, W) for gray, (3, H, W) for colour. 48-bit RGB PNGs are
    reduced to 8 bits per channel by Pillow itself.

    Args:
        max_image_pixels: largest width x height decoded. A few-kB PNG can declare 10^10 pixels (a
            decompression bomb); its header is checked before any pixel is decoded.
    """

    suffixes = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

    def __init__(self, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        if max_image_pixels < 1:
            raise ValueError(f"max_image_pixels must be positive, got {max_image_pixels}")
        self.max_image_pixels = int(max_image_pixels)

    def read_header(self, path: str, *, data: bytes | None = None, member: str | None = None) -> Header:
        """Check the file signature only (no decode)."""
        head = data[:16] if data is not None else _read_head(path, 16)
        if not head:
            raise DataError(f"{location(path, member)}: empty file")
        if not bytes(head).startswith(_IMAGE_SIGNATURES):
            raise DataError(f"{location(path, member)}: not a PNG/JPEG/BMP/TIFF file (unknown signature)")
        return Header()

    def read(self, path: str, *, data: bytes | None = None, member: str | None = None,
             row: int | None = None, index: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        from PIL import Image

        where = location(path, member)
        if index not in (None, 0):
            raise DataError(f"{where}: a 2D image has no item {index}")
        try:
            with Image.open(io.BytesIO(data) if data is not None else path) as img:
                width, height = img.size
                if width * height > self.max_image_pixels:
                    raise DataError(f"{where}: image of {width} x {height} pixels exceeds the cap of "
                                    f"{self.max_image_pixels} (max_image_pixels; a decompression bomb?): refused")
                img.load()  # full decode here: truncated files fail now, not later
                img = _to_supported_mode(img)
                pixels = np.asarray(img)
                fmt = img.format
        except DataError:
            raise
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:  # Pillow's errors for broken files
            raise DataError(f"{where}: cannot decode image ({type(e).__name__}: {e})") from e
        if pixels.size == 0:
            raise DataError(f"{where}: empty image")
        array = pixels[None] if pixels.ndim == 2 else np.moveaxis(pixels, -1, 0)
        meta = {"path": where, "dtype": str(pixels.dtype), "photometric": "RGB" if array.shape[0] == 3 else
                "MONOCHROME2", "modality": None, "spacing": None, "window": None, "format": fmt}
        return np.ascontiguousarray(array, dtype=np.float32), meta


def _to_supported_mode(img: Any) -> Any:
    # gray modes stay as they are (16-bit included); anything else with colour becomes RGB
    if img.mode in ("L", "I;16", "I;16B", "I;16L", "I", "F", "RGB"):
        return img
    if img.mode in ("1", "LA", "La"):
        return img.convert("L")
    # palettes (gray or colour: luminance undoes a gray one), RGBA, CMYK, YCbCr, ...
    return img.convert("RGB")


def _read_head(path: str, size: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)


def npz_layout(shape: tuple[int, ...]) -> tuple[bool, bool]:
    """``(is_volume, is_rgb)`` for an npz image array of shape (N, H, W), (N, H, W, 3), (N, D, H, W)
    or (N, D, H, W, 3); raises ``ValueError`` for anything else."""
    if len(shape) == 3:
        return False, False
    if len(shape) == 4:
        return (False, True) if shape[-1] == 3 else (True, False)
    if len(shape) == 5 and shape[-1] in (1, 3):
        return True, shape[-1] == 3
    raise ValueError(f"image array of shape {shape} is not (N,H,W), (N,H,W,3), (N,D,H,W) or (N,D,H,W,3)")


@register_reader("npz")
class NpzReader:
    """Rows of MedMNIST-style npz arrays (``{split}_images``): ``member`` is the key, ``row`` the row.

    Args:
        cache_size: arrays kept decoded per process. An npz member is compressed as a whole, so
            without this cache every row would decompress the full array again.
        max_array_voxels: the most elements one array may hold, all rows together
            (``data.max_array_voxels``), checked from the member's ``.npy`` header before it is inflated.
        max_volume_voxels: the most voxels one row (a volume) may hold (``data.max_volume_voxels``).
    """

    suffixes = (".npz",)

    def __init__(self, cache_size: int = 4, max_array_voxels: int = DEFAULT_MAX_ARRAY_VOXELS,
                 max_volume_voxels: int = DEFAULT_MAX_VOLUME_VOXELS) -> None:
        for name, value in (("max_array_voxels", max_array_voxels), ("max_volume_voxels", max_volume_voxels)):
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        self.cache_size = cache_size
        self.max_array_voxels, self.max_volume_voxels = int(max_array_voxels), int(max_volume_voxels)
        self._cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers get a copy without the decoded arrays; they decode on first use
        return {"cache_size": self.cache_size, "max_array_voxels": self.max_array_voxels,
                "max_volume_voxels": self.max_volume_voxels}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def load_array(self, path: str, key: str, *, data: bytes | None = None) -> np.ndarray:
        """The whole array ``key`` of the npz at ``path`` (cached per process), its header checked first."""
        from organfm.data.voxel_cap import check_voxels, load_npz_array

        if (path, key) in self._cache:
            self._cache.move_to_end((path, key))
            return self._cache[(path, key)]
        array = load_npz_array(data if data is not None else path, key, where=path, max_voxels=self.max_array_voxels)
        if array.ndim >= 4:  # (N, D, H, W[, c]): each row is a volume
            check_voxels(array.shape[1:], where=location(path, key), cap=self.max_volume_voxels,
                         what="each row declares")
        self._cache[(path, key)] = array
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return array

    def read(self, path: str, *, data: bytes | None = None, member: str | None = None,
             row: int | None = None, index: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        where = location(path, member)
        if member is None or row is None:
            raise DataError(f"{where}: an npz item needs an array key and a row")
        array = self.load_array(path, member, data=data)
        try:
            is_volume, is_rgb = npz_layout(array.shape)
        except ValueError as e:
            raise DataError(f"{where}: {e}") from e
        if not 0 <= row < len(array):
            raise DataError(f"{where}: row {row} out of range ({len(array)} rows)")
        item = array[row]
        # channel-first: (H,W)->(1,H,W), (H,W,3)->(3,H,W), (D,H,W)->(1,D,H,W), (D,H,W,c)->(c,D,H,W)
        item = np.moveaxis(item, -1, 0) if is_rgb or item.ndim == 4 else item[None]
        if index is not None:
            if not is_volume or not 0 <= index < item.shape[1]:
                raise DataError(f"{where}[{row}]: no axial slice {index}")
            item = item[:, index]
        meta = {"path": f"{where}[{row}]", "dtype": str(array.dtype), "photometric": "RGB" if is_rgb else
                "MONOCHROME2", "modality": None, "spacing": None, "window": None}
        return np.ascontiguousarray(item, dtype=np.float32), meta
