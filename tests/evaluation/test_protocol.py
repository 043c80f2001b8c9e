"""The protocol registry: one decorator, one lookup, declared needs, and the suite dispatching through it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import organfm.evaluation.protocol as protocol_module
from organfm.evaluation.protocol import (ModelRun, get_protocol, list_protocols, make_row,
                                         register_protocol)


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made by a test vanish after it (the built-ins are loaded first)."""
    registry = protocol_module.PROTOCOLS
    registry.names()
    monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    return registry


def test_builtins_declare_their_needs():
    assert list_protocols() == ["clusters", "fewshot", "finetune", "finetune3d", "knn", "linear", "retrieval",
                                "segmentation", "segmentation3d", "subjects", "zeroshot"]
    knn, seg, ft = get_protocol("knn"), get_protocol("segmentation"), get_protocol("finetune")
    assert (knn.inputs, knn.splits, knn.leakage_guard) == ("features", ("train", "test"), True)
    assert (ft.inputs, ft.splits) == ("images", ("train", "val", "test"))
    assert (seg.inputs, seg.splits, seg.leakage_guard) == ("own", (), False)
    for name in ("zeroshot", "retrieval"):  # test split only: nothing trains, so no leakage to guard
        text = get_protocol(name)
        assert (text.inputs, text.splits, text.leakage_guard) == ("features", ("test",), False)
    with pytest.raises(ValueError, match=r"unknown evaluation protocol 'bogus'; valid: clusters, fewshot, .*"):
        get_protocol("bogus")


def test_limits_follow_the_task_caps():
    from organfm.evaluation.task import load_task

    task = load_task(None, ["data.source=x", "data.max_train=7", "data.max_test=9", "clusters.split=all",
                            "clusters.max_points=11"])
    assert get_protocol("knn").limits(task) == {"train": 7, "test": 9}
    assert get_protocol("linear").limits(task) == {"train": 7, "val": None, "test": 9}
    assert get_protocol("clusters").limits(task) == {"all": 11}
    assert get_protocol("segmentation").limits(task) == {}


def test_registering_twice_or_bad_inputs_is_an_error(scratch_registry):
    with pytest.raises(ValueError, match="registered twice"):
        register_protocol("knn")(lambda run, data: [])
    with pytest.raises(ValueError, match="inputs must be features, images or own"):
        register_protocol("odd", inputs="pixels")


def test_a_new_protocol_is_one_registered_function(scratch_registry, tmp_path: Path):
    """Registered here, run by ``evaluate_models`` by name, with no other change: the suite names no protocol."""
    from organfm.evaluation import evaluate_models, load_task

    calls: list[tuple[str, object]] = []

    @register_protocol("constant", inputs="own", splits=())
    def constant(run: ModelRun, data: object, settings: object) -> list[dict]:
        calls.append((run.name, type(data).__name__, settings))
        return [make_row(run.name, "constant", "one", {"accuracy": [0.25, 0.75]})]

    task = load_task(None, ["protocols=[constant]", f"out_dir={tmp_path}", "report.scatter_points=0"])
    results = evaluate_models(task, {"a": "random:test_resnet", "b": "random:test_resnet"}, log=lambda _: None)
    # no splits declared: no data read, the data section instead; no config: no settings
    assert calls == [("a", "TaskDataConfig", None), ("b", "TaskDataConfig", None)]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [(r["model"], r["protocol"], r["metrics"]["accuracy"]["mean"]) for r in saved["rows"]] == [
        ("a", "constant", 0.5), ("b", "constant", 0.5)]
    assert results["rows"][0]["values"] == {"accuracy": [0.25, 0.75]}
