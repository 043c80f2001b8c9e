"""``organfm evaluate --models NAME=SPEC[,NAME=SPEC...] --task FILE [key=value ...]``: thin, parse then call."""
from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser"]

_HELP = """Evaluate one or more encoders on a task and write one results folder (results.json, results.md,
plots, report.html). SPEC: a run folder, an export folder, a .safetensors file with its contract JSON,
random:<timm arch> or timm:<arch>:<weights file>. Overrides are dotted key=value pairs, e.g.
data.root=../shared/data out_dir=eval/x protocols=[knn,linear,fewshot,finetune,segmentation,clusters]
knn.k=[10,20] fewshot.seeds=10 allow_leakage=true. protocols=[zeroshot,retrieval] need a model exported
with a text tower (<export>/text/: method imagetext, or mmkd with texts); other models are skipped with a warning."""


def _evaluate(args: argparse.Namespace) -> int:
    from organfm.evaluation.models import parse_models
    from organfm.evaluation.report import format_cell
    from organfm.evaluation.suite import evaluate_models
    from organfm.evaluation.task import load_task

    models = parse_models(args.models)
    task = load_task(args.task, args.overrides)
    results: dict[str, Any] = evaluate_models(task, models)
    for row in results["rows"]:
        headline = next((m for m in ("accuracy", "mean_dice", "knn_accuracy") if m in row["metrics"]), None)
        if headline is not None:
            print(f"{row['model']:>12} {row['protocol']:<16} {row['setting']:<16} {headline} "
                  f"{format_cell(row['metrics'][headline])} (n={row['metrics'][headline]['n']})")
    print(f"results: {results['out_dir']}/results.json, report: {results['out_dir']}/report.html")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``evaluate`` subcommand on ``organfm``'s subparsers."""
    p = subparsers.add_parser("evaluate", description=_HELP,
                              help="kNN, linear probe, few-shot, fine-tuning, segmentation, clusters, zero-shot, "
                                   "image-text retrieval")
    p.add_argument("--models", required=True, metavar="NAME=SPEC[,NAME=SPEC...]",
                   help="models to compare, e.g. coda=runs/coda-x,scratch=random:convnext_atto")
    p.add_argument("--task", required=True, metavar="FILE", help="task YAML (configs/tasks/*.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=_evaluate)
    return p
