"""The evaluation report names each model's training health beside its results."""
from __future__ import annotations

from organfm.evaluation.html_report import render_html
from organfm.evaluation.report import markdown_tables

RESULTS = {"task": {"name": "t"}, "rows": [], "models": {
    "coda": {"spec": "runs/coda", "architecture": "test_convnext", "model_hash": "ab" * 8,
             "health": {"verdict": "not learning yet", "reason": "the exported network is 0.05 % away", "step": 20}},
    "scratch": {"spec": "random:test_convnext", "architecture": "test_convnext", "model_hash": "cd" * 8},
    "old": {"spec": "old/export", "architecture": "test_convnext", "model_hash": "ef" * 8}}}


def test_markdown_and_html_show_the_verdict_and_its_reason():
    md = markdown_tables(RESULTS)
    assert "| training health |" in md and "| not learning yet (step 20) |" in md
    page = render_html(RESULTS, {}, {})
    assert "<th>training health</th>" in page and "not learning yet (step 20)" in page
    assert "title='the exported network is 0.05 % away'" in page


def _row(protocol, **means):
    return {"model": "m", "protocol": protocol, "setting": "s",
            "metrics": {k: {"mean": v, "sd": 0.0, "n": 1} for k, v in means.items()}}


def test_markdown_and_html_lead_with_the_rows_headlines():
    row = _row("finetune3d", accuracy=0.768, balanced_accuracy=0.5, auc=0.612, f1=0.43, majority_accuracy=0.768)
    results = dict(RESULTS, rows=[row])
    assert "- m finetune3d (s): accuracy 0.768 (majority 0.768), balanced accuracy 0.500" in markdown_tables(results)
    assert "<ul id='headline'><li>m finetune3d (s): accuracy 0.768 (majority 0.768)" in render_html(results, {}, {})


def test_a_3d_evaluation_reports_the_majority_rate_and_the_settings_it_ran_with(tmp_path, capsys):
    """An imbalanced 3D task (3 in 4 volumes normal): accuracy alone would read as the majority rate."""
    import json

    import numpy as np

    from organfm.cli.main import main

    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        labels = (np.arange(16) % 4 == 0).astype(np.uint8)
        images = rng.random((16, 16, 16, 16)).astype(np.float32)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels[:, None]
    np.savez(tmp_path / "v.npz", **arrays)
    task = tmp_path / "task.yaml"
    task.write_text("name: tiny3d\nnote: CPU budget, 5 epochs, one seed.\nprotocols: [finetune3d]\n"
                    f"data:\n  source: {tmp_path / 'v.npz'}\n  image_size: 16\n"
                    "finetune3d:\n  epochs: 5\n  batch_size: 8\n  seeds: 1\n")
    code = main(["evaluate", "--models", "scratch=random:plainconv3d", "--task", str(task),
                 f"out_dir={tmp_path / 'out'}", "finetune3d.epochs=1", "report.scatter_points=0"])
    assert code == 0
    out = capsys.readouterr().out
    assert "majority 0.750" in out and "balanced accuracy" in out and "AUC" in out
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    (row,) = results["rows"]
    assert row["metrics"]["majority_accuracy"]["mean"] == 0.75
    note, settings, overridden = results["notes"]
    assert note == "CPU budget, 5 epochs, one seed."  # the file's prose stays, and is put right below it
    assert "finetune3d: source none, image_size none, epochs 1," in settings and "data.image_size 16" in settings
    assert overridden.startswith("Overridden for this evaluation: finetune3d.epochs=1 (task file: 5)")
    md = (tmp_path / "out" / "results.md").read_text()
    assert "Overridden for this evaluation: finetune3d.epochs=1" in md and "(majority 0.750)" in md


def test_a_small_results_dict_renders_exactly_these_markdown_lines():
    results = {"task": {"name": "tiny"}, "notes": ["a note"],
               "data": {"source": "m.csv", "splits": {"train": {"n": 6}, "test": {"n": 3}}, "classes": ["a", "b"]},
               "rows": [
                   {"model": "m1", "protocol": "knn", "setting": "k=1",
                    "metrics": {"accuracy": {"mean": 0.5, "sd": 0.0, "n": 1}, "auc": {"mean": 0.75, "sd": 0.0, "n": 1}}},
                   {"model": "m2", "protocol": "knn", "setting": "k=1",
                    "metrics": {"accuracy": {"mean": 0.8125, "sd": 0.0125, "n": 3}, "f1": {"mean": float("nan"), "n": 3}}},
                   {"model": "m1", "protocol": "segmentation", "setting": "4/2/2 slices",
                    "metrics": {"mean_dice": {"mean": 0.6, "sd": 0.1, "n": 2}}}]}
    assert markdown_tables(results).split("\n") == [
        "# tiny", "", "> a note", "",
        "Data: `m.csv` (train 6, test 3); classes: a, b.", "",
        "## Headline", "",
        "- m1 knn (k=1): accuracy 0.500, AUC 0.750",
        "- m2 knn (k=1): accuracy 0.812 ± 0.013",
        "- m1 segmentation (4/2/2 slices): mean_dice 0.600 ± 0.100", "",
        "## knn", "",
        "| model | setting | accuracy | auc | f1 | n |",  # the union of the rows' metrics, in first-seen order
        "|---|---|---|---|---|---|",
        "| m1 | k=1 | 0.500 | 0.750 |  | 1 |",  # a metric a row lacks is an empty cell
        "| m2 | k=1 | 0.812 ± 0.013 |  | – | 3 |",  # NaN is a dash; n is the largest count
        "",
        "## segmentation", "",
        "| model | setting | mean_dice | n |", "|---|---|---|---|",
        "| m1 | 4/2/2 slices | 0.600 ± 0.100 | 2 |", ""]


def test_to_json_gives_plain_json_values():
    import numpy as np
    import torch

    from organfm.evaluation.report import to_json

    value = {1: float("nan"), "a": np.float32(0.5), "t": torch.tensor([1, 2]), "inf": [float("inf"), (3, "x")],
             "path": __import__("pathlib").Path("p/q")}
    assert to_json(value) == {"1": None, "a": 0.5, "t": [1, 2], "inf": [None, [3, "x"]], "path": "p/q"}
