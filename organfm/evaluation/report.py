"""Results dict -> ``results.json``, ``results.md`` (model x metric tables, mean ± sd, n), plots and ``report.html``."""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["HEADLINE_METRICS", "format_cell", "headline", "health_cell", "markdown_tables", "to_json", "write_report"]


def write_report(results: dict[str, Any], out_dir: str | Path, *, embeddings: dict[str, Any] | None = None,
                 scatter: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write every output of one evaluation into ``out_dir``.

    Args:
        results: from ``evaluate_models`` (rows, task, models, data, notes, timing).
        out_dir: the results folder.
        embeddings: model -> ``{"maps": {method: (N, 2)}, "colors": {column: [N values]}}`` (clusters).
        scatter: ``{"index", "split", "meta", "models": {model: [[x, y], ...]}}`` for the interactive scatter.

    Returns:
        name -> path of ``results.json``, ``results.md``, ``report.html`` and every plot.
    """
    from organfm.evaluation.html_report import render_html
    from organfm.evaluation.plots import plot_embeddings, plot_results

    out = Path(out_dir)
    plots_dir = out / "plots"
    plots = plot_results(results["rows"], plots_dir)
    for model, emb in (embeddings or {}).items():
        plots.update(plot_embeddings(model, emb["maps"], emb["colors"], plots_dir))
    paths = {"results.json": out / "results.json", "results.md": out / "results.md", "report.html": out / "report.html"}
    paths["results.json"].write_text(json.dumps(to_json(dict(results, plots={k: str(v.relative_to(out))
                                                                             for k, v in plots.items()})), indent=2))
    paths["results.md"].write_text(markdown_tables(results), encoding="utf-8")
    paths["report.html"].write_text(render_html(results, plots, scatter or {}), encoding="utf-8")
    return {**paths, **plots}


def to_json(value: Any) -> Any:
    """Plain JSON data: NaN/inf become null, numpy and torch scalars and arrays become Python values."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if hasattr(value, "tolist"):  # numpy / torch arrays and scalars
        return to_json(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def format_cell(summary: dict[str, Any], digits: int = 3) -> str:
    """``"0.812"`` for one value, ``"0.812 ± 0.010"`` for repeats, ``"–"`` for NaN."""
    mean = summary.get("mean")
    if mean is None or not math.isfinite(float(mean)):
        return "–"
    if int(summary.get("n", 1)) > 1:
        return f"{mean:.{digits}f} ± {float(summary.get('sd', 0.0)):.{digits}f}"
    return f"{mean:.{digits}f}"


HEADLINE_METRICS = ("accuracy", "mean_dice", "knn_accuracy", "i2t_R@1")
"""A row's headline metric: the first of these that it holds."""

# beside a classification row's accuracy: the scores an imbalanced test set cannot inflate
_BESIDE_ACCURACY = (("balanced_accuracy", "balanced accuracy"), ("auc", "AUC"))


def headline(row: dict[str, Any]) -> str:
    """One row's result in a line: ``accuracy 0.768 (majority 0.768), balanced accuracy 0.500, AUC 0.612``.

    Accuracy alone reads well on an imbalanced set where it only repeats the majority class's share (a 3D
    task with 77% normal volumes gives every model 0.768), so a classification row is shown with its balanced
    accuracy, its AUC and the majority rate of the set it was scored on.

    Args:
        row: a results row (``metrics``: metric -> summary with ``mean``, ``sd``, ``n``).

    Returns:
        The line, or ``""`` for a row with no headline metric.
    """
    metrics = row.get("metrics", {})
    key = next((m for m in HEADLINE_METRICS if m in metrics), None)
    if key is None:
        return ""
    text = f"{key} {format_cell(metrics[key])}"
    if key != "accuracy":
        return text
    if "majority_accuracy" in metrics:
        text += f" (majority {format_cell(metrics['majority_accuracy'])})"
    return ", ".join([text] + [f"{name} {format_cell(metrics[m])}" for m, name in _BESIDE_ACCURACY if m in metrics])


def markdown_tables(results: dict[str, Any]) -> str:
    """One Markdown table per protocol: rows = model x setting, columns = metrics, cells mean ± sd, then n."""
    task = results.get("task", {})
    lines = [f"# {task.get('name', 'evaluation')}", ""]
    for note in results.get("notes", []):
        lines += [f"> {note}", ""]
    data = results.get("data", {})
    if data:
        sizes = ", ".join(f"{n} {s['n']}" for n, s in data.get("splits", {}).items())
        lines += [f"Data: `{data.get('source')}` ({sizes}); classes: {', '.join(data.get('classes', []))}.", ""]
    models = results.get("models", {})
    if models:
        lines += ["| model | spec | architecture | hash | training health |", "|---|---|---|---|---|"]
        lines += [f"| {n} | `{m.get('spec')}` | {m.get('architecture')} | `{str(m.get('model_hash'))[:12]}` | "
                  f"{health_cell(m)} |" for n, m in models.items()]
        lines.append("")
    lines += _headline_lines(results.get("rows", []))
    for protocol, rows in _by_protocol(results.get("rows", [])).items():
        metrics = _metric_columns(rows)
        lines += [f"## {protocol}", "", "| model | setting | " + " | ".join(metrics) + " | n |",
                  "|---|---|" + "---|" * (len(metrics) + 1)]
        for row in rows:
            cells = [format_cell(row["metrics"][m]) if m in row["metrics"] else "" for m in metrics]
            n = max(int(s.get("n", 1)) for s in row["metrics"].values())
            lines.append(f"| {row['model']} | {row['setting']} | " + " | ".join(cells) + f" | {n} |")
        lines.append("")
    return "\n".join(lines)


def _headline_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """``## Headline``: one bullet per row with :func:`headline` (none without a headline metric)."""
    bullets = [f"- {row['model']} {row['protocol']} ({row['setting']}): {text}" for row in rows
               if (text := headline(row))]
    return ["## Headline", "", *bullets, ""] if bullets else []


def _by_protocol(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row["protocol"], []).append(row)
    return grouped


def _metric_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [m for m in row["metrics"] if m not in columns]
    return columns


def health_cell(model: dict[str, Any]) -> str:
    """The pretraining run's health verdict (``health.json``), or why there is none."""
    health = model.get("health")
    if health:
        return f"{health.get('verdict')} (step {health.get('step')})"
    return "random init" if str(model.get("spec", "")).startswith("random:") else "not monitored"
