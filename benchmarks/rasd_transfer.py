"""RaSD transfer: does a backbone pretrained on synthetic images only beat the same network trained from scratch?

Pretrains RaSD (``configs/rasd.yaml``: ``unet_small``, 64 px synthetic 2D pairs, no real image) for
``--steps`` steps, then compares ``rasd`` (those weights) with ``scratch`` (the same architecture, random
initialisation) on real data from ``--data`` (``../shared/data``), with the evaluation suite's splits
(``configs/tasks/*.yaml``) and protocols (``organfm.evaluation``):

- MedNIST few-shot (1%, 10%, 1/5/10 shots per class): a linear probe on frozen features, and fine-tuning;
- PneumoniaMNIST: linear probe on frozen features, and fine-tuning;
- CT organ segmentation (5 organs, axial slices of the TotalSegmentator example scan): U-Net fine-tuning.

Every setting runs ``--seeds`` times (few-shot subsets, fine-tuning order and the scratch initialisation
change with the seed; the frozen scratch encoder is one random init) and is reported as mean ± sd with the
number of seeds where RaSD wins. Results are cached in ``<out>/results.json`` (a rerun skips what is done)
and the table is written to ``<out>/results.md`` and into ``docs/results.md`` under "RaSD transfer".

    python benchmarks/rasd_transfer.py                      # the CPU budget used for docs/results.md
    python benchmarks/rasd_transfer.py --steps 50 --seeds 2 --quick   # a smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from organfm.backbones import create_backbone  # noqa: E402
from organfm.evaluation import (extract_features, finetune_classification, finetune_segmentation,  # noqa: E402
                                linear_probe, load_task, run_few_shot, stratified_subset, summarize)
from organfm.evaluation.metrics import classification_metrics  # noqa: E402

ARCH = "unet_small"
MODELS = ("scratch", "rasd")
SECTION = "## RaSD transfer"


def pretrain_rasd(out: Path, *, steps: int, seed: int) -> Path:
    """Pretrain (or resume, or reuse) RaSD on synthetic data only; return the exported weights."""
    from organfm.config import load_config
    from organfm.engine.checkpoint import latest_checkpoint, load_checkpoint
    from organfm.engine.pretrain import pretrain

    run = out / "pretrain"
    export = run / "export" / "backbone.safetensors"
    if export.is_file() and json.loads((run / "export" / "backbone.json").read_text())["step"] >= steps:
        return export
    overrides = [f"trainer.max_steps={steps}", f"trainer.seed={seed}", f"trainer.out_dir={run}",
                 "trainer.checkpoint_every=100", "trainer.log_every=25"]
    if latest_checkpoint(run) is not None and load_checkpoint(latest_checkpoint(run))["step"] < steps:
        summary = pretrain(load_config(None, run / "config.yaml", [f"trainer.max_steps={steps}"]), resume_dir=run)
    else:
        summary = pretrain(load_config(None, REPO / "configs" / "rasd.yaml", overrides))
    print(summary.line("rasd", ARCH), flush=True)
    return summary.export


def model_factories(export: Path) -> dict[str, Callable[[], torch.nn.Module]]:
    """Fresh backbones: RaSD's weights, or a random init (seeded by the caller's RNG state)."""
    return {"scratch": lambda: create_backbone(ARCH), "rasd": lambda: create_backbone(ARCH, pretrained_file=str(export))}


def frozen_features(make: Callable[[], torch.nn.Module], splits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Pooled features of every split, one encoder (seed 0 for the random init); inputs in [0, 1] as RaSD's."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = make()
    return {name: extract_features(encoder, images, mean=0.0, std=1.0, batch_size=128) for name, images in splits.items()}


def probe_metrics(y: torch.Tensor, probs: torch.Tensor) -> dict[str, float]:
    m = classification_metrics(y.numpy(), probs.numpy())
    return {"accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"], "auc": m["auc"]}


class Results:
    """``{task|protocol|setting|model: {metric: [value per seed]}}`` persisted after every entry."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, dict[str, list[float]]] = json.loads(path.read_text()) if path.is_file() else {}

    def done(self, key: str) -> bool:
        return key in self.data

    def put(self, key: str, values: dict[str, list[float]]) -> None:
        self.data[key] = values
        self.path.write_text(json.dumps(self.data, indent=1))
        brief = ", ".join(f"{m} {summarize(v)['formatted']}" for m, v in values.items())
        print(f"{key}: {brief}", flush=True)


