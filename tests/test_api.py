"""The Python API (``organfm.pretrain``, ``organfm.evaluate``, ``organfm.embed``): dict overrides read as the command
line writes them, refusals before any work, and an evaluated export keeping its results."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import organfm
from organfm.api import _items
from organfm.config import ConfigError, dump_config, new_config


def test_dict_overrides_are_written_as_yaml_values_on_the_command_line():
    assert _items({"optim.lr": 0.5, "knn.k": [10, 20], "trainer.progress": False, "linear.epochs": 3,
                   "data": "images/x y", "fewshot.shots": None, "views.gamma": [0.5, [1, 2]]}) == [
        "optim.lr=0.5", "knn.k=[10, 20]", "trainer.progress=false", "linear.epochs=3", "data=images/x y",
        "fewshot.shots=null", "views.gamma=[0.5, [1, 2]]"]
    assert _items(["a=1", "b=[2]"]) == ["a=1", "b=[2]"] and _items(None) == []


def _run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config(new_config("coda")))
    return run


def test_a_resume_keeps_its_recipe_and_its_method(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot resume .*empty: it has no config.yaml"):
        organfm.pretrain(resume=tmp_path / "empty")
    run = _run_folder(tmp_path)
    with pytest.raises(ConfigError, match="only trainer.\\* keys may change, not optim.lr, data$"):
        organfm.pretrain(None, {"optim.lr": 0.1, "trainer.max_steps": 5, "data": "x"}, resume=run)
    with pytest.raises(ConfigError, match=r"run is a coda run, not dino"):
        organfm.pretrain(None, {"trainer.max_steps": 5}, method="dino", resume=run)


def test_embed_refuses_bad_formats_and_other_sections_before_writing_anything(tmp_path):
    out = tmp_path / "feats"
    with pytest.raises(ValueError, match="unknown format\\(s\\) xlsx; choose from npy, csv, parquet"):
        organfm.embed("random:test_resnet", "synthetic", out, formats=("npy", "xlsx"))
    with pytest.raises(ConfigError, match="organfm embed takes data.\\* keys only, not trainer.seed"):
        organfm.embed("random:test_resnet", None, out, {"data": "synthetic", "trainer.seed": 1})
    assert not out.exists()


def _task(tmp_path: Path) -> Path:
    """A manifest task of 12 grey squares (two classes, 8 train and 4 test), kNN only."""
    from PIL import Image

    (tmp_path / "data" / "imgs").mkdir(parents=True)
    lines = ["path,organ,split"]
    for i in range(12):
        Image.fromarray(np.full((8, 8), 20 * i + 5 * (i % 2), np.uint8)).save(tmp_path / "data" / "imgs" / f"{i}.png")
        lines.append(f"imgs/{i}.png,{('liver', 'lung')[i % 2]},{'train' if i < 8 else 'test'}")
    (tmp_path / "data" / "m.csv").write_text("\n".join(lines) + "\n")
    task = tmp_path / "task.yaml"
    task.write_text(f"name: tiny\nout_dir: {tmp_path / 'out'}\ndata:\n  root: {tmp_path / 'data'}\n  source: m.csv\n"
                    "  image_size: 32\n  intensity: dtype\nprotocols: [knn]\nknn:\n  k: [5]\n"
                    "report:\n  scatter_points: 0\n")
    return task


def test_evaluate_takes_models_and_overrides_as_dicts_and_records_on_each_export(tmp_path):
    from tests.evaluation.protocols.test_zeroshot import write_export

    export = write_export(tmp_path / "exp" / "export")
    results = organfm.evaluate({"mine": tmp_path / "exp", "scratch": "random:test_resnet"}, _task(tmp_path),
                               {"knn.k": [1, 3]})
    assert sorted((r["model"], r["setting"]) for r in results["rows"]) == [
        ("mine", "k=1"), ("mine", "k=3"), ("scratch", "k=1"), ("scratch", "k=3")]
    assert "knn.k=[1, 3] (task file: [5])" in results["notes"][-1]  # the report says what the dict changed
    written = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert [(r["model"], r["setting"], r["metrics"]["accuracy"]["mean"]) for r in written] == [
        (r["model"], r["setting"], r["metrics"]["accuracy"]["mean"]) for r in results["rows"]]
    recorded = json.loads((export / "evaluation.json").read_text())
    assert recorded["tiny"]["model"] == "mine"
    assert [r["setting"] for r in recorded["tiny"]["rows"]] == ["k=1", "k=3"]
