"""A task's labelled data: splits read once as tensors, capped by a seeded stratified subsample, labels from organs
or from the records (with or without class names), an identity that follows content and settings, paths resolved
against ``data.root``, and what a report may show of a record."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from organfm.data.records import Record
from organfm.evaluation.task import load_task
from organfm.evaluation.task_data import TaskDataConfig, dataset_kwargs, load_task_data, public_metadata


def _manifest(root: Path, rows: list[tuple[str, str, str]], *, size: int = 8) -> None:
    """``root/m.csv`` of (organ, label, split) rows, image i a constant ``10 * i`` grey square."""
    from PIL import Image

    (root / "imgs").mkdir(parents=True, exist_ok=True)
    lines = ["path,organ,label,split"]
    for i, (organ, label, split) in enumerate(rows):
        Image.fromarray(np.full((size, size), 10 * i, np.uint8)).save(root / "imgs" / f"{i}.png")
        lines.append(f"imgs/{i}.png,{organ},{label},{split}")
    (root / "m.csv").write_text("\n".join(lines) + "\n")


ROWS = [("liver", "2", "train"), ("lung", "0", "train"), ("liver", "2", "train"), ("lung", "0", "train"),
        ("liver", "1", "train"), ("lung", "1", "train"), ("liver", "0", "test"), ("lung", "2", "test")]


def _task(root: Path, *overrides: str):
    return load_task(None, [f"data.root={root}", "data.source=m.csv", "data.image_size=8", "data.dedup=false",
                            "data.intensity=dtype", *overrides])


def test_organ_labels_the_splits_in_the_order_asked_and_the_summary(tmp_path):
    _manifest(tmp_path, ROWS)
    data = load_task_data(_task(tmp_path), {"test": None, "train": None})
    assert list(data.splits) == ["test", "train"] and data.class_names == ["liver", "lung"]
    test = data.splits["test"]
    assert test.labels.tolist() == [0, 1] and test.labels.dtype == torch.int64 and len(test) == 2
    assert test.images.shape == (2, 1, 8, 8) and test.name == "test"
    # images in [0, 1] (data.intensity=dtype: uint8 / 255): image 6 is grey 60
    torch.testing.assert_close(test.images[0], torch.full((1, 8, 8), 60 / 255))
    assert [r.key for r in test.records] == ["imgs/6.png", "imgs/7.png"]
    assert data.summary["splits"] == {"test": {"n": 2, "per_class": [1, 1]}, "train": {"n": 6, "per_class": [3, 3]}}
    all_ = load_task_data(_task(tmp_path), {"all": None}).splits["all"]
    assert len(all_) == 8


def test_a_cap_keeps_a_seeded_stratified_subsample(tmp_path):
    _manifest(tmp_path, ROWS)
    capped = load_task_data(_task(tmp_path), {"train": 4}).splits["train"]
    assert np.bincount(capped.labels.numpy()).tolist() == [2, 2]  # 2 of each organ's 3
    again = load_task_data(_task(tmp_path), {"train": 4}).splits["train"]
    assert [r.key for r in again.records] == [r.key for r in capped.records]
    other = [load_task_data(_task(tmp_path, f"seed={s}"), {"train": 4}).splits["train"] for s in range(1, 6)]
    assert any([r.key for r in o.records] != [r.key for r in capped.records] for o in other)


def test_record_labels_with_and_without_class_names(tmp_path):
    _manifest(tmp_path, ROWS)
    data = load_task_data(_task(tmp_path, "data.label=label"), {"train": None})
    assert data.class_names == ["0", "1", "2"] and data.splits["train"].labels.tolist() == [2, 0, 2, 0, 1, 1]
    named = load_task_data(_task(tmp_path, "data.label=label", "data.class_names=[normal,mild,severe]"),
                           {"test": None})
    assert named.class_names == ["normal", "mild", "severe"] and named.splits["test"].labels.tolist() == [0, 2]
    with pytest.raises(ValueError, match=r"data.class_names has 2 names for label ids 0..2"):
        load_task_data(_task(tmp_path, "data.label=label", "data.class_names=[a,b]"), {"test": None})


def test_text_labels_are_named_in_sorted_order_or_checked_against_the_class_names(tmp_path):
    _manifest(tmp_path, [("x", "mild", "train"), ("x", "normal", "train"), ("x", "mild", "test")])
    data = load_task_data(_task(tmp_path, "data.label=label"), {"train": None})
    assert data.class_names == ["mild", "normal"] and data.splits["train"].labels.tolist() == [0, 1]
    with pytest.raises(ValueError, match="labels not in data.class_names: normal"):
        load_task_data(_task(tmp_path, "data.label=label", "data.class_names=[mild,severe]"), {"train": None})


def test_missing_labels_sources_and_splits_are_errors_naming_them(tmp_path):
    _manifest(tmp_path, [("liver", "", "train"), ("", "1", "test")])
    with pytest.raises(ValueError, match="1 items have no label"):
        load_task_data(_task(tmp_path, "data.label=label"), {"train": None})
    with pytest.raises(ValueError, match="1 items have no organ name; use data.label=label"):
        load_task_data(_task(tmp_path), {"train": None})
    _manifest(tmp_path / "b", [("liver", "0", "train"), ("lung", "1", "train")])
    with pytest.raises(ValueError, match=r"the 'test' split is empty"):
        load_task_data(_task(tmp_path / "b"), {"test": None})
    with pytest.raises(FileNotFoundError, match=r"data source 'm.csv' not found .*pass data.root="):
        load_task_data(_task(tmp_path / "nowhere"), {"test": None})


def test_the_identity_follows_the_items_and_the_settings(tmp_path):
    _manifest(tmp_path / "a", ROWS)
    ident = lambda root, *o: load_task_data(_task(root, *o), {"test": None}).splits["test"].identity  # noqa: E731
    base = ident(tmp_path / "a")
    assert ident(tmp_path / "a") == base and len(base) == 32
    assert ident(tmp_path / "a", "data.image_size=16") != base  # another input size: other features
    assert ident(tmp_path / "a", "data.intensity=minmax") != base
    _manifest(tmp_path / "b", ROWS[:6] + [("liver", "0", "test"), ("lung", "2", "test")], size=8)
    (tmp_path / "b" / "imgs" / "7.png").write_bytes((tmp_path / "a" / "imgs" / "0.png").read_bytes())
    assert ident(tmp_path / "b") != base  # the same keys, other bytes


def test_dataset_kwargs_resolve_paths_against_the_root_and_drop_task_only_keys(tmp_path):
    task = _task(tmp_path, "data.label_map=seg/labels.nii.gz", "data.window=[40,400]", "data.max_train=5")
    kwargs = dataset_kwargs(task)
    assert kwargs["label_map"] == str(tmp_path / "seg" / "labels.nii.gz") and kwargs["class_map"] is None
    assert kwargs["window"] == (40.0, 400.0) and kwargs["split_fractions"] == (0.8, 0.1, 0.1)
    assert not {"root", "source", "split", "label", "class_names", "max_train", "label_columns"} & set(kwargs)
    assert not any(k.startswith("synthetic_") for k in kwargs) and kwargs["image_size"] == 8
    config = TaskDataConfig(root=str(tmp_path))
    assert config.resolve("/abs/x.npz") == "/abs/x.npz" and config.resolve(None) is None
    assert config.resolve("rel/x.npz") == str(tmp_path / "rel" / "x.npz")


def test_public_metadata_keeps_plain_non_identifying_columns():
    record = Record(path="/pacs/DOE/1.dcm", reader="dicom", key="DOE/1.dcm", organ=None,
                    meta={"site": "A", "slice_mm": 2.5, "contrast": True, "PatientName": "DOE", "AccessionNo": "9",
                          "series_uid": "1.2", "tags": ["x"], "birth_year": 1950})
    assert public_metadata(record, 1, ["a", "b"], "val") == {"class": "b", "organ": "", "split": "val", "site": "A",
                                                             "slice_mm": 2.5, "contrast": True}
