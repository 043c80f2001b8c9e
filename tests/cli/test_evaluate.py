"""``organfm evaluate``: thin; it hands models, task and overrides to ``organfm.api.evaluate`` and prints one
headline line per row that has one (with its largest repeat count), then where the results are."""
from __future__ import annotations

import pytest

from organfm.cli.main import main


def _row(model, protocol, setting, **metrics):
    return {"model": model, "protocol": protocol, "setting": setting,
            "metrics": {k: {"mean": m, "sd": 0.01, "n": n} for k, (m, n) in metrics.items()}}


RESULTS = {"out_dir": "eval/x", "rows": [
    _row("coda", "knn", "k=10", accuracy=(0.75, 1), auc=(0.5, 1)),
    _row("scratch", "clusters", "test", nmi=(0.3, 1)),  # no headline metric: no line
    _row("coda", "fewshot/linear", "1%", accuracy=(0.5, 5), f1=(0.25, 3)),
]}


def test_one_line_per_headline_row_and_the_results_paths(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr("organfm.api.evaluate", lambda *a: calls.append(a) or RESULTS)
    assert main(["evaluate", "--models", "coda=runs/c,scratch=random:x", "--task", "mednist", "knn.k=[10]",
                 "seed=3"]) == 0
    assert calls == [("coda=runs/c,scratch=random:x", "mednist", ["knn.k=[10]", "seed=3"])]
    assert capsys.readouterr().out.splitlines() == [
        "        coda knn              k=10             accuracy 0.750, AUC 0.500 (n=1)",
        "        coda fewshot/linear   1%               accuracy 0.500 ± 0.010 (n=5)",
        "results: eval/x/results.json, report: eval/x/report.html"]


def test_models_and_task_are_required(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--task", "mednist"])
    assert exit_.value.code == 2 and "--models" in capsys.readouterr().err
