"""Subject manifests: reading, the bad-input rules (named errors or counted skips), images through the readers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from organfm.data.errors import DataError, count_skips
from organfm.data.subjects import SubjectImages, read_subject_manifest

HEADER = "subject,organ,path,patient_id,split,diabetes,stroke\n"


def _png(folder, name, value):
    path = folder / name
    Image.fromarray(np.full((20, 24), value, dtype=np.uint8) + np.arange(24, dtype=np.uint8)).save(path)
    return name


def _manifest(tmp_path, rows, header=HEADER):
    for row in rows:
        name = row.split(",")[2]
        if name and not (tmp_path / name).exists() and not name.startswith("gone"):
            _png(tmp_path, name, 50)
    path = tmp_path / "subjects.csv"
    path.write_text(header + "".join(r + "\n" for r in rows))
    return path


GOOD = ["s1,heart,s1h.png,p1,train,1,0", "s1,liver,s1l.png,p1,train,1,0", "s2,liver,s2l.png,p2,train,0,1",
        "s3,heart,s3h.png,p3,test,1,1", "s4,brain,s4b.png,p4,test,0,0"]


def test_reads_subjects_organs_labels_and_images(tmp_path):
    m = read_subject_manifest(_manifest(tmp_path, GOOD))
    assert [s.id for s in m.subjects] == ["s1", "s2", "s3", "s4"]
    assert m.organs == ["heart", "liver", "brain"] and m.label_names == ["diabetes", "stroke"]
    assert m.availability().tolist() == [[True, True, False], [False, True, False], [True, False, False],
                                         [False, False, True]]
    ds = SubjectImages(m, 16)
    item = ds[0]
    assert item["images"].shape == (3, 1, 16, 16) and item["available"].tolist() == [True, True, False]
    assert item["labels"].tolist() == [1.0, 0.0] and torch.all(item["images"][2] == 0)
    assert float(item["images"][0].max()) > 0.95 and float(item["images"][0].min()) < 0.05  # min-max, resized
    train = read_subject_manifest(_manifest(tmp_path, GOOD), split="train")
    assert [s.id for s in train.subjects] == ["s1", "s2"]


@pytest.mark.parametrize("rows, match", [
    (GOOD + ["s5,heart,,p5,train,1,0"], "subject 's5'.*has no available organ"),
    (GOOD + ["s5,lung,s5.png,p5,train,1,0"], "subject 's5'.*organ 'lung' is not in the model's organ list"),
    (GOOD + ["s1,brain,s1b.png,p1,test,1,0"], "subject 's1'.*split across train and test"),
    (GOOD + ["s5,heart,s5h.png,p1,test,1,0"], "patient 'p1'.*split across test \\(s5\\) and train \\(s1\\)"),
    (GOOD + ["s1,brain,s1b.png,p1,train,0,0"], "subject 's1'.*labels .* differ"),
    (GOOD + ["s1,heart,s1x.png,p1,train,1,0"], "subject 's1'.*organ 'heart' appears twice"),
    (GOOD + ["s5,heart,gone.png,p5,train,1,0"], "subject 's5'.*does not exist"),
    (GOOD + ["s5,heart,s5h.png,p5,train,2,0"], "subject 's5'.*must be 0 or 1"),
])
def test_bad_subjects_are_named_errors(tmp_path, rows, match):
    organs = ["heart", "liver", "brain"]
    with pytest.raises(DataError, match=match):
        read_subject_manifest(_manifest(tmp_path, rows), organs=organs)


def test_a_label_column_with_one_class_is_named(tmp_path):
    rows = [r.rsplit(",", 1)[0] + ",1" for r in GOOD]
    with pytest.raises(DataError, match="label column 'stroke'.*one class"):
        read_subject_manifest(_manifest(tmp_path, rows))


def test_skip_mode_drops_and_counts(tmp_path):
    rows = GOOD + ["s5,heart,,p5,train,1,0", "s6,lung,s6.png,p6,train,0,1", "s6,heart,s6h.png,p6,train,0,1",
                   "s1,brain,s1b.png,p1,test,1,0"]
    log = tmp_path / "skips"
    m = read_subject_manifest(_manifest(tmp_path, rows), organs=["heart", "liver", "brain"], on_error="skip",
                              skip_log_dir=log)
    assert [s.id for s in m.subjects] == ["s2", "s3", "s4", "s6"]  # s1 split across, s5 empty
    assert list(m.subjects[3].organs) == ["heart"]  # s6 keeps heart, its lung row is skipped
    assert len(m.skips) == 3 and count_skips(log) == 3


def test_missing_columns_are_named(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("subject,path\ns1,a.png\n")
    with pytest.raises(DataError, match="lacks column.*organ"):
        read_subject_manifest(path)


def test_an_unreadable_organ_image_is_named_or_skipped(tmp_path):
    path = _manifest(tmp_path, GOOD)
    (tmp_path / "s1l.png").write_bytes(b"not a png")
    m = read_subject_manifest(path)
    with pytest.raises(DataError, match="subject 's1', organ liver.*s1l.png"):
        SubjectImages(m, 16)[0]
    log = tmp_path / "skips"
    item = SubjectImages(m, 16, on_error="skip", skip_log_dir=log)[0]
    assert item["available"].tolist() == [True, False, False] and count_skips(log) == 1
    (tmp_path / "s2l.png").write_bytes(b"broken")
    with pytest.raises(DataError, match="subject 's2': none of its organs"):
        SubjectImages(m, 16, on_error="skip", skip_log_dir=log)[1]


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_an_unknown_split_is_an_error_naming_the_line_as_in_image_manifests(tmp_path, on_error):
    rows = GOOD[:3] + ["s3,heart,s3h.png,p3,trian,1,1"] + GOOD[4:]
    with pytest.raises(DataError, match=r"subjects.csv line 5: unknown split 'trian' \(did you mean 'train'\?\); a "
                                        r"split is one of train, val, test"):
        read_subject_manifest(_manifest(tmp_path, rows), split="train", on_error=on_error)


def test_split_names_are_read_in_any_case(tmp_path):
    rows = [r.replace(",train,", ",Train,").replace(",test,", ",TEST,") for r in GOOD]
    assert [s.id for s in read_subject_manifest(_manifest(tmp_path, rows), split="train").subjects] == ["s1", "s2"]


def test_a_utf8_byte_order_mark_is_tolerated(tmp_path):
    path = _manifest(tmp_path, GOOD)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # as spreadsheet exports write it
    m = read_subject_manifest(path)
    assert [s.id for s in m.subjects] == ["s1", "s2", "s3", "s4"] and m.label_names == ["diabetes", "stroke"]


AGED = "subject,organ,path,split,disease,age\n"
AGED_ROWS = ["s1,heart,s1h.png,train,1,41", "s1,liver,s1l.png,train,1,41", "s2,liver,s2l.png,train,0,57",
             "s3,heart,s3h.png,test,1,63", "s4,heart,s4h.png,test,0,38"]


def test_label_columns_name_the_labels_and_other_columns_are_ignored(tmp_path):
    path = _manifest(tmp_path, AGED_ROWS, header=AGED)
    m = read_subject_manifest(path, label_columns=["disease"])
    assert m.label_names == ["disease"] and m.label_matrix()[:, 0].tolist() == [1, 0, 1, 0]
    # without label_columns every extra column is a label, so the age column is refused, with the way out
    with pytest.raises(DataError, match=r"subjects.csv:2 subject 's1'.*label column 'age' is '41'.*label_columns"):
        read_subject_manifest(path)
    with pytest.raises(DataError, match="label_columns names weight, not column"):
        read_subject_manifest(path, label_columns=["disease", "weight"])


@pytest.mark.parametrize("cell, match", [("", r"subjects.csv:4 subject 's2'.*label column 'disease' is empty"),
                                         ("yes", r"subjects.csv:4 subject 's2'.*label column 'disease' is 'yes'"),
                                         ("2", r"subjects.csv:4 subject 's2'.*must be 0 or 1")])
def test_empty_and_non_binary_label_cells_are_errors_naming_line_and_column(tmp_path, cell, match):
    rows = list(AGED_ROWS)
    rows[2] = f"s2,liver,s2l.png,train,{cell},57"
    with pytest.raises(DataError, match=match):
        read_subject_manifest(_manifest(tmp_path, rows, header=AGED), label_columns=["disease"])
    # an empty cell in an ignored column is fine
    rows = list(AGED_ROWS)
    rows[2] = "s2,liver,s2l.png,train,0,"
    assert len(read_subject_manifest(_manifest(tmp_path, rows, header=AGED), label_columns=["disease"]).subjects) == 4


def test_the_split_column_is_optional_for_pretraining(tmp_path):
    rows = [",".join(r.split(",")[:3] + r.split(",")[4:5]) for r in AGED_ROWS]
    path = _manifest(tmp_path, rows, header="subject,organ,path,disease\n")
    m = read_subject_manifest(path, split="train", split_column_optional=True)
    assert [s.id for s in m.subjects] == ["s1", "s2", "s3", "s4"] and all(s.split is None for s in m.subjects)
    with pytest.raises(DataError, match="no split column"):
        read_subject_manifest(path, split="test")
