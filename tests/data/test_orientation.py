"""One anatomy, one array: NIfTI files and DICOM series of any plane read into the same display orientation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from organfm.data.acquisition import orientation_from_affine
from organfm.data.dicom_series import read_dicom_series
from organfm.data.nifti import NiftiReader
from organfm.data.orientation import LPS_TO_RAS
from organfm.data.volume_set import list_volume_sources

# the anatomy, in display orientation: D inferior -> superior, H anterior -> posterior, W right -> left
SHAPE, SPACING, ORIGIN = (8, 7, 6), (2.0, 1.0, 1.5), np.array([10.0, -20.0, 30.0])  # ORIGIN: RAS mm of [0, 0, 0]
DISPLAY_COLUMNS = np.array([[0.0, 0.0, SPACING[0]], [0.0, -SPACING[1], 0.0], [-SPACING[2], 0.0, 0.0]]).T  # RAS


def _anatomy() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 1000, SHAPE).astype(np.uint16)  # no symmetry to hide a flip


def _rotation_about_s(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    r = np.eye(4)
    r[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]
    return r


def _stored(display: np.ndarray, perm: tuple[int, int, int], flips: tuple[bool, bool, bool],
            rotation: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The anatomy stored with axis ``a`` = display axis ``perm[a]`` (reversed where ``flips[a]``), and the
    (4, 4) voxel -> RAS+ affine of that storage (turned by ``rotation`` about the origin's world, if given)."""
    stored = display.transpose(perm)
    stored = stored[tuple(slice(None, None, -1) if f else slice(None) for f in flips)]
    affine = np.eye(4)
    origin = ORIGIN.copy()
    for a, (d, f) in enumerate(zip(perm, flips)):
        affine[:3, a] = -DISPLAY_COLUMNS[:, d] if f else DISPLAY_COLUMNS[:, d]
        if f:
            origin += (SHAPE[d] - 1) * DISPLAY_COLUMNS[:, d]
    affine[:3, 3] = origin
    return np.ascontiguousarray(stored), (affine if rotation is None else rotation @ affine)


def _write_series(make_dicom, folder: Path, stored: np.ndarray, affine: np.ndarray) -> Path:
    """One DICOM slice per stored axis-0 index: rows along axis 1, columns along axis 2 (tags in LPS)."""
    lps = LPS_TO_RAS @ affine  # the flip is its own inverse
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    row, col = lps[:3, 2] / spacing[2], lps[:3, 1] / spacing[1]
    for k in np.random.default_rng(1).permutation(stored.shape[0]):  # file order says nothing
        position = (lps @ [k, 0, 0, 1])[:3]
        make_dicom(folder / f"s{k:02d}.dcm", stored[k], ImagePositionPatient=[float(v) for v in position],
                   ImageOrientationPatient=[float(v) for v in (*row, *col)],
                   PixelSpacing=[float(spacing[1]), float(spacing[2])], SeriesInstanceUID="1.2.3.4", Modality="MR")
    return folder


# (name, NIfTI storage, DICOM storage, plane): storages as (perm, flips) of the display axes
CASES = [
    # axial: NIfTI in RAS+ storage (x right->left flipped, y posterior->anterior); DICOM rows P, columns L
    ("axial", ((2, 1, 0), (True, True, False)), ((0, 1, 2), (False, False, False)), "axial"),
    # sagittal: DICOM rows run S->I, columns A->P, slices R->L reversed: (6, 8, 7) files for an (8, 7, 6) anatomy
    ("sagittal", ((1, 0, 2), (True, False, True)), ((2, 0, 1), (True, True, False)), "sagittal"),
    # coronal: DICOM rows S->I, columns R->L, slices A->P
    ("coronal", ((2, 0, 1), (True, False, True)), ((1, 0, 2), (False, True, False)), "coronal"),
]


@pytest.mark.parametrize("name,nifti_storage,dicom_storage,plane", CASES, ids=[c[0] for c in CASES])
def test_nifti_and_dicom_series_of_one_anatomy_read_the_same(make_nifti, make_dicom, tmp_path, name, nifti_storage,
                                                             dicom_storage, plane):
    display = _anatomy()
    stored, affine = _stored(display, *nifti_storage)
    nifti = make_nifti(tmp_path / f"{name}.nii.gz", stored, affine)
    from_nifti, nifti_meta = NiftiReader(cache_size=0).read_volume(str(nifti))
    np.testing.assert_array_equal(from_nifti, display)
    assert nifti_meta["spacing"] == pytest.approx(SPACING)

    stored, affine = _stored(display, *dicom_storage)
    from_dicom, dicom_meta = read_dicom_series(_write_series(make_dicom, tmp_path / name, stored, affine))
    assert from_dicom.shape == SHAPE and from_dicom.flags.c_contiguous
    np.testing.assert_array_equal(from_dicom, display.astype(np.float32))
    assert dicom_meta["spacing"] == pytest.approx(SPACING)
    assert dicom_meta["acquisition"]["orientation"] == plane

    # the 3D pretraining loader names each one's plane the same way
    (_, load_nifti, _), = list_volume_sources(str(nifti))
    (_, load_dicom, _), = list_volume_sources(str(tmp_path / name))
    assert load_nifti()[1]["orientation"] == load_dicom()[1]["orientation"] == plane


