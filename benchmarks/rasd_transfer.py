"""RaSD transfer: does a backbone pretrained on synthetic images only beat the same network trained from scratch?

Pretrains RaSD (``configs/rasd.yaml``: ``unet_small``, 64 px synthetic 2D pairs, no real image) for
``--steps`` steps, then compares ``rasd`` (its export) with ``scratch`` (``random:unet_small``) on real data
from ``--data`` (``../shared/data``) through the product's own evaluation path: one
``organfm.evaluation.evaluate_models`` call per task file (``configs/tasks/*.yaml``) with the overrides
listed in ``part_overrides``, i.e. exactly::

    organfm evaluate --models scratch=random:unet_small,rasd=<out>/pretrain/export \
        --task configs/tasks/<task>.yaml data.root=<data> out_dir=<out>/<part> <overrides...>

- MedNIST few-shot (1%, 10%, 1/5/10 shots per class): linear probe on frozen features, and fine-tuning;
- PneumoniaMNIST: linear probe on frozen features, and fine-tuning on 1,000 training images;
- CT organ segmentation (5 organs, axial slices of the TotalSegmentator example scan): U-Net fine-tuning.

Seeded settings run ``--seeds`` times and are reported as mean ± sd with the number of seeds where RaSD
wins (seeds are repeats of the downstream step on ONE pretraining run, not independent pretraining runs).
Each part writes ``<out>/<part>/results.json`` (a rerun with the same settings reuses it); the table goes to
``<out>/results.md`` and into ``docs/results.md`` under "RaSD transfer".

    python benchmarks/rasd_transfer.py                      # the CPU budget used for docs/results.md
    python benchmarks/rasd_transfer.py --steps 50 --seeds 2 --quick   # a smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.results_page import write_section  # noqa: E402
from benchmarks.runs import pretrain_or_resume  # noqa: E402
from organfm.evaluation import evaluate_models, load_task, summarize  # noqa: E402
from organfm.evaluation.task import task_to_dict  # noqa: E402

ARCH = "unet_small"
SECTION = "## RaSD transfer"
BEGIN, END = "<!-- BEGIN rasd -->", "<!-- END rasd -->"  # its part of docs/results.md
# part -> (task file, headline metric)
PARTS = {"mednist": ("mednist.yaml", "accuracy"), "pneumoniamnist": ("pneumoniamnist.yaml", "auc"),
         "ct-organs": ("totalseg_ct_seg.yaml", "mean_dice")}


def pretrain_rasd(out: Path, *, steps: int, seed: int) -> Path:
    """Pretrain (or resume, or reuse) RaSD on synthetic data only; return the exported weights."""
    from organfm.config import load_config

    run = out / "pretrain"
    overrides = [f"trainer.max_steps={steps}", f"trainer.seed={seed}", f"trainer.out_dir={run}",
                 "trainer.checkpoint_every=100", "trainer.log_every=25"]
    summary = pretrain_or_resume(run, steps, lambda: load_config(None, REPO / "configs" / "rasd.yaml", overrides))
    if summary is not None:
        print(summary.line("rasd", ARCH), flush=True)
    return run / "export" / "backbone.safetensors"


def part_overrides(part: str, *, seeds: int, quick: bool) -> list[str]:
    """The task overrides of one part (the benchmark's budget); everything else comes from the task file."""
    q = quick
    finetune = [f"finetune.epochs={2 if q else 10}", "finetune.batch_size=32", "finetune.lr=0.001",
                "finetune.weight_decay=0.05", "finetune.patience=3"]
    if part == "mednist":
        return ["protocols=[fewshot]", "fewshot.methods=[linear,finetune]", "fewshot.fractions=[0.01,0.1]",
                "fewshot.shots=[1,5,10]", f"fewshot.seeds={seeds}", f"data.max_train={600 if q else 6000}",
                f"data.max_val={120 if q else 300}", f"data.max_test={240 if q else 600}", *finetune]
    if part == "pneumoniamnist":
        caps = ("300", "100", "100") if q else ("null", "null", "null")
        return ["protocols=[linear,finetune]", f"finetune.seeds={seeds}", f"finetune.max_train={100 if q else 1000}",
                f"data.max_train={caps[0]}", f"data.max_val={caps[1]}", f"data.max_test={caps[2]}", *finetune]
    if part == "ct-organs":
        return ["protocols=[segmentation]", f"segmentation.seeds={seeds}", f"segmentation.epochs={3 if q else 30}"]
    raise ValueError(f"unknown part {part!r}; valid: {', '.join(PARTS)}")


def evaluate_part(part: str, models: dict[str, str], *, out: Path, data_root: Path, seeds: int,
                  quick: bool) -> dict[str, Any]:
    """``evaluate_models`` on the part's task; an earlier results.json of the same task is reused."""
    overrides = [f"data.root={data_root}", f"out_dir={out / part}", "report.scatter_points=0",
                 *part_overrides(part, seeds=seeds, quick=quick)]
    task = load_task(REPO / "configs" / "tasks" / PARTS[part][0], overrides)
    done = out / part / "results.json"
    if done.is_file():
        previous = json.loads(done.read_text())
        if previous.get("task") == task_to_dict(task) and set(previous.get("models", {})) == set(models):
            print(f"{part}: reusing {done}", flush=True)
            return previous
    t = time.time()
    results = evaluate_models(task, models)
    print(f"{part}: {time.time() - t:.0f} s", flush=True)
    return results


def table(parts: dict[str, dict[str, Any]]) -> str:
    """Markdown: one row per (task, protocol, setting), scratch vs RaSD, the paired difference and RaSD's wins."""
    lines = ["| task | protocol | setting | metric | scratch | RaSD | Δ (RaSD − scratch) | RaSD wins |",
             "|---|---|---|---|---|---|---|---|"]
    for part, results in parts.items():
        metric = PARTS[part][1]
        by_key: dict[tuple[str, str], dict[str, list[float]]] = {}
        for row in results["rows"]:
            if metric in row["values"]:
                by_key.setdefault((row["protocol"], row["setting"]), {})[row["model"]] = row["values"][metric]
        for (protocol, setting), values in by_key.items():
            if "scratch" not in values or "rasd" not in values:
                continue
            x, y = np.asarray(values["scratch"], float), np.asarray(values["rasd"], float)
            n = min(len(x), len(y))
            diff = summarize(y[:n] - x[:n])
            wins = int((y[:n] > x[:n]).sum())
            lines.append(f"| {part} | {protocol} | {setting} | {metric} | {summarize(x)['formatted']} | "
                         f"{summarize(y)['formatted']} | {diff['mean']:+.3f} ± {diff['sd']:.3f} | {wins}/{n} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=800, help="RaSD pretraining steps (batch 8 at 64 px)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "rasd_transfer"))
    p.add_argument("--docs", default=str(REPO / "docs" / "results.md"), help="results page ('' to skip)")
    p.add_argument("--quick", action="store_true", help="tiny splits and few epochs (a smoke run, not a result)")
    p.add_argument("--skip", default="", help=f"comma list of parts to skip: {','.join(PARTS)}")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("ORGANFM_THREADS", "2")))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    unknown = skip - set(PARTS)
    if unknown:
        p.error(f"--skip: unknown parts {', '.join(sorted(unknown))}; valid: {', '.join(PARTS)}")
    data_root = Path(args.data).resolve()
    t0 = time.time()

    export = pretrain_rasd(out, steps=args.steps, seed=0)
    models = {"scratch": f"random:{ARCH}", "rasd": str(export.parent)}
    parts = {part: evaluate_part(part, models, out=out, data_root=data_root, seeds=args.seeds, quick=args.quick)
             for part in PARTS if part not in skip}

    command = "python benchmarks/rasd_transfer.py " + " ".join(argv if argv is not None else sys.argv[1:])
    contract = json.loads((export.parent / "backbone.json").read_text())
    md = "\n".join([
        SECTION, "",
        f"Synthetic-only pretraining (RaSD, `configs/rasd.yaml`: `{ARCH}`, {contract['step']} steps of batch 8 at "
        "64 px, K = 8 labels; no real image) against the same architecture from a random initialisation "
        f"(\"scratch\"), {args.seeds} downstream seeds on ONE pretraining run (n = 1 pretraining run: the seeds "
        "measure downstream variance only), mean ± sd; Δ is the mean paired difference, \"RaSD wins\" counts "
        "the seeds where RaSD scores higher. Linear probes use frozen features; fine-tuning trains the whole "
        "network. Every number comes from `organfm evaluate` (see `part_overrides`). Metrics: MedNIST accuracy "
        "(6 classes), PneumoniaMNIST AUC, CT mean Dice over 5 organs. CPU run, "
        f"{(time.time() - t0) / 60:.0f} min.",
        "",
        table(parts),
        "",
        "Caveats: MedNIST has no patient ids (a random split can share a patient across splits); the "
        "PneumoniaMNIST copy has a modified train split (not comparable with published numbers); the CT task "
        "uses one scan (slice blocks of the same patient) and TotalSegmentator predictions as masks. "
        "Splits are the evaluation suite's (`configs/tasks/*.yaml`), capped for a CPU budget.",
        "", f"Regenerate: `{command.strip()}`", ""])
    (out / "results.md").write_text(md)
    if args.docs and not args.quick:
        write_section(Path(args.docs), BEGIN, END, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
