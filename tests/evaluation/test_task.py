"""Task configs: YAML < overrides, typed values, unknown keys listing the valid ones, the shipped task files."""
from __future__ import annotations

from pathlib import Path

import pytest

from organfm.config import ConfigError
from organfm.evaluation.task import PROTOCOLS, load_task, valid_task_keys

TASKS = Path(__file__).resolve().parents[2] / "configs" / "tasks"


@pytest.mark.parametrize("file", sorted(TASKS.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_task_files_load(file):
    task = load_task(file)
    assert task.name == file.stem and set(task.protocols) <= set(PROTOCOLS)
    assert task.data.source and not Path(task.data.source).is_absolute()


def test_overrides_win_and_are_typed(tmp_path):
    task = load_task(TASKS / "pneumoniamnist.yaml",
                     ["data.root=/somewhere", "protocols=[knn,linear]", "knn.k=[5,50]", "linear.epochs=7",
                      "allow_leakage=true", "out_dir=/tmp/x", "finetune.layer_decay=0.75"])
    assert task.data.root == "/somewhere" and task.protocols == ["knn", "linear"] and task.knn.k == [5, 50]
    assert task.linear.epochs == 7 and task.allow_leakage is True and task.finetune.layer_decay == 0.75
    assert task.data_path(task.data.source) == "/somewhere/pneumoniamnist-unofficial/pneumoniamnist.npz"
    assert task.data.image_size == 32  # from the file


def test_unknown_keys_and_bad_values_are_errors():
    with pytest.raises(ConfigError, match=r"unknown task key 'knn\.kk'.*valid keys: .*knn\.k"):
        load_task(None, ["data.source=x", "knn.kk=3"])
    with pytest.raises(ConfigError, match="unknown task key 'bogus'"):
        load_task(None, ["data.source=x", "bogus=1"])
    with pytest.raises(ConfigError, match="protocols: unknown"):
        load_task(None, ["data.source=x", "protocols=[knn,zeroshot]"])
    with pytest.raises(ConfigError, match="expected an integer"):
        load_task(None, ["data.source=x", "seed=1.5"])
    with pytest.raises(ConfigError, match="data.source is empty"):
        load_task(None, [])
    assert "data.root" in valid_task_keys() and "protocols" in valid_task_keys()


def test_task_file_with_unknown_key_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  source: x\n  colour: red\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown task key 'data\.colour'"):
        load_task(bad)
