import json

import numpy as np
import pytest
from PIL import Image

from organfm.data import DataError, build_dataset
from organfm.data.manifest import load_manifest


@pytest.fixture
def images(tmp_path, make_png, gradient):
    """Four distinct PNGs under tmp_path/img, one outside the manifest folder."""
    paths = [make_png(tmp_path / "img" / f"{k}.png", gradient(offset=k)) for k in range(3)]
    paths.append(make_png(tmp_path.parent / f"{tmp_path.name}-outside.png", gradient(offset=9)))
    return paths


def rows(images):
    return [
        {"path": "img/0.png", "organ": "liver", "label": "1", "patient_id": "p1", "split": "train", "scanner": "A"},
        {"path": "img/1.png", "organ": "liver", "label": "0", "patient_id": "p2", "split": "test", "scanner": "B"},
        {"path": "img/2.png", "organ": "lung", "label": "", "patient_id": "p3", "split": "", "scanner": "C"},
        {"path": str(images[3]), "organ": "lung", "label": "2", "patient_id": "p4", "split": "val", "scanner": "D"},
    ]


def write_csv(path, entries):
    keys = list(entries[0])
    lines = [",".join(keys)] + [",".join(str(e[k]) for k in keys) for e in entries]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_jsonl(path, entries):
    path.write_text("\n".join(json.dumps({k: v for k, v in e.items() if v != ""}) for e in entries) + "\n")
    return path


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_manifest_columns(tmp_path, images, fmt):
    entries = rows(images)
    if fmt == "jsonl":
        for e in entries:
            e["label"] = int(e["label"]) if e["label"] else ""
    path = (write_csv if fmt == "csv" else write_jsonl)(tmp_path / f"m.{fmt}", entries)
    ds = build_dataset(str(path), split=None)
    assert ds.organs == ["liver", "lung"]
    assert [r.organ for r in ds.records] == ["liver", "liver", "lung", "lung"]
    assert ds.labels == [1, 0, None, 2]  # CSV integer literals become ints
    assert [r.split for r in ds.records][:2] == ["train", "test"] and ds.records[3].split == "val"
    assert ds.records[2].split in ("train", "val", "test")  # assigned by hashing
    assert [r.meta["scanner"] for r in ds.records] == ["A", "B", "C", "D"]  # extra columns kept
    assert ds.records[3].path == str(images[3])  # absolute paths are used as they are
    np.testing.assert_array_equal(ds.read_array(1)[0][0], np.asarray(Image.open(images[1])))
    train = build_dataset(str(path), split="test")
    assert [r.key for r in train.records] == ["img/1.png"]


def test_missing_file_fails_naming_line_and_path(tmp_path, images):
    entries = rows(images)
    entries[2]["path"] = "img/missing.png"
    path = write_csv(tmp_path / "m.csv", entries)
    with pytest.raises(DataError, match=r"m\.csv line 4: .*img/missing\.png does not exist"):
        build_dataset(str(path))
    ds = build_dataset(str(path), split=None, on_error="skip")
    assert len(ds) == 3 and ds.summary()["skipped_at_index"] == 1


def test_manifest_without_path_column(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("file,organ\na.png,liver\n")
    with pytest.raises(DataError, match=r"m\.csv: manifest has no 'path' column"):
        load_manifest(path)


def test_bad_jsonl_line_is_named(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"path": "a.png"}\n{not json}\n')
    with pytest.raises(DataError, match=r"m\.jsonl line 2: invalid JSON"):
        load_manifest(path)


def test_organ_from_folder_and_file_for_manifest(tmp_path, images):
    path = write_csv(tmp_path / "m.csv", rows(images))
    assert build_dataset(str(path), split=None, organ_from="folder").organs == ["img", tmp_path.parent.name]
    assert build_dataset(str(path), split=None, organ_from="file").organs == ["0", "1", "2", f"{tmp_path.name}-outside"]


def test_an_unknown_split_name_is_an_error_naming_the_line(tmp_path, make_png, gradient):
    for k in range(3):
        make_png(tmp_path / f"{k}.png", gradient(offset=k))
    (tmp_path / "m.csv").write_text("path,organ,split\n0.png,liver,train\n1.png,liver,trian\n2.png,lung,TEST\n")
    with pytest.raises(DataError, match=r"m\.csv line 3: unknown split 'trian' \(did you mean 'train'\?\); a split "
                                        r"is one of train, val, test"):
        build_dataset(str(tmp_path / "m.csv"))
    (tmp_path / "m.jsonl").write_text('{"path": "0.png", "split": "holdout"}\n')
    with pytest.raises(DataError, match=r"m\.jsonl line 1: unknown split 'holdout'; a split is one of"):
        build_dataset(str(tmp_path / "m.jsonl"))
    (tmp_path / "ok.csv").write_text("path,organ,split\n0.png,liver,Train\n1.png,liver,\n2.png,lung,TEST\n")
    assert [r.split for r in build_dataset(str(tmp_path / "ok.csv"), split=None).records][::2] == ["train", "test"]


def test_a_manifest_without_organs_warns_that_there_are_zero_organs(tmp_path, make_png, gradient):
    for k in range(4):
        make_png(tmp_path / f"{k}.png", gradient(offset=k))
    (tmp_path / "m.csv").write_text("path,label\n" + "".join(f"{k}.png,{k % 2}\n" for k in range(4)))
    with pytest.warns(UserWarning, match=r"m\.csv: 0 organs: the manifest has no 'organ' column"):
        ds = build_dataset(str(tmp_path / "m.csv"), split_fractions=(1, 0, 0))
    assert ds.organs == []


def test_duplicate_rows_with_conflicting_organs_warn(tmp_path, make_png, gradient):
    make_png(tmp_path / "a.png", gradient(offset=1))
    make_png(tmp_path / "b.png", gradient(offset=2))
    (tmp_path / "m.csv").write_text("path,organ\na.png,liver\nb.png,lung\na.png,spleen\n")
    with pytest.warns(UserWarning, match=r"1 duplicate images carry conflicting organ labels \(e\.g\. a\.png is "
                                         r"'liver', a\.png is 'spleen'\)"):
        build_dataset(str(tmp_path / "m.csv"), split_fractions=(1, 0, 0))
