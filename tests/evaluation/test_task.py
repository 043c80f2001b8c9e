"""Task configs: YAML < overrides, typed values, unknown keys listing the valid ones, the shipped task files."""
from __future__ import annotations

from pathlib import Path

import pytest

from organfm.config import DataConfig
from organfm.configtree import ConfigError
from organfm.evaluation.protocol import list_protocols
from organfm.configtree import valid_keys
from organfm.evaluation.task import TaskConfig, load_task

TASKS = Path(__file__).resolve().parents[2] / "configs" / "tasks"


@pytest.mark.parametrize("file", sorted(TASKS.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_task_files_load(file):
    task = load_task(file)
    assert task.name == file.stem and set(task.protocols) <= set(list_protocols())
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
    with pytest.raises(ConfigError, match=r"unknown task key 'knn\.kk'; did you mean knn\.k\b"):
        load_task(None, ["data.source=x", "knn.kk=3"])
    with pytest.raises(ConfigError, match="unknown task key 'bogus'"):
        load_task(None, ["data.source=x", "bogus=1"])
    with pytest.raises(ConfigError, match=r"protocols: unknown \['bogus'\]; valid: .*knn.*segmentation"):
        load_task(None, ["data.source=x", "protocols=[knn,bogus]"])
    with pytest.raises(ConfigError, match="clusters.split must be one of train, val, test, all"):
        load_task(None, ["data.source=x", "clusters.split=everything"])
    with pytest.raises(ConfigError, match="data.label must be one of organ, label"):
        load_task(None, ["data.source=x", "data.label=folder"])
    with pytest.raises(ConfigError, match="data.split='train': a task reads every split"):
        load_task(None, ["data.source=x", "data.split=train"])
    with pytest.raises(ConfigError, match="expected an integer"):
        load_task(None, ["data.source=x", "seed=1.5"])
    with pytest.raises(ConfigError, match="data.source is empty"):
        load_task(None, [])
    assert load_task(None, ["protocols=[segmentation]"]).protocols == ["segmentation"]  # reads its own volume
    assert {"data.root", "protocols"} <= set(valid_keys(TaskConfig()))


def test_task_file_with_unknown_key_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  source: x\n  colour: red\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown task key 'data\.colour'"):
        load_task(bad)


def test_data_section_extends_pretraining_data_config():
    """The task's data keys are pretraining's DataConfig keys plus the task's own; ``data=`` is the same shorthand."""
    task = load_task(None, ["data=x.npz", "data.on_error=skip", "data.window=[40,400]"])
    assert isinstance(task.data, DataConfig)
    assert (task.data.source, task.data.on_error, task.data.window) == ("x.npz", "skip", [40.0, 400.0])
    keys = set(valid_keys(TaskConfig()))
    assert {f"data.{k}" for k in DataConfig.__dataclass_fields__} <= keys


def test_every_registered_protocol_with_a_config_has_a_section():
    from organfm.evaluation.protocol import get_protocol

    task = TaskConfig()
    for name in list_protocols():
        config = get_protocol(name).config
        if config is not None:
            assert isinstance(getattr(task, name), config)


def test_the_report_notes_say_the_settings_used_and_what_overrides_changed():
    from organfm.evaluation.task import changed_settings, settings_notes

    file_task = load_task("adrenalmnist3d")
    task = load_task("adrenalmnist3d", ["finetune3d.seeds=3", "finetune3d.max_train=null", "data.image_size=64"])
    changed = changed_settings(file_task, task)
    assert changed == {"finetune3d.seeds": (1, 3), "finetune3d.max_train": (200, None), "data.image_size": (32, 64)}
    note, settings, overridden = settings_notes(task, changed)
    assert note == file_task.note  # the task's prose, as written
    assert "data.image_size 64" in settings and "seeds 3" in settings and "max_train none" in settings
    assert "finetune3d.seeds=3 (task file: 1)" in overridden and "finetune3d.max_train=none (task file: 200)" in overridden
    assert settings_notes(file_task, changed_settings(file_task, file_task))[1:] == \
        [settings_notes(file_task)[1]]  # no override: no override note