def classification_task(name: str, task_file: str, results: Results, factories: dict, *, data_root: Path,
                        seeds: list[int], limits: dict[str, int | None], fewshot: bool, linear: bool,
                        finetune: dict[str, Any] | None, finetune_settings: list[tuple[str, dict]] | None) -> None:
    from organfm.evaluation.task_data import load_task_data

    task = load_task(REPO / "configs" / "tasks" / task_file, [f"data.root={data_root}"])
    data = load_task_data(task, limits)
    tr, va, te = data.splits["train"], data.splits["val"], data.splits["test"]
    print(f"{name}: train {len(tr)}, val {len(va)}, test {len(te)}, classes {data.class_names}", flush=True)
    k = len(data.class_names)
    for model, make in factories.items():
        feats = None
        fewshot_keys = [f"{name}|fewshot-linear|{s}|{model}" for s in ("1%", "10%", "1-shot", "5-shot", "10-shot")]
        fewshot_todo = fewshot and not all(map(results.done, fewshot_keys))
        linear_todo = linear and not results.done(f"{name}|linear|all|{model}")
        if fewshot_todo or linear_todo:
                t = time.time()
                feats = frozen_features(make, {"train": tr.images, "val": va.images, "test": te.images})
                print(f"{name}/{model}: features in {time.time() - t:.0f} s", flush=True)
        if linear_todo:
            values: dict[str, list[float]] = {}
            for seed in seeds:
                out = linear_probe(feats["train"], tr.labels, feats["val"], va.labels, feats["test"], num_classes=k,
                                   seed=seed)
                for m, v in probe_metrics(te.labels, out["test_probs"]).items():
                    values.setdefault(m, []).append(v)
            results.put(f"{name}|linear|all|{model}", values)
        if fewshot_todo:
            def evaluate(idx: np.ndarray, seed: int) -> dict[str, float]:
                out = linear_probe(feats["train"][idx], tr.labels[idx], feats["val"], va.labels, feats["test"],
                                   num_classes=k, seed=seed)
                return probe_metrics(te.labels, out["test_probs"])

            summary = run_few_shot(tr.labels.numpy(), evaluate, fractions=(0.01, 0.1), shots=(1, 5, 10), seeds=seeds)
            for setting, s in summary.items():
                results.put(f"{name}|fewshot-linear|{setting}|{model}", s["values"])
        for setting, subset in finetune_settings or []:
            key = f"{name}|finetune|{setting}|{model}"
            if results.done(key):
                continue
            values = {}
            t = time.time()
            for seed in seeds:
                idx = _subset(tr.labels.numpy(), seed=seed, **subset)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    out = finetune_classification(make, (tr.images[idx], tr.labels[idx]), (va.images, va.labels),
                                                  (te.images, te.labels), num_classes=k, seed=seed, **finetune)
                for m in ("accuracy", "balanced_accuracy", "auc"):
                    values.setdefault(m, []).append(out["metrics"][m])
                values.setdefault("n_train", []).append(float(len(idx)))
            print(f"{key}: {time.time() - t:.0f} s", flush=True)
            results.put(key, values)


def _subset(labels: np.ndarray, *, seed: int, fraction: float | None = None, shots: int | None = None,
            cap: int | None = None) -> np.ndarray:
    if cap is not None:
        return np.arange(len(labels)) if len(labels) <= cap else stratified_subset(labels, fraction=cap / len(labels), seed=seed)
    return stratified_subset(labels, fraction=fraction, shots=shots, seed=seed)


def ct_segmentation(results: Results, factories: dict, *, data_root: Path, seeds: list[int], epochs: int) -> None:
    from organfm.data.volumes import load_class_map
    from organfm.evaluation.segmentation import load_ct_segmentation_slices, split_slice_blocks

    task = load_task(REPO / "configs" / "tasks" / "totalseg_ct_seg.yaml", [f"data.root={data_root}"])
    s = task.segmentation
    class_map = load_class_map(task.data_path(task.data.class_map), task.data.class_map_key)
    images, masks, names = load_ct_segmentation_slices(task.data_path(task.data.source), task.data_path(task.data.label_map),
                                                       class_map=class_map, classes=s.classes, size=s.image_size,
                                                       window=tuple(s.window), min_foreground=s.min_foreground)
    parts = split_slice_blocks(len(images), block_size=s.block_size, fractions=s.fractions, gap=s.gap)
    train, val, test = ((images[p], masks[p]) for p in parts)
    print(f"ct-seg: {names[1:]}, slices {[len(p) for p in parts]}", flush=True)
    for model, make in factories.items():
        key = f"ct-organs|segmentation|{len(parts[0])} slices|{model}"
        if results.done(key):
            continue
        values: dict[str, list[float]] = {}
        t = time.time()
        for seed in seeds:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                out = finetune_segmentation(make, train, val, test, num_classes=len(names), epochs=epochs,
                                            batch_size=s.batch_size, lr=s.lr, weight_decay=s.weight_decay,
                                            patience=s.patience, seed=seed)
            values.setdefault("mean_dice", []).append(out["metrics"]["mean_dice"])
            values.setdefault("mean_iou", []).append(out["metrics"]["mean_iou"])
        print(f"{key}: {time.time() - t:.0f} s", flush=True)
        results.put(key, values)


