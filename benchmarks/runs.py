"""Pretraining runs of a benchmark: reused when finished, resumed when interrupted, started otherwise."""
from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["final_logs", "finished", "health_record", "logged", "pretrain_or_resume"]


def finished(run: Path, steps: int) -> bool:
    """Whether ``run`` has an export of at least ``steps`` steps (then it is reused)."""
    contract = Path(run) / "export" / "backbone.json"
    return contract.is_file() and json.loads(contract.read_text()).get("step", 0) >= steps


def pretrain_or_resume(run: Path, steps: int, config: Callable[[], Any]) -> Any | None:
    """Bring ``run`` to ``steps`` steps.

    Args:
        run: the run folder (``trainer.out_dir`` of ``config()``).
        steps: the steps the benchmark needs.
        config: builds the run's fresh ``Config`` (only called when the run has no checkpoint yet).

    Returns:
        None when the run was already finished, else the ``PretrainSummary`` of the (resumed) run.
    """
    from organfm.config import load_config
    from organfm.engine.checkpoint import latest_checkpoint
    from organfm.engine.pretrain import pretrain

    if finished(run, steps):
        return None
    if latest_checkpoint(run) is not None:  # an interrupted run: continue it
        return pretrain(load_config(None, Path(run) / "config.yaml", [f"trainer.max_steps={steps}"]), resume_dir=run)
    return pretrain(config())


def final_logs(run: Path) -> dict[str, float]:
    """The last logged value of every scalar of a run (``logs/csv/*/metrics.csv``, resumed parts included)."""
    last: dict[str, tuple[int, float]] = {}
    for path in sorted(run.glob("logs/csv/*/metrics.csv")):
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                step = int(float(row.get("step") or 0))
                for k, v in row.items():
                    if k != "step" and v not in ("", None) and step >= last.get(k, (-1, 0.0))[0]:
                        last[k] = (step, float(v))
    return {k: v for k, (_, v) in last.items()}


def logged(run: Path, key: str) -> list[tuple[int, float]]:
    """Every logged ``(step, value)`` of one scalar of a run, in step order (resumed parts included)."""
    rows = []
    for path in sorted(run.glob("logs/csv/*/metrics.csv")):
        with open(path, newline="") as f:
            rows += [(int(float(r.get("step") or 0)), float(r[key])) for r in csv.DictReader(f)
                     if r.get(key) not in ("", None)]
    return sorted(rows)


def health_record(run: Path | None, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """The run file's copy of the pretraining run's ``health.json`` verdict: verdict, reason, step, the kNN
    monitor at step 0 and at the end, and the final value of each signal in ``extra`` (a random-init arm has no
    pretraining run and so no verdict)."""
    from organfm.monitor import read_health

    if run is None:
        return {"verdict": None, "reason": "random init: no pretraining run, so no health verdict"}
    health = read_health(run) or {}
    signals, reference = health.get("signals") or {}, health.get("reference") or {}
    return {"verdict": health.get("verdict"), "reason": health.get("reason"), "step": health.get("step"),
            "knn_step0": reference.get("knn"), "knn_final": signals.get("knn"),
            "knn_majority": signals.get("knn_majority"), **{k: signals.get(k) for k in extra}}
