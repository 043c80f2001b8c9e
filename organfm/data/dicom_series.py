"""A DICOM series (one file per slice) read as one volume: sorted by position, spacing from the tags.

Slices are ordered by ``ImagePositionPatient`` projected on the slice normal (not by file name or
``InstanceNumber``, which scanners and anonymisers renumber). A series that is not one regular stack is
refused with a :class:`DataError` naming the folder and the files involved: several series, mixed
orientations or image sizes, duplicate positions, or a gap where slices are missing. The series' affine is
built from ImageOrientationPatient, ImagePositionPatient, PixelSpacing and the slice step (in DICOM's LPS,
then flipped to NIfTI's RAS), and the volume is brought to the NIfTI reader's display orientation
(``organfm.data.orientation``: D inferior -> superior, H anterior -> posterior, W patient right -> left)
whatever the acquisition plane, so a sagittal or coronal series gives the same array as a NIfTI file of the
same anatomy.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from organfm.data.acquisition import acquisition_from_dicom
from organfm.data.errors import DataError
from organfm.data.orientation import LPS_TO_RAS, reorient_to_display
from organfm.data.voxel_cap import DEFAULT_MAX_VOLUME_VOXELS, check_voxels

__all__ = ["find_series_files", "read_dicom_series"]

_GAP_TOLERANCE = 1.5  # a step this many times the median step means slices are missing


def find_series_files(folder: str | Path) -> list[Path]:
    """The DICOM files of ``folder`` (``.dcm``/``.dicom``, or no suffix with the DICM preamble), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder of DICOM slices")
    files = []
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        if path.suffix.lower() in (".dcm", ".dicom"):
            files.append(path)
            continue
        with path.open("rb") as f:
            head = f.read(132)
        if head[128:132] == b"DICM":
            files.append(path)
    if not files:
        raise DataError(f"{folder}: holds no DICOM file")
    return files


