"""Shipped recipes and task files by name, from any folder; task data roots from ORGANFM_DATA, not the cwd."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from organfm.config import ConfigError, load_config
from organfm.evaluation.task import load_task
from organfm.presets import config_folder, default_data_root, list_presets, resolve_config_file, resolve_task_file

REPO = Path(__file__).resolve().parents[1]


def test_the_shipped_folder_is_the_repository_configs_one_copy():
    assert config_folder() == REPO / "configs"
    assert {"coda", "small/coda", "triad"} <= set(list_presets()) and "mednist" in list_presets("task")
    assert not any(name.startswith("tasks/") for name in list_presets())


@pytest.mark.parametrize("name", ["coda", "coda.yaml", "configs/coda.yaml"])
def test_config_names_resolve_from_another_folder(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config_file(name) == REPO / "configs" / "coda.yaml"
    assert load_config(None, name).views.num_local_views == 12  # the recipe's value, not the default's


def test_a_nested_name_and_a_local_file_win(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config_file("small/coda") == REPO / "configs" / "small" / "coda.yaml"
    (tmp_path / "coda.yaml").write_text("trainer:\n  batch_size: 3\n")
    assert load_config(None, "coda.yaml").trainer.batch_size == 3  # an existing file is that file


def test_an_unknown_name_lists_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"config file nope does not exist.*small/coda"):
        resolve_config_file("nope")
    with pytest.raises(ConfigError, match=r"--task takes a file or one of: .*mednist"):
        resolve_task_file("nope")


def test_task_names_and_data_root_from_organfm_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_task_file("mednist") == REPO / "configs" / "tasks" / "mednist.yaml"
    monkeypatch.setenv("ORGANFM_DATA", str(tmp_path / "data"))
    task = load_task("mednist")
    assert task.data.root is None
    assert task.data_path(task.data.source) == str(tmp_path / "data" / "mednist" / "MedNIST.tar.gz")
    monkeypatch.delenv("ORGANFM_DATA")
    assert default_data_root() == str((REPO.parent / "shared" / "data").resolve())  # beside the checkout


def test_cli_config_show_prints_the_resolved_config(tmp_path):
    organfm = str(Path(sys.executable).parent / "organfm")
    done = subprocess.run([organfm, "config", "show", "--config", "coda", "trainer.max_steps=7"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    import yaml

    shown = yaml.safe_load(done.stdout)
    assert shown["method"]["name"] == "coda" and shown["trainer"]["max_steps"] == 7
    assert shown["views"]["num_local_views"] == 12
    typo = subprocess.run([organfm, "config", "show", "trainer.max_step=5"], cwd=tmp_path, capture_output=True,
                          text=True)
    assert typo.returncode == 2 and "did you mean trainer.max_steps?" in typo.stderr
