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
    from organfm.api import evaluate
    from organfm.evaluation.cells import headline

    results: dict[str, Any] = evaluate(args.models, args.task, args.overrides)
    for row in results["rows"]:
        text = headline(row)
        if text:
            n = max(int(s.get("n", 1)) for s in row["metrics"].values())
            print(f"{row['model']:>12} {row['protocol']:<16} {row['setting']:<16} {text} (n={n})")
    print(f"results: {results['out_dir']}/results.json, report: {results['out_dir']}/report.html")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``evaluate`` subcommand on ``organfm``'s subparsers."""
    p = subparsers.add_parser("evaluate", description=_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="examples:\n  organfm evaluate --models coda=runs/coda-x,scratch=random:convnext_atto "
                                     "--task mednist\n  organfm evaluate --models runs/triad-x --task adrenalmnist3d "
                                     "protocols=[finetune3d]\n  organfm evaluate --models coda=runs/coda-x --task "
                                     "mednist data.root=/data knn.k=[10,20] out_dir=eval/coda\n"
                                     "results also go into each evaluated export's model card (README.md)",
                              help="kNN, linear probe, few-shot, fine-tuning, segmentation, clusters, zero-shot, "
                                   "image-text retrieval")
    p.add_argument("--models", required=True, metavar="NAME=SPEC[,NAME=SPEC...]",
                   help="models to compare, e.g. coda=runs/coda-x,scratch=random:convnext_atto")
    p.add_argument("--task", required=True, metavar="FILE|NAME",
                   help="task YAML, or a shipped task: mednist, pneumoniamnist, adrenalmnist3d, ... (organfm config list)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=_evaluate)
    return p