def read_dicom_series(folder: str | Path, files: Sequence[str | Path] | None = None, *,
                      max_volume_voxels: int = DEFAULT_MAX_VOLUME_VOXELS) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a series as a (D, H, W) float32 volume in modality units (HU for CT), in display orientation.

    Every slice's header is read first (pixel data deferred, never loaded), and Rows x Columns x
    slices is checked against ``max_volume_voxels`` before any pixel is decoded.

    Args:
        folder: the series folder (named in errors).
        files: the slice files; default: every DICOM file of ``folder``.
        max_volume_voxels: the most voxels the series may hold (``data.max_volume_voxels``).

    Returns:
        ``(volume, meta)``: meta holds ``path``, ``spacing`` (D, H, W) in mm, ``num_slices`` and
        ``acquisition`` (whitelisted fields only, see ``organfm.data.acquisition``).

    Raises:
        DataError: unreadable or truncated slices, several series, mixed orientations or sizes, duplicate or
            missing slices, more voxels than the cap.
    """
    import pydicom

    from organfm.data.dicom import check_deflated

    where = str(folder)
    paths = [Path(f) for f in files] if files is not None else find_series_files(folder)
    slices = []
    for path in paths:
        try:
            check_deflated(str(path), None, f"{where}: slice {path.name}", max_volume_voxels)
            # headers only: pixels are decoded one slice at a time below, after the voxel cap is checked
            head = pydicom.dcmread(str(path), stop_before_pixels=True)
            # a plain Dataset of the elements: the FileDataset of a deflated file keeps its whole inflated buffer
            slices.append((path, pydicom.Dataset(head)))
        except DataError:
            raise
        except Exception as e:  # InvalidDicomError, EOFError, ...: name the slice
            raise DataError(f"{where}: slice {path.name} is not a readable DICOM file ({type(e).__name__})") from e
    series = {str(ds.get("SeriesInstanceUID", "")) for _, ds in slices}
    if len(series) > 1:
        raise DataError(f"{where}: holds {len(series)} series; give each series its own folder")
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for _, ds in slices):
        raise DataError(f"{where}: a multi-frame file is a volume by itself; read it with the DICOM reader")
    missing = [p.name for p, ds in slices if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds]
    # pydicom reads a cut-off file without complaint, up to where it ends; the pixels come last, so a
    # slice that also lacks them is truncated (or no image at all), not merely untagged
    path_of = {p.name: p for p, _ in slices}
    cut = [name for name in missing if not _has_pixels(path_of[name])]
    if cut:
        raise DataError(f"{where}: slice {cut[0]} is truncated or unreadable (it ends before its pixel data"
                        + (f"; {len(cut)} such slices" if len(cut) > 1 else "") + "): re-copy it or remove it")
    if missing:
        raise DataError(f"{where}: {len(missing)} slice(s) lack ImagePositionPatient/ImageOrientationPatient "
                        f"(e.g. {missing[0]}); cannot order them in space")
    iop = np.array([[float(v) for v in ds.ImageOrientationPatient] for _, ds in slices])
    if not np.allclose(iop, iop[0], atol=1e-3):
        odd = next(p.name for (p, _), o in zip(slices, iop) if not np.allclose(o, iop[0], atol=1e-3))
        raise DataError(f"{where}: mixed orientations (slice {odd} differs from {slices[0][0].name})")
    sizes = {(int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)) for _, ds in slices}
    if len(sizes) > 1:
        raise DataError(f"{where}: slices of different sizes {sorted(sizes)}")
    rows, cols = next(iter(sizes))
    samples = max(int(ds.get("SamplesPerPixel", 1) or 1) for _, ds in slices)
    check_voxels((len(slices), rows, cols) + ((samples,) if samples > 1 else ()), where=where,
                 cap=max_volume_voxels, what="its slice headers declare")
    normal = np.cross(iop[0, :3], iop[0, 3:])
    position = np.array([float(np.dot([float(v) for v in ds.ImagePositionPatient], normal)) for _, ds in slices])
    order = np.argsort(position, kind="stable")
    slices, position = [slices[i] for i in order], position[order]
    steps = np.diff(position)
    if len(slices) > 1:
        dup = np.flatnonzero(steps < 1e-3)
        if dup.size:
            a, b = slices[dup[0]][0].name, slices[dup[0] + 1][0].name
            raise DataError(f"{where}: duplicate slice position {position[dup[0]]:.3f} mm ({a} and {b})")
        median = float(np.median(steps))
        gaps = np.flatnonzero(steps > _GAP_TOLERANCE * median)
        if gaps.size:
            a, b = slices[gaps[0]][0].name, slices[gaps[0] + 1][0].name
            raise DataError(f"{where}: missing slice(s): a {steps[gaps[0]]:.3g} mm step between {a} and {b} "
                            f"where the series steps {median:.3g} mm")
        depth = median
    else:
        depth = float(slices[0][1].get("SliceThickness", 0) or 0) or float("nan")
    # filled in place: one float32 volume in memory, not a list of planes plus their stack
    volume = np.empty((len(slices), rows, cols), dtype=np.float32)
    for k, (path, head) in enumerate(slices):
        try:
            ds = pydicom.dcmread(str(path))
        except Exception as e:  # changed or damaged since the header pass
            raise DataError(f"{where}: slice {path.name} is not a readable DICOM file ({type(e).__name__})") from e
        if not _has_pixels(path, ds):
            raise DataError(f"{where}: slice {path.name} is truncated or unreadable (it ends before its pixel data): "
                            "re-copy it or remove it")
        try:
            pixels = ds.pixel_array
        except Exception as e:  # missing decoder, truncated pixel data
            raise DataError(f"{where}: cannot decode slice {path.name} ({type(e).__name__}: {e})") from e
        if pixels.shape != (rows, cols):
            raise DataError(f"{where}: slice {path.name} decodes to shape {pixels.shape}, not its header's "
                            f"{rows} x {cols} (a colour or multi-frame slice cannot join a series)")
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        np.multiply(pixels, slope, out=volume[k], casting="unsafe")
        volume[k] += intercept
    pixel = slices[0][1].get("PixelSpacing") or [1.0, 1.0]
    stored_spacing = (depth, float(pixel[0]), float(pixel[1]))
    affine = _ras_affine(iop[0], [float(v) for v in slices[0][1].ImagePositionPatient], stored_spacing)
    display, spacing = reorient_to_display(volume, affine, stored_spacing)
    return np.ascontiguousarray(display), {"path": where, "spacing": spacing, "num_slices": len(slices),
                                           "acquisition": acquisition_from_dicom(slices[0][1], spacing)}


def _ras_affine(iop: np.ndarray, first_position: Sequence[float], spacing: Sequence[float]) -> np.ndarray:
    """(4, 4) voxel -> RAS+ mm of a (slice, row, column) stack, from its DICOM geometry.

    Args:
        iop: ImageOrientationPatient: direction of a row (column index grows), then of a column (row index
            grows), in LPS.
        first_position: ImagePositionPatient of the first slice in position order (the centre of its first pixel).
        spacing: (slice step, PixelSpacing[0] between rows, PixelSpacing[1] between columns) in mm.
    """
    row, col = np.asarray(iop[:3], dtype=float), np.asarray(iop[3:], dtype=float)
    # slices were sorted by their position along row x col, so the slice axis points along +normal; a single
    # slice has no step (NaN): 1 mm keeps the affine invertible, only its direction matters for orientation
    step = spacing[0] if np.isfinite(spacing[0]) and spacing[0] > 0 else 1.0
    lps = np.eye(4)
    lps[:3, 0] = np.cross(row, col) * step
    lps[:3, 1] = col * spacing[1]  # the row index walks down a column
    lps[:3, 2] = row * spacing[2]
    lps[:3, 3] = first_position
    return LPS_TO_RAS @ lps


def _has_pixels(path: Path, ds: Any = None) -> bool:
    """Whether a slice holds pixel data (read with the pixels deferred, so only its header is loaded)."""
    import pydicom

    if ds is None:
        try:
            ds = pydicom.dcmread(str(path), defer_size=4096)
        except Exception:
            return False
    return any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
