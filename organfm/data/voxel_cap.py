"""The voxel cap: how much memory one volume file may make organfm allocate, checked from its header.

A few-kB compressed file can declare gigabytes of voxels (a decompression bomb): a 1 MB ``.nii.gz``
of 1024^3 zeros, a 1 kB bzip2 ``.npz`` of 4096 x 64^3, or a series of deflated DICOM slices. Every
volume reader therefore reads the sizes its header declares (NIfTI dims, the ``.npy`` header of an
npz member, DICOM Rows x Columns x frames x slices), refuses them *before* decompressing or
allocating anything, and inflates compressed bytes only up to what the header declared.

Two caps, both config keys:

* ``data.max_volume_voxels`` (default 2^28, e.g. 512 x 512 x 1024): one volume, one DICOM series.
* ``data.max_array_voxels`` (default 2^29): one npz array, all its rows together, since numpy
  decompresses an npz member whole (MedMNIST+ 64^3 training splits hold up to 3.5e8 voxels).
"""
from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Sequence
from typing import IO, Any

import numpy as np

from organfm.data.errors import DataError

__all__ = ["DEFAULT_MAX_ARRAY_VOXELS", "DEFAULT_MAX_VOLUME_VOXELS", "check_voxels", "inflate_bounded",
           "load_npz_array", "npz_headers"]

DEFAULT_MAX_VOLUME_VOXELS = 1 << 28
DEFAULT_MAX_ARRAY_VOXELS = 1 << 29
_CHUNK = 1 << 20


def check_voxels(shape: Sequence[int], *, where: str, cap: int = DEFAULT_MAX_VOLUME_VOXELS,
                 key: str = "data.max_volume_voxels", what: str = "header declares") -> int:
    """Refuse ``shape`` when it holds more than ``cap`` voxels (or a negative dimension).

    Args:
        shape: the declared shape (any number of axes).
        where: the file (or ``file::member``), named in the error.
        cap: the most voxels allowed.
        key: the config key that sets ``cap``, named in the error as the fix.
        what: how the shape was learnt, for the message.

    Returns:
        The number of voxels.

    Raises:
        DataError: over the cap, or a negative dimension.
    """
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise DataError(f"{where}: {what} a negative dimension {tuple(dims)}: damaged file")
    voxels = 1
    for d in dims:
        voxels *= d  # Python ints: a header of 2^63-ish dims cannot overflow into a small number
    if voxels > cap:
        raise DataError(f"{where}: {what} {' x '.join(map(str, dims))} = {voxels} voxels, over {key}={cap}; "
                        f"refused before reading (a damaged file or a decompression bomb; if it is genuine, "
                        f"raise {key})")
    return voxels


def inflate_bounded(data: bytes, limit: int, *, where: str, wbits: int = 31) -> bytes:
    """Decompress a zlib/gzip stream to at most ``limit`` bytes, never holding more than that.

    Bytes beyond ``limit`` are not produced at all (readers need only the declared size); a stream
    that ends early is returned as it is, for the reader to call truncated.
    """
    inflate = zlib.decompressobj(wbits=wbits)
    try:
        out = inflate.decompress(data, max(limit, 1))
    except zlib.error as e:
        raise DataError(f"{where}: damaged compressed data ({e})") from e
    return out[:limit]


def npz_headers(source: str | bytes | IO[bytes], *, where: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """``{array name: (shape, dtype)}`` of an npz, read from each member's ``.npy`` header only.

    Only the first bytes of each member are decompressed (the header is at most a few kB), so a
    member that inflates to gigabytes costs nothing here.

    Raises:
        DataError: not a zip, or a member whose ``.npy`` header is damaged.
    """
    fileobj = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        with zipfile.ZipFile(fileobj) as archive:  # type: ignore[arg-type]
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                name = info.filename[: -len(".npy")]
                with archive.open(info) as member:
                    out[name] = _npy_header(member)
    except DataError:
        raise
    except FileNotFoundError as e:
        raise DataError(f"{where}: file not found") from e
    except Exception as e:  # BadZipFile, npy header ValueError/SyntaxError, unsupported compression
        raise DataError(f"{where}: not a readable .npz ({type(e).__name__}: {e})") from e
    return out


def _npy_header(member: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    from numpy.lib import format as npy

    version = npy.read_magic(member)
    if version == (1, 0):
        shape, _, dtype = npy.read_array_header_1_0(member)
    elif version in ((2, 0), (3, 0)):
        shape, _, dtype = npy.read_array_header_2_0(member)
    else:  # read_magic accepts any version bytes; the header readers only the known ones
        raise ValueError(f"unsupported .npy format version {version}")
    return tuple(int(d) for d in shape), np.dtype(dtype)


def load_npz_array(source: str | bytes, key: str, *, where: str, max_voxels: int = DEFAULT_MAX_ARRAY_VOXELS,
                   key_name: str = "data.max_array_voxels") -> np.ndarray:
    """The array ``key`` of an npz, after checking its header against ``max_voxels``.

    numpy reads a compressed member in chunks into an array of the declared size, so once the
    header passes, memory is bounded by that size whatever the member inflates to.

    Args:
        source: the npz file, or its bytes (an archive member).
        key: the array name.
        where: the file, named in errors.
        max_voxels: the most elements the array may hold (all rows together).
        key_name: the config key that sets ``max_voxels``.

    Raises:
        DataError: no such array, over the cap, a pickled (object) array, or a damaged member.
    """
    raw = bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) else None
    headers = npz_headers(raw if raw is not None else source, where=where)
    if key not in headers:
        raise DataError(f"{where}::{key}: no such array in the npz (arrays: {', '.join(sorted(headers)) or 'none'})")
    shape, dtype = headers[key]
    check_voxels(shape, where=f"{where}::{key}", cap=max_voxels, key=key_name, what="npy header declares")
    if dtype.hasobject:
        raise DataError(f"{where}::{key}: an object (pickled) array; organfm reads numeric arrays only")
    try:
        with np.load(io.BytesIO(raw) if raw is not None else source, allow_pickle=False) as npz:
            return npz[key]
    except MemoryError:
        raise  # not a property of the file
    except Exception as e:  # zip/zlib/bz2 errors, a member shorter than its header says
        raise DataError(f"{where}::{key}: cannot read npz ({type(e).__name__}: {e})") from e

