"""Leakage guard: shared patients and exact duplicates between train/val and test are refused unless allowed."""
from __future__ import annotations

import pytest

from organfm.data.records import Record
from organfm.evaluation.leakage import LeakageError, check_leakage


def rec(key: str, digest: str, patient: str | None = None) -> Record:
    return Record(path=f"/data/{key}.png", reader="image", key=key, content_hash=digest, patient_id=patient)


def test_clean_splits_pass():
    splits = {"train": [rec("a", "h1", "p1")], "val": [rec("b", "h2", "p2")], "test": [rec("c", "h3", "p3")]}
    assert check_leakage(splits) == {"train-test": {"shared_patients": 0, "duplicate_images": 0},
                                     "val-test": {"shared_patients": 0, "duplicate_images": 0}}


def test_shared_patient_raises_with_count_and_example_but_not_the_id():
    splits = {"train": [rec("a", "h1", "SECRET-7"), rec("b", "h2", "p2")],
              "test": [rec("c", "h3", "SECRET-7"), rec("d", "h4", "p2")]}
    with pytest.raises(LeakageError, match=r"2 patient\(s\) appear in both train and test") as info:
        check_leakage(splits)
    assert "/data/a.png" in str(info.value) and "allow_leakage=true" in str(info.value)
    assert "SECRET-7" not in str(info.value)


def test_exact_duplicate_image_raises():
    splits = {"train": [rec("a", "same")], "val": [], "test": [rec("z", "same")]}
    with pytest.raises(ValueError, match=r"1 test image\(s\) are exact duplicates of train images.*z.png.*a.png"):
        check_leakage(splits)


def test_val_test_overlap_is_leakage_too():
    with pytest.raises(LeakageError, match="val and test"):
        check_leakage({"train": [], "val": [rec("a", "h1", "p")], "test": [rec("b", "h2", "p")]})


def test_override_reports_instead_of_raising():
    splits = {"train": [rec("a", "same", "p")], "test": [rec("z", "same", "p")]}
    report = check_leakage(splits, allow=True)
    assert report == {"train-test": {"shared_patients": 1, "duplicate_images": 1}}


def test_real_pneumonia_duplicates_are_caught_when_dedup_is_off(data_root):
    from organfm.data import build_dataset

    npz = data_root / "pneumoniamnist-unofficial" / "pneumoniamnist.npz"
    if not npz.is_file():
        pytest.skip(f"{npz} not found")
    records = build_dataset(npz, split=None, dedup=False).records
    by_split = {name: [r for r in records if r.split == name] for name in ("train", "val", "test")}
    # the copy's official test split is clean; 8 val images repeat train images byte for byte
    assert check_leakage(by_split) == {"train-test": {"shared_patients": 0, "duplicate_images": 0},
                                       "val-test": {"shared_patients": 0, "duplicate_images": 0}}
    with pytest.raises(LeakageError, match=r"8 val image\(s\) are exact duplicates of train images"):
        check_leakage(by_split, test="val", fit=("train",))