def test_an_oblique_series_reads_like_the_nifti_of_the_same_geometry(make_nifti, make_dicom, tmp_path):
    # a sagittal acquisition turned 30 degrees about S: still nearest to R/S/A axes, but oblique
    display = _anatomy()
    stored, affine = _stored(display, (2, 0, 1), (True, True, False), rotation=_rotation_about_s(30))
    nifti = make_nifti(tmp_path / "oblique.nii.gz", stored, affine)
    from_nifti, nifti_meta = NiftiReader(cache_size=0).read_volume(str(nifti))
    from_dicom, dicom_meta = read_dicom_series(_write_series(make_dicom, tmp_path / "oblique", stored, affine))
    np.testing.assert_array_equal(from_dicom, np.asarray(from_nifti, dtype=np.float32))
    np.testing.assert_array_equal(from_nifti, display)  # 30 degrees off: the closest axes are still the anatomy's
    assert dicom_meta["spacing"] == pytest.approx(SPACING) and nifti_meta["spacing"] == pytest.approx(SPACING)
    assert dicom_meta["acquisition"]["orientation"] == "oblique"
    assert list_volume_sources(str(nifti))[0][1]()[1]["orientation"] == "oblique"


def test_plane_from_the_affine_is_that_of_the_stored_slices():
    def affine(first, second, third):
        a = np.eye(4)
        a[:3, :3] = np.array([first, second, third], dtype=float).T
        return a

    assert orientation_from_affine(np.eye(4)) == "axial"
    assert orientation_from_affine(np.diag([-3.0, -3.0, 3.0, 1.0])) == "axial"  # LPS-stored: same plane
    assert orientation_from_affine(affine([0, 1, 0], [0, 0, 1], [2, 0, 0])) == "sagittal"
    assert orientation_from_affine(affine([1, 0, 0], [0, 0, -1], [0, 4, 0])) == "coronal"
    # the through-plane axis decides, not the coarsest one: thick axial slices stored as the last axis
    assert orientation_from_affine(np.diag([0.8, 0.8, 5.0, 1.0])) == "axial"
    assert orientation_from_affine(_rotation_about_s(30) @ affine([0, 1, 0], [0, 0, 1], [1, 0, 0])) == "oblique"
    assert orientation_from_affine(affine([1, 0, 0], [0, 0, 0], [0, 0, 1])) is None  # degenerate: unknown
    assert orientation_from_affine(np.full((4, 4), np.nan)) is None


def test_real_ct_nifti_is_read_as_its_closest_canonical(totalseg):
    import nibabel as nib

    path = totalseg / "example_ct_sm.nii.gz"
    volume, meta = NiftiReader(cache_size=0).read_volume(str(path))
    ras = np.asanyarray(nib.as_closest_canonical(nib.load(str(path))).dataobj)
    np.testing.assert_array_equal(volume, ras.transpose(2, 1, 0)[:, ::-1, ::-1])
    assert volume.shape == (30, 101, 122) and meta["spacing"] == (3.0, 3.0, 3.0)
    assert list_volume_sources(str(path))[0][1]()[1]["orientation"] == "axial"


def test_real_dicom_series_lines_up_with_its_nifti_label_map(totalseg):
    # the label map was written by another converter (LAS storage); both come out in one orientation
    volume, meta = read_dicom_series(totalseg / "example_ct_dicom")
    labels, label_meta = NiftiReader(cache_size=0).read_volume(str(totalseg / "example_seg_dicom.nii.gz"))
    assert volume.shape == labels.shape == (20, 512, 512)
    assert meta["spacing"] == pytest.approx(label_meta["spacing"])
    organ = np.asarray(labels) > 0
    # organs lie on tissue, not air; flipped front to back they would not
    assert (volume[organ] > -500).mean() > 0.95
    assert (volume[:, ::-1][organ] > -500).mean() < 0.9
