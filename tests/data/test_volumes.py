import json

import numpy as np
import pytest

from organfm.data import DataError, build_dataset, load_class_map
from organfm.data.nifti import NiftiReader


@pytest.fixture
def phantom(tmp_path, make_nifti):
    """A 3-slice volume with a 10x6 'liver' box in slices 0-1 and a 2x2 'spleen' in slice 2."""
    image = np.arange(20 * 30 * 3, dtype=np.int16).reshape(20, 30, 3)  # (X, Y, Z), identity affine
    labels = np.zeros_like(image, dtype=np.uint8)
    labels[5:15, 10:16, 0:2] = 1
    labels[2:4, 2:4, 2] = 2
    class_map = tmp_path / "classes.json"
    class_map.write_text(json.dumps({"1": "liver", "2": "spleen", "3": "kidney_left"}))
    return (make_nifti(tmp_path / "ct.nii.gz", image), make_nifti(tmp_path / "seg.nii.gz", labels), class_map)


def test_crop_is_the_organ_bbox_plus_margin(phantom):
    image, labels, class_map = phantom
    ds = build_dataset(str(image), split=None, label_map=str(labels), class_map=str(class_map), min_pixels=10,
                       crop_margin=2, intensity="none")
    assert ds.organs == ["liver"]  # the 4-pixel spleen is below min_pixels
    assert [r.index for r in ds.records] == [0, 1]
    volume, _ = NiftiReader().read_volume(str(image))
    seg, _ = NiftiReader().read_volume(str(labels))
    for i, record in enumerate(ds.records):
        y0, y1, x0, x1 = record.bbox
        rows, cols = np.nonzero(seg[record.index] == 1)
        # in display orientation the 10 (X) x 6 (Y) box is 6 rows x 10 columns; margin 2 on each side
        assert (y0, y1, x0, x1) == (rows.min() - 2, rows.max() + 3, cols.min() - 2, cols.max() + 3)
        np.testing.assert_array_equal(ds[i]["image"][0].numpy(), volume[record.index, y0:y1, x0:x1])


def test_min_pixels_and_organ_filter(phantom):
    image, labels, class_map = phantom
    ds = build_dataset(str(image), split=None, label_map=str(labels), class_map=str(class_map), min_pixels=4,
                       organs=["spleen", "kidney_left"])
    assert ds.organs == ["kidney_left", "spleen"]  # fixed by the argument, so ids do not depend on the data
    assert [r.organ for r in ds.records] == ["spleen"] and ds[0]["organ"] == 1
    with pytest.raises(ValueError, match="organs not in the class map: livr"):
        build_dataset(str(image), label_map=str(labels), class_map=str(class_map), organs=["livr"])


def test_dim3_gives_one_crop_per_organ(phantom):
    image, labels, class_map = phantom
    ds = build_dataset(str(image), split=None, label_map=str(labels), class_map=str(class_map), min_pixels=4,
                       crop_margin=0, dim=3)
    assert sorted(r.organ for r in ds.records) == ["liver", "spleen"]
    liver = ds[[r.organ for r in ds.records].index("liver")]["image"]
    assert liver.shape == (1, 2, 6, 10)


def test_shape_mismatch_is_a_data_error(tmp_path, phantom, make_nifti):
    image, _, class_map = phantom
    other = make_nifti(tmp_path / "small.nii.gz", np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(DataError, match=r"small\.nii\.gz: label map shape"):
        build_dataset(str(image), label_map=str(other), class_map=str(class_map))


def test_class_map_flat_or_keyed(tmp_path, totalseg):
    real = totalseg / "totalsegmentator_classmap.json"
    total = load_class_map(real, "total")
    assert total[5] == "liver" and total[1] == "spleen" and len(total) == 117
    assert len(load_class_map(real, "total_mr")) == 50
    with pytest.raises(ValueError, match="several class maps .*total.*class_map_key"):
        load_class_map(real)
    with pytest.raises(ValueError, match="class_map_key 'nope'"):
        load_class_map(real, "nope")
    flat = tmp_path / "flat.json"
    flat.write_text('{"1": "liver"}')
    assert load_class_map(flat) == {1: "liver"}


@pytest.fixture(scope="module")
def real_crops(totalseg):
    return build_dataset(str(totalseg / "example_ct.nii.gz"), split=None,
                         label_map=str(totalseg / "example_seg_fast_force_split.nii.gz"),
                         class_map=str(totalseg / "totalsegmentator_classmap.json"), class_map_key="total",
                         min_pixels=64, crop_margin=4, intensity="window", window=(40, 400))


def test_real_ct_crops_cover_abdominal_organs(real_crops):
    assert {"liver", "spleen", "kidney_left", "kidney_right", "urinary_bladder"} <= set(real_crops.organs)
    counts = real_crops.summary()["organs"]
    assert counts["liver"] > 20 and counts["spleen"] > 10
    assert len({r.split for r in real_crops.records}) == 1  # all crops of one scan share a split


def test_real_crops_lie_on_their_organ(real_crops, totalseg):
    reader = NiftiReader()
    volume, _ = reader.read_volume(str(totalseg / "example_ct.nii.gz"))
    seg, _ = reader.read_volume(str(totalseg / "example_seg_fast_force_split.nii.gz"))
    liver_hu = []
    for i, record in enumerate(real_crops.records):
        if record.organ not in ("liver", "spleen", "kidney_left"):
            continue
        y0, y1, x0, x1 = record.bbox
        mask = seg[record.index] == record.meta["label_id"]
        assert mask.sum() >= 64 and mask[y0:y1, x0:x1].sum() == mask.sum()  # the whole organ is inside the crop
        raw, _ = real_crops.read_array(i)
        np.testing.assert_array_equal(raw[0], volume[record.index, y0:y1, x0:x1])
        if record.organ == "liver":
            liver_hu.append(np.median(raw[0][mask[y0:y1, x0:x1]]))
    assert 20 < np.median(liver_hu) < 200  # soft tissue HU: the crop is on the liver, not beside it