def table(data: dict[str, dict[str, list[float]]], metrics: dict[str, str]) -> str:
    """Markdown: one row per (task, protocol, setting), scratch vs RaSD, the difference and RaSD's wins."""
    seen: list[str] = []
    for key in data:
        head = key.rsplit("|", 1)[0]
        if head not in seen:
            seen.append(head)
    lines = ["| task | protocol | setting | metric | scratch | RaSD | Δ (RaSD − scratch) | RaSD wins |",
             "|---|---|---|---|---|---|---|---|"]
    for head in seen:
        task, protocol, setting = head.split("|")
        a, b = data.get(f"{head}|scratch"), data.get(f"{head}|rasd")
        if a is None or b is None:
            continue
        metric = metrics.get(task, "accuracy")
        x, y = np.asarray(a[metric]), np.asarray(b[metric])
        n = min(len(x), len(y))
        diff = summarize(y[:n] - x[:n])
        wins = int((y[:n] > x[:n]).sum())
        lines.append(f"| {task} | {protocol} | {setting} | {metric} | {summarize(x)['formatted']} | "
                     f"{summarize(y)['formatted']} | {diff['mean']:+.3f} ± {diff['sd']:.3f} | {wins}/{n} |")
    return "\n".join(lines)


def write_docs(md: str, docs: Path) -> None:
    """Replace (or append) the "RaSD transfer" section of docs/results.md."""
    text = docs.read_text() if docs.is_file() else "# Results\n"
    start = text.find(SECTION)
    if start >= 0:
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + md.rstrip() + "\n" + (text[end:] if end >= 0 else "")
    else:
        text = text.rstrip() + "\n\n" + md.rstrip() + "\n"
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=800, help="RaSD pretraining steps (batch 8 at 64 px)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "rasd_transfer"))
    p.add_argument("--docs", default=str(REPO / "docs" / "results.md"), help="results page ('' to skip)")
    p.add_argument("--quick", action="store_true", help="tiny splits and few epochs (a smoke run, not a result)")
    p.add_argument("--skip", default="", help="comma list of parts to skip: mednist,pneumonia,ct")
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("ORGANFM_THREADS", "2")))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(range(args.seeds))
    skip = set(filter(None, args.skip.split(",")))
    data_root = Path(args.data).resolve()
    t0 = time.time()

    export = pretrain_rasd(out, steps=args.steps, seed=0)
    factories = model_factories(export)
    results = Results(out / "results.json")
    q = args.quick
    ft = dict(epochs=2 if q else 10, batch_size=32, lr=1e-3, weight_decay=0.05, patience=3)
    if "mednist" not in skip:
        classification_task(
            "mednist", "mednist.yaml", results, factories, data_root=data_root, seeds=seeds,
            limits={"train": 600 if q else 6000, "val": 120 if q else 300, "test": 240 if q else 600},
            fewshot=True, linear=False, finetune=ft,
            finetune_settings=[("1-shot", {"shots": 1}), ("5-shot", {"shots": 5}), ("10-shot", {"shots": 10}),
                               ("1%", {"fraction": 0.01}), ("10%", {"fraction": 0.1})])
    if "pneumonia" not in skip:
        classification_task(
            "pneumoniamnist", "pneumoniamnist.yaml", results, factories, data_root=data_root, seeds=seeds,
            limits={"train": 300 if q else None, "val": 100 if q else None, "test": 100 if q else None},
            fewshot=False, linear=True, finetune=ft, finetune_settings=[("1000 train", {"cap": 100 if q else 1000})])
    if "ct" not in skip:
        ct_segmentation(results, factories, data_root=data_root, seeds=seeds, epochs=3 if q else 30)

    command = "python benchmarks/rasd_transfer.py " + " ".join(argv if argv is not None else sys.argv[1:])
    contract = json.loads((export.parent / "backbone.json").read_text())
    md = "\n".join([
        SECTION, "",
        f"Synthetic-only pretraining (RaSD, `configs/rasd.yaml`: `{ARCH}`, {contract['step']} steps of batch 8 at "
        "64 px, K = 8 labels; no real image) against the same architecture from a random initialisation "
        f"(\"scratch\"), {len(seeds)} seeds, mean ± sd; Δ is the mean paired difference, \"RaSD wins\" counts the "
        "seeds where RaSD scores higher. Linear probes use frozen features (scratch: one random init); "
        "fine-tuning trains the whole network (scratch: a new init per seed). Metrics: MedNIST accuracy "
        "(6 classes), PneumoniaMNIST AUC, CT mean Dice over 5 organs. CPU run, "
        f"{(time.time() - t0) / 60:.0f} min.",
        "",
        table(results.data, {"mednist": "accuracy", "pneumoniamnist": "auc", "ct-organs": "mean_dice"}),
        "",
        "Caveats: MedNIST has no patient ids (a random split can share a patient across splits); the "
        "PneumoniaMNIST copy has a modified train split (not comparable with published numbers); the CT task "
        "uses one scan (slice blocks of the same patient) and TotalSegmentator predictions as masks. "
        "Splits are the evaluation suite's (`configs/tasks/*.yaml`), capped for a CPU budget.",
        "", f"Regenerate: `{command.strip()}`", ""])
    (out / "results.md").write_text(md)
    if args.docs and not q:
        write_docs(md, Path(args.docs))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
