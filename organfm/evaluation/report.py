"""Results dict -> ``results.json``, ``results.md`` (model x metric tables, mean ± sd, n), plots and ``report.html``."""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from organfm.evaluation.cells import format_cell, headline, health_cell
from organfm.evaluation.html_report import render_html
from organfm.evaluation.plots import plot_embeddings, plot_results

__all__ = ["markdown_tables", "to_json", "write_report"]


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
