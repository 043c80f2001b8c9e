import numpy as np
import pydicom
import pytest

from organfm.data import DataError, build_dataset
from organfm.data.dicom import DicomReader


def ramp(h=8, w=8, start=0, step=10):
    return (start + np.arange(h * w).reshape(h, w) * step).astype(np.uint16)


def test_rescale_slope_intercept_gives_hu(tmp_path, make_dicom):
    stored = ramp(step=20)
    path = make_dicom(tmp_path / "ct.dcm", stored, RescaleSlope=2, RescaleIntercept=-1024)
    hu, meta = DicomReader(use_voi=False).read(str(path))
    np.testing.assert_array_equal(hu[0], stored * 2.0 - 1024)
    assert hu[0, 0, 0] == -1024 and meta["dtype"] == "uint16" and meta["normalized"] is False


def test_voi_window_maps_to_unit_range_and_is_not_renormalised(tmp_path, make_dicom):
    # HU values span only the middle of the window: min-max would stretch them, the window must not
    stored = ramp(step=1, start=1024 - 32)  # HU -32 .. 31 after the intercept
    path = make_dicom(tmp_path / "w.dcm", stored, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=0,
                      WindowWidth=1000, VOILUTFunction="LINEAR_EXACT")
    shown, meta = DicomReader().read(str(path))
    hu = stored.astype(float) - 1024
    np.testing.assert_allclose(shown[0], hu / 1000 + 0.5, atol=1e-6)
    assert meta["normalized"] and meta["window"] == (0.0, 1000.0)
    item = build_dataset(str(tmp_path), split=None)[0]["image"]
    np.testing.assert_allclose(item[0].numpy(), hu / 1000 + 0.5, atol=1e-6)
    assert 0.45 < float(item.min()) and float(item.max()) < 0.55


def test_linear_window_clips_outside(tmp_path, make_dicom):
    stored = np.array([[0, 1000, 1024 + 40, 2000, 4000]], dtype=np.uint16)  # HU -1024, -24, 40, 976, 2976
    path = make_dicom(tmp_path / "c.dcm", stored, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40,
                      WindowWidth=400)
    shown, _ = DicomReader().read(str(path))
    assert shown[0, 0, 0] == 0 and shown[0, 0, 3] == 1 and shown[0, 0, 4] == 1
    assert abs(shown[0, 0, 2] - 0.5) < 0.01 and 0 < shown[0, 0, 1] < 0.5


def test_intensity_window_uses_hu_not_the_file_window(tmp_path, make_dicom):
    stored = np.array([[0, 1024, 1064, 1424]], dtype=np.uint16)  # HU -1024, 0, 40, 400
    make_dicom(tmp_path / "h.dcm", stored, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=500, WindowWidth=10)
    ds = build_dataset(str(tmp_path), split=None, intensity="window", window=(40, 400))
    np.testing.assert_allclose(ds[0]["image"][0, 0].numpy(), [0.0, 0.4, 0.5, 1.0], atol=1e-6)


def test_monochrome1_is_inverted(tmp_path, make_dicom):
    stored = ramp(step=7)
    make_dicom(tmp_path / "m1" / "a.dcm", stored, photometric="MONOCHROME1")
    make_dicom(tmp_path / "m2" / "a.dcm", stored, photometric="MONOCHROME2")
    mono1 = build_dataset(str(tmp_path / "m1"), split=None)[0]["image"]
    mono2 = build_dataset(str(tmp_path / "m2"), split=None)[0]["image"]
    assert float(mono2[0, 0, 0]) == 0.0 and float(mono1[0, 0, 0]) == 1.0
    np.testing.assert_allclose(mono1.numpy(), 1.0 - mono2.numpy(), atol=1e-6)


def test_monochrome1_with_window_inverts_the_windowed_values(tmp_path, make_dicom):
    stored = ramp(step=7)
    kw = dict(WindowCenter=200, WindowWidth=300)
    one, _ = DicomReader().read(str(make_dicom(tmp_path / "a.dcm", stored, photometric="MONOCHROME1", **kw)))
    two, _ = DicomReader().read(str(make_dicom(tmp_path / "b.dcm", stored, photometric="MONOCHROME2", **kw)))
    np.testing.assert_allclose(one, 1.0 - two, atol=1e-6)


def test_multiframe_gives_one_record_per_frame(tmp_path, make_dicom):
    frames = np.stack([ramp(start=100 * k) for k in range(3)])
    make_dicom(tmp_path / "mf.dcm", frames, RescaleSlope=1, RescaleIntercept=0)
    ds = build_dataset(str(tmp_path), split=None, intensity="none", dedup=False)
    assert len(ds) == 3 and [r.index for r in ds.records] == [0, 1, 2]
    for k in range(3):
        np.testing.assert_array_equal(ds[k]["image"][0].numpy(), frames[k])
    assert len({r.split for r in ds.records}) == 1  # frames of one file never straddle splits
    volume = build_dataset(str(tmp_path), split=None, intensity="none", dim=3)
    assert len(volume) == 1 and volume[0]["image"].shape == (1, 3, 8, 8)
    np.testing.assert_array_equal(volume[0]["image"][0].numpy(), frames)


