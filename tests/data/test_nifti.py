import numpy as np
import pytest

from organfm.data import DataError, build_dataset
from organfm.data.nifti import NiftiReader


def volume(x=4, y=5, z=6):
    return np.arange(x * y * z, dtype=np.int16).reshape(x, y, z)


def test_volume_expands_into_axial_slices_in_display_orientation(tmp_path, make_nifti):
    vox = volume()
    make_nifti(tmp_path / "v.nii.gz", vox)  # identity affine: axes already point to R, A, S
    ds = build_dataset(str(tmp_path / "v.nii.gz"), split=None, intensity="none")
    assert len(ds) == 6 and [r.index for r in ds.records] == list(range(6))
    for k in range(6):
        # rows run anterior -> posterior, columns patient right -> left
        np.testing.assert_array_equal(ds[k]["image"][0].numpy(), vox[:, :, k].T[::-1, ::-1])
    assert len({r.split for r in ds.records}) == 1  # slices of one scan share a split


def test_storage_order_does_not_change_what_is_read(tmp_path, make_nifti):
    vox = volume()
    make_nifti(tmp_path / "ras.nii", vox)
    # the same anatomy stored with X reversed and Z reversed, as the affine says
    flipped_affine = np.diag([-1.0, 1.0, -1.0, 1.0])
    flipped_affine[:3, 3] = [3, 0, 5]
    make_nifti(tmp_path / "las.nii", vox[::-1, :, ::-1].copy(), flipped_affine)
    reader = NiftiReader()
    a, meta = reader.read_volume(str(tmp_path / "ras.nii"))
    b, _ = reader.read_volume(str(tmp_path / "las.nii"))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (6, 5, 4) and meta["dtype"] == "int16" and meta["spacing"] == (1.0, 1.0, 1.0)


def test_dim3_keeps_whole_volumes(tmp_path, make_nifti):
    vox = volume()
    make_nifti(tmp_path / "v.nii", vox)
    ds = build_dataset(str(tmp_path / "v.nii"), split=None, dim=3, image_size=8)
    assert len(ds) == 1
    item = ds[0]["image"]
    assert item.shape == (1, 8, 8, 8) and 0 <= float(item.min()) and float(item.max()) <= 1


def test_2d_nifti_is_one_image_and_not_a_volume(tmp_path, make_nifti):
    make_nifti(tmp_path / "flat.nii", volume(7, 9, 1)[:, :, 0])
    ds = build_dataset(str(tmp_path / "flat.nii"), split=None)
    assert len(ds) == 1 and ds[0]["image"].shape == (1, 9, 7)
    with pytest.raises(DataError, match=r"flat\.nii: a 2D image, but dim=3"):
        build_dataset(str(tmp_path / "flat.nii"), split=None, dim=3)


def test_4d_nifti_is_a_wrong_shape(tmp_path, make_nifti):
    make_nifti(tmp_path / "t.nii", np.zeros((4, 4, 4, 3), dtype=np.int16))
    with pytest.raises(DataError, match=r"t\.nii: NIfTI of shape \(4, 4, 4, 3\) is not"):
        build_dataset(str(tmp_path / "t.nii"), split=None)


def test_truncated_nifti_fails_with_file_name(tmp_path, make_nifti):
    noise = np.random.default_rng(0).integers(0, 1000, (32, 32, 32)).astype(np.int16)
    path = make_nifti(tmp_path / "cut.nii.gz", noise)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DataError, match=r"cut\.nii\.gz"):
        ds = build_dataset(str(path), split=None)
        ds[0]


def test_real_ct_volume(totalseg):
    ds = build_dataset(str(totalseg / "example_ct_sm.nii.gz"), split=None, intensity="none")
    assert len(ds) == 30
    image = ds[15]["image"]
    assert image.shape == (1, 101, 122)
    assert float(image.min()) >= -1100 and float(image.max()) > 300  # HU: air to bone
    _, meta = ds.read_array(15)
    assert meta["spacing"] == (3.0, 3.0) and meta["dtype"] == "int16"
