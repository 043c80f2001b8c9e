"""Static plots of an evaluation (matplotlib, Agg backend: no display needed), written as PNG files."""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_embeddings", "plot_results"]

_HEADLINE = ("accuracy", "mean_dice", "knn_accuracy")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window (and work on machines without a display)
    import matplotlib.pyplot as plt

    return plt


def plot_results(rows: Sequence[dict[str, Any]], out_dir: str | Path) -> dict[str, Path]:
    """Bar charts of the headline metric per protocol (models side by side, sd as error bars) and few-shot curves.

    Args:
        rows: results rows (``model``, ``protocol``, ``setting``, ``metrics``: metric -> summary).
        out_dir: folder for the PNG files (created).

    Returns:
        plot name -> PNG path.
    """
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    protocols: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        protocols.setdefault(row["protocol"], []).append(row)
    for protocol, group in protocols.items():
        metric = next((m for m in _HEADLINE if m in group[0]["metrics"]), next(iter(group[0]["metrics"])))
        models = list(dict.fromkeys(r["model"] for r in group))
        settings = list(dict.fromkeys(r["setting"] for r in group))
        fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(settings) * max(1, len(models)) ** 0.5 + 2), 3.2))
        width = 0.8 / len(models)
        for j, model in enumerate(models):
            means, sds = [], []
            for setting in settings:
                row = next((r for r in group if r["model"] == model and r["setting"] == setting), None)
                summary = row["metrics"].get(metric, {}) if row else {}
                means.append(summary.get("mean", np.nan))
                sds.append(summary.get("sd", 0.0) if summary.get("n", 1) > 1 else 0.0)
            x = np.arange(len(settings)) + (j - (len(models) - 1) / 2) * width
            if protocol.startswith("fewshot"):
                ax.errorbar(np.arange(len(settings)), means, yerr=sds, marker="o", capsize=3, label=model)
            else:
                ax.bar(x, means, width, yerr=sds, capsize=3, label=model)
        ax.set_xticks(np.arange(len(settings)), settings, rotation=30 if len(settings) > 4 else 0, ha="right"
                      if len(settings) > 4 else "center")
        majority = [r["metrics"]["majority_accuracy"]["mean"] for r in group if "majority_accuracy" in r["metrics"]]
        if metric == "accuracy" and majority:  # the floor of an imbalanced test set: a bar at it learned nothing
            ax.axhline(float(np.mean(majority)), ls="--", color="grey", lw=1, label="majority class")
        ax.set_ylabel(metric)
        ax.set_ylim(0, 1.05)
        ax.set_title(protocol)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths[protocol] = out / f"{_slug(protocol)}.png"
        fig.savefig(paths[protocol], dpi=100)
        plt.close(fig)
    return paths


def plot_embeddings(model: str, maps: Mapping[str, np.ndarray], colors: Mapping[str, Sequence[str]],
                    out_dir: str | Path) -> dict[str, Path]:
    """One scatter per (2-D map, colour column) of a model's features.

    Args:
        model: model name (titles and file names).
        maps: method (``tsne``, ``umap``) -> (N, 2) coordinates.
        colors: column (``class``, ``organ``, ...) -> N category values.
        out_dir: folder for the PNG files.

    Returns:
        ``"<model>-<method>-<column>"`` -> PNG path.
    """
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for method, coords in maps.items():
        for column, values in colors.items():
            fig, ax = plt.subplots(figsize=(5.2, 4.2))
            cats = sorted(set(values))
            cmap = plt.get_cmap("tab20" if len(cats) > 10 else "tab10")
            for i, cat in enumerate(cats):
                sel = np.asarray([v == cat for v in values])
                ax.scatter(coords[sel, 0], coords[sel, 1], s=6, color=cmap(i % cmap.N), label=cat or "(none)")
            ax.set_title(f"{model}: {method} by {column}")
            ax.set_xticks([])
            ax.set_yticks([])
            if len(cats) <= 20:
                ax.legend(fontsize=7, markerscale=2, loc="best", frameon=False)
            fig.tight_layout()
            name = f"{model}-{method}-{column}"
            paths[name] = out / f"{_slug(name)}.png"
            fig.savefig(paths[name], dpi=100)
            plt.close(fig)
    return paths


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "plot"
