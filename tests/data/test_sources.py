import numpy as np
import pytest

from organfm.data import build_dataset


def ramp(start):
    return (start + np.arange(64).reshape(8, 8)).astype(np.uint16)


def test_auto_organ_folder_beats_body_part_but_top_level_dicom_uses_it(tmp_path, make_dicom):
    make_dicom(tmp_path / "Kidney" / "a.dcm", ramp(1), BodyPartExamined="ABDOMEN")
    make_dicom(tmp_path / "b.dcm", ramp(2), BodyPartExamined="CHEST")
    ds = build_dataset(str(tmp_path), split=None)
    assert {r.key: r.organ for r in ds.records} == {"Kidney/a.dcm": "Kidney", "b.dcm": "chest"}
    by_dicom = build_dataset(str(tmp_path), split=None, organ_from="dicom")
    assert {r.key: r.organ for r in by_dicom.records} == {"Kidney/a.dcm": "abdomen", "b.dcm": "chest"}


def test_dicom_without_suffix_is_found_by_its_marker(tmp_path, make_dicom):
    make_dicom(tmp_path / "CT.1.3.12.2.1107.5.16573", ramp(1))
    ds = build_dataset(str(tmp_path), split=None)
    assert len(ds) == 1 and ds.records[0].reader == "dicom"


@pytest.mark.parametrize("organ_from", ["manifest", "file", "label_map"])
def test_organ_from_must_fit_the_source(tmp_path, make_png, organ_from):
    make_png(tmp_path / "a" / "x.png", np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="organ_from"):
        build_dataset(str(tmp_path), organ_from=organ_from)
    with pytest.raises(ValueError, match="unknown organ_from 'body'"):
        build_dataset(str(tmp_path), organ_from="body")
