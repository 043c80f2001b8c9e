"""Fixtures for the data tests: small files written on the fly, and paths into the real data."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest


@pytest.fixture(scope="session")
def totalseg(data_root: Path) -> Path:
    folder = data_root / "totalseg-example"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    return folder


@pytest.fixture
def make_dicom() -> Callable[..., Path]:
    """Write a DICOM file: ``make_dicom(path, pixels, photometric=..., rle=..., **tags)``.

    ``pixels`` is (H, W) or (F, H, W) for multi-frame; ``tags`` are set as DICOM keywords
    (``RescaleSlope=2``, ``WindowCenter=40``, ``BodyPartExamined="LIVER"``...). Every file carries a
    PatientName and PatientID so tests can check they never leak.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RLELossless, generate_uid

    def make(path: Path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2", rle: bool = False,
             transfer_syntax: str | None = None, **tags: Any) -> Path:
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.Modality = "CT"
        ds.PatientName = "Doe^Jane"
        ds.PatientID = "SECRET-4711"
        ds.StudyInstanceUID = generate_uid()
        ds.set_pixel_data(pixels, photometric_interpretation=photometric, bits_stored=pixels.dtype.itemsize * 8)
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
        if rle:
            ds.compress(RLELossless)
        if transfer_syntax is not None:
            ds.file_meta.TransferSyntaxUID = transfer_syntax
        path.parent.mkdir(parents=True, exist_ok=True)
        if transfer_syntax is None:
            ds.save_as(path, enforce_file_format=True)
        else:  # a syntax pydicom does not know: tell it how the dataset itself is encoded
            ds.preamble = b"\0" * 128
            ds.save_as(path, implicit_vr=False, little_endian=True, force_encoding=True)
        return path

    return make


@pytest.fixture
def make_png() -> Callable[..., Path]:
    """Write a PNG (or JPEG, by suffix) from a uint8/uint16 (H, W) or uint8 (H, W, 3) array."""
    from PIL import Image

    def make(path: Path, pixels: np.ndarray) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
        return path

    return make


@pytest.fixture
def make_nifti() -> Callable[..., Path]:
    """Write a NIfTI with an affine (default: 1 mm RAS+ voxels)."""
    import nibabel as nib

    def make(path: Path, voxels: np.ndarray, affine: np.ndarray | None = None) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(voxels, np.eye(4) if affine is None else affine), path)
        return path

    return make


@pytest.fixture
def gradient() -> Callable[..., np.ndarray]:
    """``gradient(h, w, scale, dtype, offset)``: a ramp image, distinct per ``offset``."""

    def make(h: int = 16, w: int = 16, scale: int = 1, dtype: Any = np.uint8, offset: int = 0) -> np.ndarray:
        return ((np.arange(h * w).reshape(h, w) * scale + offset) % (np.iinfo(dtype).max + 1)).astype(dtype)

    return make
