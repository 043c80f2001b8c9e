"""Labelled volumes: the contract's 3D input, relabelling, image/label reading, CT slices, npz 3D classification."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from organfm.data.errors import DataError
from organfm.data.labelled import (load_ct_segmentation_slices, load_npz_volumes, read_labelled_volume, relabel,
                                   volume_input)

ORGANS = ["liver", "spleen", "kidney_left", "kidney_right"]


def test_volume_input_reads_the_contract_and_task_settings_override_it():
    contract = {"input_size": [1, 24, 24, 24],
                "intensity": {"mode": "percentile_minmax", "percentiles": [1, 99], "spacing": [2, 1.5, 1.5]}}
    prep = volume_input(contract)
    assert prep.intensity == {"mode": "percentile", "window": None, "percentiles": [1, 99]}
    assert prep.spacing == (2.0, 1.5, 1.5) and prep.cube == 24
    pinned = volume_input(contract, window=[40, 400], spacing=[3, 3, 3], cube=16)
    assert pinned.intensity == {"mode": "window", "window": [40.0, 400.0]}
    assert pinned.describe() == {"intensity": "window", "window": [40.0, 400.0], "spacing": [3.0, 3.0, 3.0],
                                 "cube": 16}
    # a contract without 3D preprocessing (random: / timm: models): 3D pretraining's percentile clip, no cube
    bare = volume_input({"input_size": [1, 32, 32]})
    assert bare.intensity["mode"] == "percentile" and bare.spacing is None and bare.cube is None
    assert volume_input({"intensity": "minmax"}).intensity["mode"] == "minmax"  # a bare mode string


def test_volume_input_scales_by_its_window():
    prep = volume_input({}, window=[40, 400])  # -160 .. 240 HU -> 0 .. 1
    out = prep.scale(np.array([[[-1000.0, -160.0, 40.0, 240.0, 3000.0]]]))
    np.testing.assert_allclose(out, [[[0.0, 0.0, 0.5, 1.0, 1.0]]], atol=1e-6)
    assert out.dtype == np.float32


def test_relabel_maps_the_chosen_organs_to_1_to_c_in_their_order():
    labels = np.array([[0, 5, 5], [2, 7, -1], [9, 2, 5]])
    class_map = {2: "spleen", 5: "liver", 7: "kidney_left", 9: "lung"}
    target, names = relabel(labels, class_map, ["liver", "spleen"])
    assert names == ["liver", "spleen"]
    assert target.tolist() == [[0, 1, 1], [2, 0, 0], [0, 2, 1]]  # 7, 9 and a negative id become background
    assert target.dtype == np.int64
    # no classes named: every mapped class present, by ascending id
    assert relabel(labels, class_map, None)[1] == ["spleen", "liver", "kidney_left", "lung"]
    # no class map: the raw ids present, named by id
    raw, raw_names = relabel(labels, None, None)
    assert raw_names == ["label_2", "label_5", "label_7", "label_9"] and raw.tolist() == [[0, 2, 2], [1, 3, 0],
                                                                                         [4, 1, 2]]
    with pytest.raises(ValueError, match="segmentation3d.classes not in the class map: heart; valid: spleen"):
        relabel(labels, class_map, ["liver", "heart"], what="segmentation3d.classes")
    with pytest.raises(ValueError, match="no classes"):
        relabel(np.zeros((2, 2), np.int64), None, None)


def _nifti(path: Path, array: np.ndarray) -> Path:
    import nibabel as nib

    nib.save(nib.Nifti1Image(array, np.eye(4)), path)
    return path


def test_read_labelled_volume_rounds_float_label_maps_and_refuses_another_grid(tmp_path):
    image = _nifti(tmp_path / "ct.nii.gz", np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    stored = np.zeros((2, 3, 4), np.float32)
    stored[0, 0, 0], stored[1, 2, 3] = 2.9999, 1.0001  # a resampled map: ids a hair off the integers
    volume, labels, _ = read_labelled_volume(image, _nifti(tmp_path / "seg.nii.gz", stored))
    assert labels.shape == volume.shape and labels.dtype == np.int64
    assert sorted(np.unique(labels).tolist()) == [0, 1, 3] and int((labels == 3).sum()) == 1
    kept = read_labelled_volume(image, _nifti(tmp_path / "u8.nii.gz", np.ones((2, 3, 4), np.uint8)))[1]
    assert kept.dtype == np.uint8  # integer maps keep their (small) dtype
    with pytest.raises(DataError, match=r"other.nii.gz: label map shape .* differs from image"):
        read_labelled_volume(image, _nifti(tmp_path / "other.nii.gz", np.zeros((2, 3, 5), np.uint8)))


def test_ct_slices_match_label_map(ct_files: dict) -> None:
    labels, class_map = ct_files["volume"], ct_files["map"]
    ids = [next(i for i, n in class_map.items() if n == organ) for organ in ORGANS]
    side = max(labels.shape[1:])  # native resolution: padding only, no resampling
    images, masks, names = load_ct_segmentation_slices(ct_files["image"], ct_files["labels"], class_map=class_map,
                                                       classes=ORGANS, size=side, min_foreground=50)
    assert names == ["background", *ORGANS]
    # reference slice selection, written independently
    chosen = np.isin(labels, ids)
    kept = [z for z in range(labels.shape[0]) if chosen[z].sum() >= 50]
    assert images.shape == (len(kept), 1, side, side) and masks.shape == (len(kept), side, side)
    assert images.dtype == torch.float32 and masks.dtype == torch.int64
    assert 0.0 <= images.min() and images.max() <= 1.0
    for new_id, old_id in enumerate(ids, start=1):
        expected = [(labels[z] == old_id).sum() for z in kept]
        got = [(masks[k] == new_id).sum().item() for k in range(len(kept))]
        assert got == expected, ORGANS[new_id - 1]
    assert set(torch.unique(masks).tolist()) == {0, 1, 2, 3, 4}
    # image and mask line up: the organs are soft tissue (0-100 HU -> 0.4-0.65 in the 40/400 window)
    for new_id in range(1, 5):
        assert 0.35 < images[:, 0][masks == new_id].mean() < 0.65, ORGANS[new_id - 1]


def test_ct_slices_every_voxel_and_resized(ct_files: dict) -> None:
    labels, class_map = ct_files["volume"], ct_files["map"]
    liver = next(i for i, n in class_map.items() if n == "liver")
    images, masks, _ = load_ct_segmentation_slices(ct_files["image"], ct_files["labels"], class_map=class_map,
                                                   classes=["liver"], size=max(labels.shape[1:]), min_foreground=1)
    assert (masks == 1).sum().item() == (labels == liver).sum()  # every liver voxel of the volume is there
    small, small_masks, _ = load_ct_segmentation_slices(ct_files["image"], ct_files["labels"], class_map=class_map,
                                                        classes=["liver"], size=64, min_foreground=1)
    assert small.shape == (len(images), 1, 64, 64)
    scale = (64 / max(labels.shape[1:])) ** 2
    assert (small_masks == 1).sum().item() == pytest.approx((labels == liver).sum() * scale, rel=0.1)
    with pytest.raises(ValueError, match="not in the class map"):
        load_ct_segmentation_slices(ct_files["image"], ct_files["labels"], class_map=class_map,
                                    classes=["liver", "heart_of_gold"], size=64)
    _, raw_masks, raw_names = load_ct_segmentation_slices(ct_files["image"], ct_files["labels"], class_map=None,
                                                          classes=None, size=64)
    assert raw_names[0] == "background" and f"label_{liver}" in raw_names
    assert len(raw_names) - 1 == len(set(np.unique(labels).tolist()) - {0})


def _npz(tmp_path, n=24, size=12):
    rng = np.random.default_rng(0)
    out = {}
    for split in ("train", "val", "test"):
        labels = np.arange(n) % 2
        images = rng.random((n, size, size, size)) * 50
        images[labels == 1, 3:9, 3:9, 3:9] += 200  # class 1: a bright cube
        out[f"{split}_images"], out[f"{split}_labels"] = images.astype(np.float32), labels[:, None].astype(np.uint8)
    np.savez(tmp_path / "v.npz", **out)
    return tmp_path / "v.npz"


def test_npz_volumes_become_cubes_with_labels(tmp_path):
    path = _npz(tmp_path)
    x, y = load_npz_volumes(str(path), "val", 8, limit=5)
    assert x.shape == (5, 1, 8, 8, 8) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y.tolist() == [0, 1, 0, 1, 0]
    np.savez(tmp_path / "flat.npz", train_images=np.zeros((2, 8, 8)), train_labels=np.zeros((2, 1)))
    with pytest.raises(DataError, match=r"flat.npz: train_images has shape \(2, 8, 8\)"):
        load_npz_volumes(str(tmp_path / "flat.npz"), "train", 8)


def test_npz_volumes_follow_the_contracts_intensity(tmp_path):
    path = _npz(tmp_path)  # values 0-250
    x, _ = load_npz_volumes(str(path), "val", 8, limit=4)
    assert float(x.max()) > 0.9  # no contract: the percentile clip of pretraining (then the resize smooths)
    windowed, _ = load_npz_volumes(str(path), "val", 8, limit=4,
                                   prep=volume_input({"intensity": {"mode": "window", "window": [500, 1000]}}))
    assert float(windowed.max()) < 0.26  # 250 in a 0-1000 window
    with pytest.warns(UserWarning, match=r"no 'val_spacing' array"):
        load_npz_volumes(str(path), "val", 8, limit=1, prep=volume_input({"intensity": {"spacing": [1, 1, 1]}}))
