"""Volumes for 3D pretraining: Triad's preprocessing, resampling, and bad input (error or counted skip)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from organfm.data.errors import DataError, count_skips, read_skip_log
from organfm.data.volume_set import load_volumes, preprocess_volume


def test_percentile_clip_minmax_and_resize():
    v = np.arange(8 * 8 * 8, dtype=np.float32).reshape(8, 8, 8)
    v[0, 0, 0] = -1e6  # an outlier below the 0.5th percentile is clipped, not stretched to
    out = preprocess_volume(v, cube=4, where="x")
    assert out.shape == (4, 4, 4) and out.min() >= 0 and out.max() <= 1 and out.dtype == torch.float32
    ref = np.clip(v, *np.percentile(v, [0.5, 99.5]))
    ref = (ref - ref.min()) / (ref.max() - ref.min())
    assert out.mean().item() == pytest.approx(float(ref.mean()), abs=0.02)


def test_anisotropic_spacing_is_resampled_then_centred():
    v = np.random.default_rng(0).random((10, 40, 40)).astype(np.float32)  # 4 mm slices, 1 mm pixels
    # to 2 mm isotropic: (20, 20, 20), then centre-padded/cropped to 16
    out = preprocess_volume(v, cube=16, where="x", spacing=[4.0, 1.0, 1.0], target_spacing=[2.0, 2.0, 2.0])
    assert out.shape == (16, 16, 16)
    with pytest.raises(DataError, match="spacing unknown"):
        preprocess_volume(v, cube=16, where="x", target_spacing=[2.0, 2.0, 2.0])


def test_bad_volumes_are_errors_naming_the_file(tmp_path, make_nifti):
    with pytest.raises(DataError, match=r"flat.nii.gz: a 2D image"):
        load_volumes(str(make_nifti(tmp_path / "flat.nii.gz", np.zeros((8, 8, 1), np.float32))), cube=8)
    with pytest.raises(DataError, match=r"time.nii.gz: a 4D volume"):
        load_volumes(str(make_nifti(tmp_path / "time.nii.gz", np.zeros((8, 8, 8, 3), np.float32))), cube=8)
    nan = np.ones((8, 8, 8), np.float32)
    nan[2, 2, 2] = np.nan
    with pytest.raises(DataError, match=r"nan.nii.gz: 1 NaN/Inf voxels"):
        load_volumes(str(make_nifti(tmp_path / "nan.nii.gz", nan)), cube=8)
    np.savez(tmp_path / "flat.npz", train_images=np.zeros((4, 28, 28), np.uint8))
    with pytest.raises(DataError, match=r"flat.npz: train_images has shape \(4, 28, 28\): 2D images"):
        load_volumes(str(tmp_path / "flat.npz"), cube=8)
    np.savez(tmp_path / "multi.npz", train_images=np.zeros((4, 3, 8, 8, 8), np.uint8))
    with pytest.raises(DataError, match="4D volumes"):
        load_volumes(str(tmp_path / "multi.npz"), cube=8)


def test_skip_mode_counts_and_logs_bad_volumes(tmp_path, make_nifti):
    folder = tmp_path / "vols"
    rng = np.random.default_rng(0)
    make_nifti(folder / "a.nii.gz", rng.random((8, 8, 8)).astype(np.float32))
    make_nifti(folder / "b.nii.gz", np.zeros((8, 8, 1), np.float32))
    nan = rng.random((8, 8, 8)).astype(np.float32)
    nan[0] = np.nan
    make_nifti(folder / "sub" / "c.nii", nan)
    volumes, skipped = load_volumes(str(folder), cube=8, on_error="skip", skip_log_dir=str(tmp_path / "skips"))
    assert [v.where.rsplit("/", 1)[-1] for v in volumes] == ["a.nii.gz"] and skipped == 2
    assert count_skips(tmp_path / "skips") == 2
    assert {w.rsplit("/", 1)[-1] for w, _ in read_skip_log(tmp_path / "skips")} == {"b.nii.gz", "c.nii"}
    assert volumes[0].cube.dtype == torch.float16 and volumes[0].acquisition["spacing"] == [1.0, 1.0, 1.0]


def test_npz_fields_and_manifest_columns_become_acquisition(tmp_path, make_nifti):
    np.savez(tmp_path / "v.npz", train_images=np.random.default_rng(0).random((2, 6, 6, 6)),
             train_modality=np.array(["MR", "CT"]), train_spacing=np.array([[1, 1, 1], [2, 2, 2]], float))
    volumes, _ = load_volumes(str(tmp_path / "v.npz"), cube=4)
    assert [v.acquisition for v in volumes] == [{"modality": "MR", "spacing": [1.0, 1.0, 1.0]},
                                                 {"modality": "CT", "spacing": [2.0, 2.0, 2.0]}]
    make_nifti(tmp_path / "img" / "x.nii.gz", np.random.default_rng(1).random((6, 6, 6)).astype(np.float32))
    (tmp_path / "m.csv").write_text("path,modality,field_strength,notes\nimg/x.nii.gz,MR,3,patient Smith\n")
    (vol,), _ = load_volumes(str(tmp_path / "m.csv"), cube=4)
    assert vol.acquisition["modality"] == "MR" and vol.acquisition["field_strength"] == "3"
    assert "notes" not in vol.acquisition


def test_real_adrenal_npz(data_root):
    path = data_root / "medmnist" / "adrenalmnist3d.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    volumes, skipped = load_volumes(str(path), cube=16, split="val")
    assert len(volumes) == 98 and skipped == 0
    assert all(v.cube.shape == (16, 16, 16) for v in volumes)