def test_rle_compressed_file_decodes(tmp_path, make_dicom):
    stored = ramp(step=13)
    path = make_dicom(tmp_path / "rle.dcm", stored, rle=True)
    assert pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID.name == "RLE Lossless"
    array, _ = DicomReader(use_voi=False).read(str(path))
    np.testing.assert_array_equal(array[0], stored)


def test_missing_decoder_error_names_file_syntax_and_package(tmp_path, make_dicom, monkeypatch):
    path = make_dicom(tmp_path / "ls.dcm", ramp(), rle=True)

    class Unavailable:
        is_available = False
        missing_dependencies = ["pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-rle>=2.0"]

    monkeypatch.setattr("pydicom.pixels.get_decoder", lambda uid: Unavailable())
    with pytest.raises(DataError, match=r"ls\.dcm: no decoder installed for transfer syntax RLE Lossless.*"
                                        r"pip install pylibjpeg-rle"):
        build_dataset(str(tmp_path), split=None)  # fails at index time, before any training


def test_unknown_compressed_syntax_fails_at_index_time(tmp_path, make_dicom):
    # JPEG XL (1.2.840.10008.1.2.4.110) has no decoder in pydicom 3.0
    make_dicom(tmp_path / "xl.dcm", ramp(), transfer_syntax="1.2.840.10008.1.2.4.110")
    with pytest.raises(DataError, match=r"xl\.dcm: pydicom .* has no decoder for transfer syntax 1\.2\.840\.10008"):
        build_dataset(str(tmp_path), split=None)


def test_body_part_examined_names_the_organ(tmp_path, make_dicom):
    make_dicom(tmp_path / "a.dcm", ramp(start=1), BodyPartExamined="LIVER")
    make_dicom(tmp_path / "b.dcm", ramp(start=2), BodyPartExamined="SPLEEN")
    make_dicom(tmp_path / "c.dcm", ramp(start=3), BodyPartExamined="LIVER")
    ds = build_dataset(str(tmp_path), split=None, organ_from="dicom")
    assert ds.organs == ["liver", "spleen"]
    assert [ds[i]["organ"] for i in range(3)] == [0, 1, 0]


def test_patient_identifiers_never_leak(tmp_path, make_dicom):
    for k in range(4):
        make_dicom(tmp_path / f"{k}.dcm", ramp(start=k), BodyPartExamined="CHEST")
    ds = build_dataset(str(tmp_path), split=None)
    text = repr(ds.records) + repr(ds.summary()) + repr(ds.read_array(0)[1])
    assert "SECRET-4711" not in text and "Doe" not in text
    split_file = tmp_path / "split.csv"
    ds.save_split(split_file)
    assert "SECRET-4711" not in split_file.read_text()
    assert len({r.split for r in ds.records}) == 1  # one patient, one split


def test_truncated_pixel_data_fails_at_read_naming_file(tmp_path, make_dicom):
    path = make_dicom(tmp_path / "cut.dcm", ramp(64, 64))
    path.write_bytes(path.read_bytes()[:-3000])
    ds = build_dataset(str(tmp_path), split=None)  # the header is intact
    with pytest.raises(DataError, match=r"cut\.dcm"):
        ds[0]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("content, reason", [
    (b"\0" * 128 + b"DICM" + b"\x02\x00garbage", "holds no image"),  # pydicom parses it leniently
    (b"not dicom at all", "not a readable DICOM"),
])
def test_broken_dicom_fails_at_index_time(tmp_path, content, reason):
    (tmp_path / "bad.dcm").write_bytes(content)
    with pytest.raises(DataError, match=rf"bad\.dcm: .*{reason}"):
        build_dataset(str(tmp_path), split=None)


def test_real_ct_series(totalseg):
    ds = build_dataset(str(totalseg / "example_ct_dicom"), split=None)
    assert len(ds) == 20 and ds.organs == ["partialbody"]
    item = ds[0]["image"]
    assert item.shape == (1, 512, 512) and 0 <= float(item.min()) and float(item.max()) <= 1
    _, meta = ds.read_array(0)
    assert meta["window"] == (40.0, 300.0) and meta["normalized"] and meta["spacing"] == (0.9765625, 0.9765625)
    assert len({r.split for r in ds.records}) == 1  # 20 slices of one scan stay in one split
    hu, _ = build_dataset(str(totalseg / "example_ct_dicom"), split=None, use_voi=False).read_array(0)
    assert hu.min() >= -1024 and hu.max() > 500  # air and bone, in HU
