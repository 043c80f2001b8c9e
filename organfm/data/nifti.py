"""NIfTI reader (nibabel, imported on first use): 2D images and 3D volumes in one display orientation.

Every volume is reoriented from its affine to the radiological display convention
(``organfm.data.orientation``, shared with the DICOM series reader), whatever its storage order: axis D
runs inferior -> superior (axial slices), H anterior -> posterior (image top = anterior), W patient
right -> left (image left = patient right). So slice ``k`` of any file is an axial slice that looks like
a CT viewer's, and image and label map line up when their affines agree.
"""
from __future__ import annotations

import io
import os
from collections import OrderedDict
from typing import Any

import numpy as np

from organfm.data.errors import DataError
from organfm.data.orientation import display_orientation, reorient_to_display
from organfm.data.readers import Header, location, register_reader
from organfm.data.voxel_cap import DEFAULT_MAX_VOLUME_VOXELS, check_voxels, inflate_bounded

__all__ = ["NiftiReader"]


@register_reader("nifti")
class NiftiReader:
    """One NIfTI file: (1, D, H, W) for the volume, (1, H, W) for axial slice ``index``.

    Args:
        cache_size: volumes kept decoded per process. A ``.nii.gz`` cannot be read a slice at a
            time, so a 2D pipeline over its slices would otherwise decompress it once per slice.
        max_volume_voxels: the most voxels a header may declare (``data.max_volume_voxels``); checked
            before any voxel is decompressed or allocated (``organfm.data.voxel_cap``).
    """

    suffixes = (".nii", ".nii.gz")

    def __init__(self, cache_size: int = 4, max_volume_voxels: int = DEFAULT_MAX_VOLUME_VOXELS) -> None:
        if max_volume_voxels < 1:
            raise ValueError(f"max_volume_voxels must be positive, got {max_volume_voxels}")
        self.cache_size = cache_size
        self.max_volume_voxels = int(max_volume_voxels)
        self._cache: OrderedDict[tuple[str, str | None], tuple[np.ndarray, dict[str, Any]]] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers get a copy without decoded volumes; they decode on first use
        return {"cache_size": self.cache_size, "max_volume_voxels": self.max_volume_voxels}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def read_header(self, path: str, *, data: bytes | None = None, member: str | None = None) -> Header:
        """Read the header only: shape and dimensionality, no voxel data."""
        where = location(path, member)
        image = _load(path, data, where, self.max_volume_voxels)
        shape = _spatial_shape(image.shape, where)
        ornt = display_orientation(image.affine)
        axial = [axis for axis, (ras_axis, _) in enumerate(ornt) if int(ras_axis) == 2][0]  # the S axis
        return Header(num_items=shape[axial], stacked=True)

    def read_volume(self, path: str, *, data: bytes | None = None,
                    member: str | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """The whole volume as (D, H, W) in display orientation, in its stored dtype (scaled if the
        header asks for it), with ``meta``; cached per process."""
        key = (path, member)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        where = location(path, member)
        image = _load(path, data, where, self.max_volume_voxels)
        shape = _spatial_shape(image.shape, where)
        try:
            voxels = np.asanyarray(image.dataobj).reshape(shape)
        except Exception as e:  # truncated or corrupt data: EOFError, zlib/gzip errors, ValueError
            raise DataError(f"{where}: cannot read voxel data ({type(e).__name__}: {e})") from e
        zooms = [float(z) for z in image.header.get_zooms()[:3]] + [1.0] * (3 - len(image.header.get_zooms()[:3]))
        display, spacing = reorient_to_display(voxels, image.affine, zooms)
        meta = {"path": where, "dtype": str(image.get_data_dtype()), "photometric": "MONOCHROME2",
                "modality": None, "spacing": spacing, "window": None}
        self._cache[key] = (display, meta)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return display, meta

    def read(self, path: str, *, data: bytes | None = None, member: str | None = None,
             row: int | None = None, index: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        volume, meta = self.read_volume(path, data=data, member=member)
        if index is None:
            return np.ascontiguousarray(volume[None], dtype=np.float32), dict(meta)
        if not 0 <= index < volume.shape[0]:
            raise DataError(f"{location(path, member)}: no axial slice {index} ({volume.shape[0]} slices)")
        meta = dict(meta, path=f"{meta['path']}#{index}", spacing=meta["spacing"][1:])
        return np.ascontiguousarray(volume[None, index], dtype=np.float32), meta


def _load(path: str, data: bytes | None, where: str, max_voxels: int = DEFAULT_MAX_VOLUME_VOXELS) -> Any:
    """The nibabel image (header read, voxels not yet), refused when its header declares over ``max_voxels``."""
    import nibabel as nib

    try:
        if data is None:
            image = nib.load(path)  # lazy: reads the header only; voxels come from ``dataobj`` later
        else:
            raw = _gunzip(data, where, max_voxels) if data[:2] == b"\x1f\x8b" else bytes(data)
            try:
                image = nib.Nifti1Image.from_bytes(raw)
            except Exception:
                image = nib.Nifti2Image.from_bytes(raw)
        shape = tuple(int(d) for d in image.shape)
        itemsize = image.get_data_dtype().itemsize
        # the loaded header's vox_offset may read 0; the array proxy holds where the voxels really start
        offset = int(getattr(image.dataobj, "offset", image.header.get_data_offset()))
    except DataError:
        raise
    except FileNotFoundError as e:
        raise DataError(f"{where}: file not found") from e
    except Exception as e:  # nibabel raises ImageFileError, HeaderDataError, EOFError, ... on bad files
        raise DataError(f"{where}: not a readable NIfTI file ({type(e).__name__}: {e})") from e
    # nibabel allocates the header's size before reading a .nii.gz: refuse it from the header alone
    voxels = check_voxels(shape, where=where, cap=max_voxels)
    if data is None and not path.lower().endswith(".gz"):
        # an uncompressed file must hold what its header declares; nibabel would otherwise allocate it
        # (or map it) and fail late, or read past the end into a short array
        held = os.path.getsize(path) - offset
        if held < voxels * itemsize:
            raise DataError(f"{where}: truncated: the header declares {voxels * itemsize} bytes of voxels "
                            f"({' x '.join(map(str, shape))}), the file holds {max(held, 0)}")
    return image


def _gunzip(data: bytes, where: str, max_voxels: int) -> bytes:
    """A gzipped archive member, inflated only as far as its header declares (and never past the cap).

    The header (348 bytes for NIfTI-1, 540 for NIfTI-2) is inflated first and checked; then exactly
    ``vox_offset + voxels x itemsize`` bytes, so a small header followed by gigabytes of zeros costs
    no more than the volume it declares.
    """
    import nibabel as nib

    head = inflate_bounded(data, 540, where=where)
    try:
        header = (nib.Nifti2Header if head[:4] in (b"\x1c\x02\x00\x00", b"\x00\x00\x02\x1c")
                  else nib.Nifti1Header).from_fileobj(io.BytesIO(head))
        shape = tuple(int(d) for d in header.get_data_shape())
        size = int(header.get_data_offset()) + int(np.prod(shape, dtype=np.float64)) * header.get_data_dtype().itemsize
    except Exception as e:  # not a NIfTI header: the caller's from_bytes names the problem
        raise DataError(f"{where}: not a readable NIfTI file ({type(e).__name__}: {e})") from e
    check_voxels(shape, where=where, cap=max_voxels)
    return inflate_bounded(data, size, where=where)


def _spatial_shape(shape: tuple[int, ...], where: str) -> tuple[int, int, int]:
    """(X, Y, Z) of a 2D or 3D image; a trailing axis of size 1 (e.g. X, Y, 1, 1) is allowed."""
    dims = list(shape)
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    if len(dims) == 2:
        dims.append(1)
    if len(dims) != 3 or min(dims) < 1:
        raise DataError(f"{where}: NIfTI of shape {tuple(shape)} is not a 2D image or 3D volume")
    return dims[0], dims[1], dims[2]
