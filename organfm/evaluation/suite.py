"""The evaluation suite: every chosen protocol for every model, on the same splits and seeds, one results folder.

This is the one place that reads a whole :class:`TaskConfig`. Order of work: look up each named protocol
in the registry (``organfm.evaluation.protocol``); read the union of the splits they declare once; per
model, call each protocol with a :class:`ModelRun` (its lazily built backbone and per-split feature cache,
so features are extracted once per model and split); then write ``results.json``, ``results.md``, the
plots and ``report.html`` (``organfm.evaluation.report``). The suite names no protocol: adding one is a
registered function in ``organfm/evaluation/protocols/``.
"""
from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from organfm.data.subsets import stratified_subset
from organfm.evaluation.cells import headline
from organfm.evaluation.leakage import check_leakage
from organfm.evaluation.maps import embed_2d
from organfm.evaluation.protocol import ModelRun, ProtocolSpec, get_protocol
from organfm.evaluation.report import write_report
from organfm.evaluation.task import TaskConfig, settings_notes, task_to_dict
from organfm.evaluation.task_data import TaskData, load_task_data, public_metadata
from organfm.features.encoders import load_encoder
from organfm.features.extraction import FeatureCache

__all__ = ["evaluate_models"]


def evaluate_models(task: TaskConfig, models: Mapping[str, str], *, log: Callable[[str], None] | None = None,
                    changed: Mapping[str, tuple[Any, Any]] | None = None) -> dict[str, Any]:
    """Run ``task.protocols`` for every model and write the results folder.

    Args:
        task: the resolved task config.
        models: name -> spec (run folder, export, ``.safetensors``, ``random:<arch>``, ``timm:<arch>:<file>``).
        log: progress lines (default: stderr).
        changed: dotted key -> (task file value, value used) of the overridden keys
            (``organfm.evaluation.task.changed_settings``), named in the report's notes.

    Returns:
        The results dict also written to ``<out_dir>/results.json``; ``results["out_dir"]`` is the folder.

    Raises:
        ValueError: bad specs or data, or train/test leakage without ``allow_leakage=true``.
    """
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    started = time.perf_counter()
    out_dir = Path(task.out_dir or Path("eval") / f"{task.name}-{datetime.now():%Y%m%d-%H%M%S}")
    out_dir.mkdir(parents=True, exist_ok=True)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if task.device == "auto" else task.device
    encoders = {name: load_encoder(spec, image_size=task.data.image_size, seed=task.seed)
                for name, spec in models.items()}
    results: dict[str, Any] = {
        "task": task_to_dict(task), "models": {n: _public_contract(c) for n, (_, c) in encoders.items()},
        "rows": [], "data": {}, "leakage": {}, "notes": settings_notes(task, dict(changed or {})), "timing": {},
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "device": device},
    }
    specs = [get_protocol(p) for p in task.protocols]
    data = _load_data(task, specs)
    scatter: dict[str, Any] = {}
    embeddings: dict[str, Any] = {}
    if data is not None:
        results["data"] = data.summary
        if any(spec.leakage_guard for spec in specs):
            results["leakage"] = check_leakage({n: s.records for n, s in data.splits.items()},
                                               allow=task.allow_leakage)
            if any(v for pair in results["leakage"].values() for v in pair.values()):
                results["notes"].append(f"allow_leakage=true: splits overlap {results['leakage']}")
        say(f"data: {', '.join(f'{n} {len(s)}' for n, s in data.splits.items())} images, "
            f"{len(data.class_names)} classes ({task.data.source})")
    cache = FeatureCache(task.cache_dir or out_dir / "cache")
    for name, (make_backbone, contract) in encoders.items():
        run = ModelRun(name, make_backbone, contract, device, cache, seed=task.seed, batch_size=task.batch_size)
        for spec in specs:
            t = time.perf_counter()
            # a protocol reading its own files gets the data section (where they are), the others the splits
            rows = spec(run, task.data if spec.inputs == "own" else data, task)
            results["rows"] += rows
            results["timing"][f"{name}/{spec.name}"] = round(time.perf_counter() - t, 2)
            say(f"{name}: {spec.name} {_brief(rows)}")
        if "maps" in run.artifacts:
            embeddings[name] = run.artifacts["maps"]
        if data is not None and task.report.scatter_points > 0:
            scatter.setdefault("models", {})[name] = _scatter_coords(run, data, task, specs, scatter)
    results["timing"]["total"] = round(time.perf_counter() - started, 2)
    results["cache"] = {"dir": str(cache.root), "hits": cache.hits, "misses": cache.misses}
    results["out_dir"] = str(out_dir)
    write_report(results, out_dir, embeddings=embeddings, scatter=scatter)
    say(f"wrote {out_dir / 'results.json'}, {out_dir / 'results.md'} and {out_dir / 'report.html'}")
    return results


def _load_data(task: TaskConfig, specs: list[ProtocolSpec]) -> TaskData | None:
    """The union of the splits the protocols declare, each read once (a protocol's own cap wins)."""
    limits: dict[str, int | None] = {}
    for spec in specs:
        for split, cap in spec.limits(task).items():
            limits[split] = cap if split not in limits else _larger(limits[split], cap)
    return load_task_data(task, limits) if limits else None


def _larger(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else max(a, b)


def _scatter_coords(run: ModelRun, data: TaskData, task: TaskConfig, specs: list[ProtocolSpec],
                    scatter: dict[str, Any]) -> list[list[float]]:
    """t-SNE coordinates of the report's scatter points; the points (and thumbnails) are chosen once.

    The split is the one the first protocol with a ``scatter_split`` maps (``clusters.split``), else test.
    """
    name = next((spec.scatter_split(spec.settings(task)) for spec in specs if spec.scatter_split is not None), "test")
    split = data.splits.get(name) or next(iter(data.splits.values()))
    if "index" not in scatter:
        idx = np.arange(len(split))
        if len(idx) > task.report.scatter_points:
            idx = stratified_subset(split.labels.numpy(), fraction=task.report.scatter_points / len(idx),
                                    seed=task.seed)
        scatter.update(index=idx, split=split, class_names=data.class_names,
                       meta=[public_metadata(split.records[i], int(split.labels[i]), data.class_names, split.name)
                             for i in idx])
    idx = scatter["index"]
    if len(idx) < 3:
        return []
    coords = embed_2d(run.features(split)[idx], method="tsne", seed=task.seed)
    return np.round(coords, 3).tolist()


def _brief(rows: list[dict[str, Any]]) -> str:
    return "; ".join(f"{row['setting']}: {text}" for row in rows if (text := headline(row)))


def _public_contract(contract: dict[str, Any]) -> dict[str, Any]:
    keep = ("architecture", "spec", "model_hash", "mean", "std", "input_size", "method", "num_features", "step",
            "intensity", "weights", "health")
    return {k: contract[k] for k in keep if k in contract}
