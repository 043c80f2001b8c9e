"""DICOM series -> volume: ordering by position, spacing from tags, refusal of broken series, no identifier leak."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from organfm.data.acquisition import describe_acquisition
from organfm.data.dicom_series import read_dicom_series
from organfm.data.errors import DataError

AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
IDENTIFIERS = ("Doe", "Jane", "SECRET-4711", "St Elsewhere", "liver", "tumor", "1.2.826.0.1.3680043")


def _series(make_dicom, folder: Path, zs, *, orientations=None, **tags) -> Path:
    """One slice per z: pixel value = 10 * slice index in z order, written in scrambled file order."""
    order = np.random.default_rng(0).permutation(len(zs))
    for k in order:
        pixels = np.full((4, 5), 10 * k, dtype=np.uint16)
        make_dicom(folder / f"s{k:02d}.dcm", pixels, ImagePositionPatient=[0.0, 0.0, float(zs[k])],
                   ImageOrientationPatient=(orientations or {}).get(k, AXIAL), PixelSpacing=[0.5, 0.7],
                   SeriesInstanceUID="1.2.826.0.1.3680043.2.1", InstanceNumber=int(len(zs) - k),
                   RescaleSlope=2, RescaleIntercept=-100, Manufacturer="Philips Medical Systems",
                   MagneticFieldStrength=3, RepetitionTime=500, EchoTime=15, ScanningSequence="SE",
                   InstitutionName="St Elsewhere", SeriesDescription="liver tumor", BodyPartExamined="LIVER", **tags)
    return folder


def test_slices_sorted_by_position_with_spacing_and_rescale(make_dicom, tmp_path):
    folder = _series(make_dicom, tmp_path / "s", [0.0, 3.0, 6.0, 9.0])
    volume, meta = read_dicom_series(folder)
    assert volume.shape == (4, 4, 5)
    # slice k holds 10 k, rescaled by slope 2 and intercept -100, in position order despite file/instance order
    assert [float(volume[k, 0, 0]) for k in range(4)] == [2 * 10 * k - 100 for k in range(4)]
    assert meta["spacing"] == (3.0, 0.5, 0.7)
    assert meta["acquisition"]["orientation"] == "axial"


def test_missing_duplicate_and_mixed_orientation_are_refused_naming_the_files(make_dicom, tmp_path):
    with pytest.raises(DataError, match=r"missing slice.*s01.dcm and s02.dcm"):
        read_dicom_series(_series(make_dicom, tmp_path / "gap", [0.0, 3.0, 9.0, 12.0]))
    with pytest.raises(DataError, match="duplicate slice position"):
        read_dicom_series(_series(make_dicom, tmp_path / "dup", [0.0, 3.0, 3.0, 6.0]))
    coronal = {2: [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]}
    with pytest.raises(DataError, match=r"mixed orientations \(slice s02.dcm"):
        read_dicom_series(_series(make_dicom, tmp_path / "mixed", [0.0, 3.0, 6.0], orientations=coronal))
    with pytest.raises(DataError, match="holds no DICOM file"):
        (tmp_path / "empty").mkdir()
        read_dicom_series(tmp_path / "empty")


def test_no_identifier_or_organ_word_reaches_the_description(make_dicom, tmp_path):
    _, meta = read_dicom_series(_series(make_dicom, tmp_path / "s", [0.0, 3.0]))
    text = describe_acquisition(meta["acquisition"])
    assert text == "CT, sequence SE, 3 T, vendor philips, TR 500 ms, TE 15 ms, axial, spacing 3 x 0.5 x 0.7 mm"
    assert not any(word.lower() in (text + repr(meta)).lower() for word in IDENTIFIERS)


def test_real_series(totalseg, tmp_path):
    volume, meta = read_dicom_series(totalseg / "example_ct_dicom")
    assert volume.shape == (20, 512, 512) and volume.min() == -1024  # HU after the rescale
    assert meta["spacing"][1:] == (0.9765625, 0.9765625) and meta["spacing"][0] > 0
    # drop a middle slice: the gap is found and named
    broken = tmp_path / "broken"
    shutil.copytree(totalseg / "example_ct_dicom", broken)
    files = sorted(broken.iterdir())
    files[10].unlink()
    with pytest.raises(DataError, match="missing slice"):
        read_dicom_series(broken)
