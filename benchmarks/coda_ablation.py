"""Coda ablation on real data: both branches vs inter-only vs intra-only vs DINO vs SupCon vs random init.

Reproduces the *direction* of the Coda paper's Table 2 (both branches beat either alone), Table 1 (the
advantage is largest with little labelled data) and its t-SNE figure (organs form clusters), with
``organfm``'s own methods and evaluation protocols, on real data from ``--data`` (``../shared/data``):

1. Pretraining, one run per (arm, seed), all arms with the same backbone, steps, batch, augmentation and
   seeds, on the MedNIST *train* split (exact duplicates removed; the split is saved to
   ``<out>/mednist_split.csv`` and reused by every run and by the evaluation). Organ labels for the
   inter-organ branch (and SupCon) are the six MedNIST body-region classes. Arms: ``coda`` (both branches),
   ``inter`` (``method.use_intra=false``), ``intra`` (``method.use_inter=false``), ``dino``, ``supcon``;
   ``random`` (a random initialisation per seed) is the floor.
2. Evaluation, 10 runs per (arm, task); run ``d`` uses pretraining seed ``d mod P`` and downstream seed
   ``d``, so the reported sd holds both sources of variance:
   - MedNIST few-shot (1-shot, 5-shot, 1 %, 10 % of the train pool): linear probe on frozen features;
   - PneumoniaMNIST: linear probe on all training images and on 1/10/20/50 %, fine-tuning on 1/10/20/50 %;
   - organ clusters of CT organ crops (TotalSegmentator example): leave-one-out kNN organ accuracy, NMI,
     and a t-SNE map per arm;
   - CT organ segmentation (5 organs, axial slices): U-Net with the pretrained encoder, Dice.
3. Report: ``<out>/results.json`` (every value of every run), ``<out>/results.md`` and the
   block of ``docs/results.md`` named after ``<out>``, with figures under ``docs/figures/``
   (``coda_ablation_report.py``). ``--report-only`` rewrites them from ``results.json`` alone.

Everything is cached: a rerun resumes an interrupted pretraining run from its last checkpoint, reuses
finished exports and skips evaluation cells already in ``results.json``; ``--protocols`` and
``--pretrain-only`` split the work across calls (e.g. a GPU lease too short for all of it).

    python benchmarks/coda_ablation.py --scale cpu        # < 90 min on 2 CPU cores; writes docs/results.md
    python benchmarks/coda_ablation.py --scale gpu        # the paper's settings (ConvNeXt-B, 224 px, 12 x 96)
    python benchmarks/coda_ablation.py --scale gpu-short  # the paper's model for one ~10-minute GPU lease
    python benchmarks/coda_ablation.py --scale cpu --quick --out /tmp/ablation   # a smoke run, not a result
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import math
import os
import platform
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
sys.path.insert(0, str(REPO / "benchmarks"))

from organfm.evaluation import (cluster_scores, embed_2d, extract_features,  # noqa: E402
                                finetune_classification, finetune_segmentation, linear_probe, load_encoder,
                                load_task, stratified_subset)
from organfm.evaluation.features import normalize_images  # noqa: E402
from organfm.evaluation.metrics import classification_metrics  # noqa: E402

# arm -> (method, method overrides); "random" is the floor and has no pretraining
ARMS: dict[str, tuple[str, list[str]]] = {
    "coda": ("coda", []),
    "inter": ("coda", ["method.use_intra=false"]),
    "intra": ("coda", ["method.use_inter=false"]),
    "dino": ("dino", []),
    "supcon": ("supcon", []),
}
ALL_ARMS = (*ARMS, "random")
# what the paper leaves open, run on request (--arms): Eq. 1's negatives-only denominator, and a teacher
# EMA 10x slower than the scale's (1 - m becomes (1 - m) / 10; see arm_overrides)
OPTIONAL_ARMS: dict[str, tuple[str, list[str]]] = {
    "coda-neg": ("coda", ["method.supcon_denominator=negatives"]),
    "coda-ema": ("coda", []),
}
# evaluation-only diagnostics: the STUDENT backbone of an arm's runs (those arms transfer their EMA teacher,
# as the paper does; at a short budget the teacher can lag the student)
STUDENT_ARMS = {f"{a}-student": a for a in ("coda", "inter", "intra", "dino")}
VALID_ARMS = (*ALL_ARMS, *OPTIONAL_ARMS, *STUDENT_ARMS)
MEDNIST = "mednist/MedNIST.tar.gz"
FRACTIONS = (0.01, 0.1, 0.2, 0.5)  # the paper's few-shot fractions of the labelled training data
PROTOCOLS = ("mednist-linear", "pneumonia-linear", "clusters", "pneumonia-finetune", "segmentation")


@dataclasses.dataclass(frozen=True)
class Scale:
    """Everything a scale fixes; every arm shares it."""

    backbone: str
    steps: int                 # pretraining steps per run
    batch_size: int
    global_size: int
    local_size: int
    num_local_views: int
    out_dim: int               # DINO-head prototypes (Coda, DINO)
    hidden_dim: int
    lr: float
    momentum: float            # teacher EMA start (cosine to 1)
    num_workers: int
    mednist_size: int          # evaluation input sizes
    pneumonia_size: int
    ct_size: int
    seg_size: int
    mednist_limits: tuple[int | None, int | None, int | None]   # train pool, val, test
    finetune_val: int | None   # PneumoniaMNIST val images used for early stopping
    finetune_steps: int        # optimiser steps per fine-tune (epochs = ceil(steps / steps per epoch))
    finetune_max_epochs: int
    finetune_batch: int
    seg_epochs: int
    probe_epochs: int = 100    # linear-probe passes over the training features
    pretrain_seeds: int = 3
    runs: int = 10
    device: str = "cpu"
    protocols: tuple[str, ...] = PROTOCOLS  # which evaluation protocols run (a short GPU lease runs a subset)


SCALES = {
    # 2 CPU cores, 90 min in all (measured here: a Coda step of batch 32 costs ~2.6 s, 2.25 s of it compute;
    # a downstream run of every protocol ~50 s). convnext_atto (the smallest and, on a CPU, the fastest
    # ConvNeXt; the paper's family) at 64 px (MedNIST's own size) with the paper's 12 local crops at 32 px
    # (ConvNeXt's minimum; 96/224 of the global size rounds up to it). 64 steps of batch 32: 2,048 images per
    # run, 15 runs in ~32 min, which leaves ~50 min for 6 arms x 10 runs x every protocol.
    # Teacher EMA 0.9 (not DINO's 0.996): over 64 steps a 0.996 teacher keeps ~88 % of its random init
    # (prod m_t ~ exp(-(1 - m0) T / 2)); 0.9 averages the last ~10 steps.
    # Fine-tuning ~12 steps per fine-tune (at most 8 epochs), U-Net 6 epochs, linear probes 50 epochs: the most
    # the budget holds (~7.5 min per arm), the same for every arm.
    "cpu": Scale(backbone="convnext_atto", steps=64, batch_size=32, global_size=64, local_size=32,
                 num_local_views=12, out_dim=4096, hidden_dim=512, lr=5e-4, momentum=0.9, num_workers=1,
                 mednist_size=64, pneumonia_size=32, ct_size=32, seg_size=64,
                 mednist_limits=(5000, 200, 600), finetune_val=200, finetune_steps=12,
                 finetune_max_epochs=8, finetune_batch=64, seg_epochs=6, probe_epochs=50),
    # The paper's settings where they fit one GPU: ConvNeXt-B, 224 px, 12 x 96 px crops, 65,536-way heads,
    # batch 64, lr 1.25e-4; full evaluation splits.
    "gpu": Scale(backbone="convnext_base", steps=5000, batch_size=64, global_size=224, local_size=96,
                 num_local_views=12, out_dim=65536, hidden_dim=2048, lr=1.25e-4, momentum=0.996, num_workers=8,
                 mednist_size=224, pneumonia_size=224, ct_size=224, seg_size=224,
                 mednist_limits=(None, None, None), finetune_val=None, finetune_steps=600,
                 finetune_max_epochs=50, finetune_batch=32, seg_epochs=50, device="cuda"),
    # What one 15-minute GPU lease holds: the paper's model, resolution, crops and heads, but 100 steps and one
    # pretraining seed per arm, and only the frozen-feature protocols (a ConvNeXt-B fine-tune per run and
    # fraction does not fit). Teacher EMA 0.99: over 100 steps a 0.996 teacher stays ~4/5 random (see "cpu").
    "gpu-short": Scale(backbone="convnext_base", steps=100, batch_size=64, global_size=224, local_size=96,
                       num_local_views=12, out_dim=65536, hidden_dim=2048, lr=1.25e-4, momentum=0.99,
                       num_workers=12, mednist_size=224, pneumonia_size=224, ct_size=224, seg_size=224,
                       mednist_limits=(6000, 300, 1000), finetune_val=None, finetune_steps=600,
                       finetune_max_epochs=50, finetune_batch=32, seg_epochs=50, pretrain_seeds=1, device="cuda",
                       protocols=("pneumonia-linear", "clusters", "mednist-linear")),
}


def quick(scale: Scale) -> Scale:
    """A smoke-test version of ``scale`` (minutes on a CPU; numbers mean nothing)."""
    return dataclasses.replace(scale, steps=4, pretrain_seeds=2, runs=2, mednist_limits=(600, 60, 120),
                               finetune_val=60, finetune_steps=4, finetune_max_epochs=2, seg_epochs=2)


# ---------------------------------------------------------------- pretraining


def save_mednist_split(data_root: Path, out: Path) -> tuple[Path, int]:
    """Index MedNIST once (duplicates removed), save its train/val/test split; return (file, train size)."""
    from organfm.data import build_dataset

    path = out / "mednist_split.csv"
    dataset = build_dataset(str(data_root / MEDNIST), split=None, dedup=True, split_seed=0,
                            split_file=str(path) if path.is_file() else None)
    if not path.is_file():
        dataset.save_split(path)
    return path, sum(r.split == "train" for r in dataset.records)


def arm_overrides(arm: str, scale: Scale) -> tuple[str, list[str]]:
    """The method of ``arm`` and the overrides that set it apart from the other arms."""
    method, extra = {**ARMS, **OPTIONAL_ARMS}[arm]
    if arm == "coda-ema":
        extra = [f"teacher.momentum={1 - (1 - scale.momentum) / 10:.6g}"]
    return method, extra


def pretrain_overrides(arm: str, seed: int, scale: Scale, *, source: Path, split_file: Path, num_train: int,
                       run: Path) -> tuple[str, list[str]]:
    """The method and ``key=value`` overrides of one pretraining run."""
    method, extra = arm_overrides(arm, scale)
    horizon = scale.steps / (num_train // scale.batch_size)  # schedules end exactly at the last step
    o = [f"data.source={source}", "data.split=train", f"data.split_file={split_file}",
         f"backbone.name={scale.backbone}", f"views.global_size={scale.global_size}",
         f"views.local_size={scale.local_size}", f"optim.lr={scale.lr}", f"optim.warmup_epochs={0.1 * horizon}",
         f"optim.freeze_last_layer_epochs={0.05 * horizon}", f"teacher.momentum={scale.momentum}",
         f"teacher.warmup_temp_epochs={0.3 * horizon}", f"trainer.epochs={horizon}",
         f"trainer.max_steps={scale.steps}", f"trainer.batch_size={scale.batch_size}", f"trainer.seed={seed}",
         f"trainer.out_dir={run}", f"trainer.num_workers={scale.num_workers}", "trainer.progress=false",
         f"trainer.checkpoint_every={max(1, scale.steps // 4)}", f"trainer.log_every={max(1, scale.steps // 8)}"]
    if method != "supcon":  # SupCon sees the two global views only (its default: no local crops)
        o += [f"views.num_local_views={scale.num_local_views}", f"method.out_dim={scale.out_dim}",
              f"method.hidden_dim={scale.hidden_dim}"]
    return method, o + extra


def pretrain_arm(arm: str, seed: int, scale: Scale, *, run: Path, **kwargs: Any) -> tuple[Path, float]:
    """Pretrain (or resume, or reuse) one run; return its run folder and the seconds this call spent."""
    from organfm.config import load_config
    from organfm.engine.checkpoint import latest_checkpoint, load_checkpoint
    from organfm.engine.pretrain import pretrain

    method, overrides = pretrain_overrides(arm, seed, scale, run=run, **kwargs)
    recipe, stamp = {"method": method, "overrides": overrides}, run / "bench_recipe.json"
    if stamp.is_file() and json.loads(stamp.read_text()) != recipe:
        raise RuntimeError(f"{run} was pretrained with another recipe than {arm} at this scale ({stamp}); "
                           "delete it or pass another --out")
    contract = run / "export" / "backbone.json"
    if contract.is_file() and json.loads(contract.read_text())["step"] >= scale.steps:
        return run, 0.0
    t = time.time()
    run.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(recipe, indent=1))
    last = latest_checkpoint(run)
    if last is not None and load_checkpoint(last)["step"] < scale.steps:
        summary = pretrain(load_config(None, run / "config.yaml", []), resume_dir=run)
    else:
        summary = pretrain(load_config(method, None, overrides))
    print(f"[{arm} seed {seed}] " + summary.line(method, scale.backbone), flush=True)
    return run, time.time() - t


# ---------------------------------------------------------------- evaluation data


class Results:
    """``{"task|protocol|setting|arm": {metric: [value per run]}}``, saved after every cell."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
        self.cells: dict[str, dict[str, list[float]]] = self.data.setdefault("cells", {})

    def done(self, key: str) -> bool:
        return key in self.cells

    def put(self, key: str, values: dict[str, list[float]]) -> None:
        self.cells[key] = values
        self.save()
        print(f"  {key}: " + ", ".join(f"{m} {np.mean(v):.3f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.3f}"
                                       for m, v in values.items()), flush=True)

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)


def load_eval_data(data_root: Path, split_file: Path, num_train: int, scale: Scale) -> dict[str, Any]:
    """The evaluation splits that ``scale.protocols`` need, as tensors in [0, 1], read once for all arms.

    ``num_train`` is the size of the whole MedNIST train split (its 1 % and 10 % are of that, not of the pool).
    """
    from organfm.data.volumes import load_class_map
    from organfm.evaluation.segmentation import load_ct_segmentation_slices, split_slice_blocks
    from organfm.evaluation.task_data import load_task_data

    def task(name: str, size: int, extra: list[str] = ()) -> Any:
        return load_task(REPO / "configs" / "tasks" / f"{name}.yaml",
                         [f"data.root={data_root}", f"data.image_size={size}", *extra])

    want, out = set(scale.protocols), {}
    if "mednist-linear" in want:
        tr, va, te = scale.mednist_limits
        out["mednist"] = load_task_data(task("mednist", scale.mednist_size, [f"data.split_file={split_file}"]),
                                        {"train": tr, "val": va, "test": te})
        out["mednist_train_total"] = num_train
    if want & {"pneumonia-linear", "pneumonia-finetune"}:
        out["pneumonia"] = load_task_data(task("pneumoniamnist", scale.pneumonia_size),
                                          {"train": None, "val": None, "test": None})
        val = out["pneumonia"].splits["val"]
        keep = np.arange(len(val.labels)) if scale.finetune_val is None or scale.finetune_val >= len(val.labels) \
            else stratified_subset(val.labels.numpy(), fraction=scale.finetune_val / len(val.labels), seed=0)
        out["pneumonia_ft_val"] = (val.images[keep], val.labels[keep])
    if "clusters" in want:
        out["ct_organs"] = load_task_data(task("totalseg_ct_organs", scale.ct_size), {"all": None})
    if "segmentation" in want:
        seg = task("totalseg_ct_seg", scale.seg_size)
        s = seg.segmentation
        images, masks, names = load_ct_segmentation_slices(
            seg.data_path(seg.data.source), seg.data_path(seg.data.label_map),
            class_map=load_class_map(seg.data_path(seg.data.class_map), seg.data.class_map_key), classes=s.classes,
            size=scale.seg_size, window=tuple(s.window), min_foreground=s.min_foreground)
        parts = split_slice_blocks(len(images), block_size=s.block_size, fractions=s.fractions, gap=s.gap)
        out["ct_seg"] = {"splits": [(images[p], masks[p]) for p in parts], "classes": names,
                         "hparams": {"batch_size": s.batch_size, "lr": s.lr, "weight_decay": s.weight_decay}}
    return out


def check_no_leak(split_file: Path, mednist: Any) -> None:
    """The MedNIST images evaluated as test were never in the pretraining (train) split."""
    with open(split_file, newline="") as f:
        train = {row["key"] for row in csv.DictReader(f) if row["split"] == "train"}
    leaked = train & {r.key for r in mednist.splits["test"].records}
    if leaked:
        raise RuntimeError(f"{len(leaked)} MedNIST test images are in the pretraining split {split_file}")


# ---------------------------------------------------------------- evaluation


def probe(feats: dict[str, torch.Tensor], data: Any, idx: np.ndarray | None, seed: int,
          device: str = "cpu", epochs: int = 100) -> dict[str, float]:
    """Linear probe on the train features (all, or the subset ``idx``), chosen on val, scored on test."""
    tr, va, te = (data.splits[s] for s in ("train", "val", "test"))
    i = slice(None) if idx is None else torch.from_numpy(idx)
    out = linear_probe(feats["train"][i], tr.labels[i], feats["val"], va.labels, feats["test"],
                       num_classes=len(data.class_names), seed=seed, device=device, epochs=epochs)
    m = classification_metrics(te.labels.numpy(), out["test_probs"].numpy())
    return {"accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"], "auc": m["auc"]}


def finetune_epochs(n: int, scale: Scale) -> int:
    """Epochs giving about ``finetune_steps`` optimiser steps on ``n`` images (same budget per fraction)."""
    per_epoch = max(1, n // scale.finetune_batch)
    return int(min(scale.finetune_max_epochs, max(1, math.ceil(scale.finetune_steps / per_epoch))))


def evaluate_arm(arm: str, encoders: list[tuple[Callable[[], torch.nn.Module], dict]], data: dict[str, Any],
                 results: Results, scale: Scale) -> None:
    """Every task of one arm into ``results``; run ``d`` uses encoder ``d mod len(encoders)``."""
    runs = range(scale.runs)
    feats: dict[int, dict[str, dict[str, torch.Tensor]]] = {}

    def features(p: int) -> dict[str, dict[str, torch.Tensor]]:
        if p not in feats:
            make, c = encoders[p]
            enc = make()
            f = {task: {name: extract_features(enc, s.images, mean=c["mean"], std=c["std"], batch_size=256,
                                                 device=scale.device) for name, s in data[task].splits.items()}
                 for task in ("mednist", "pneumonia", "ct_organs") if task in data}
            feats[p] = f
        return feats[p]

    def cell(protocol: str, key: str, fn: Callable[[int, int], dict[str, float]]) -> None:
        if protocol not in scale.protocols or results.done(key):
            return
        values: dict[str, list[float]] = {}
        t = time.time()
        for d in runs:
            for m, v in fn(d % len(encoders), d).items():
                values.setdefault(m, []).append(float(v))
        results.data.setdefault("cell_seconds", {})[key] = round(time.time() - t, 1)  # features included
        results.put(key, values)

    mn, pn = data.get("mednist"), data.get("pneumonia")
    if mn is not None:
        # 1 % and 10 % are of the whole train split, drawn (stratified) from the evaluated pool of it
        pool = mn.splits["train"].labels.numpy()
        for name, kw in (("1-shot", {"shots": 1}), ("5-shot", {"shots": 5}),
                         ("1%", {"fraction": min(1.0, 0.01 * data["mednist_train_total"] / len(pool))}),
                         ("10%", {"fraction": min(1.0, 0.1 * data["mednist_train_total"] / len(pool))})):
            cell("mednist-linear", f"mednist|few-shot linear|{name}|{arm}",
                 lambda p, d, kw=kw: probe(features(p)["mednist"], mn, stratified_subset(pool, seed=d, **kw), d,
                                           scale.device, scale.probe_epochs))
    cell("pneumonia-linear", f"pneumonia|linear|100%|{arm}",
         lambda p, d: probe(features(p)["pneumonia"], pn, None, d, scale.device, scale.probe_epochs))
    for frac in FRACTIONS:
        cell("pneumonia-linear", f"pneumonia|linear|{frac:.0%}|{arm}", lambda p, d, frac=frac: probe(
            features(p)["pneumonia"], pn, stratified_subset(pn.splits["train"].labels.numpy(), fraction=frac, seed=d),
            d, scale.device, scale.probe_epochs))
    crops = data["ct_organs"].splits["all"] if "ct_organs" in data else None
    cell("clusters", f"ct-organs|clusters|crops|{arm}", lambda p, d: {
        k: v for k, v in cluster_scores(features(p)["ct_organs"]["all"], crops.labels, k=20, seed=d).items()
        if k in ("knn_accuracy", "nmi")})
    tsne = results.data.setdefault("tsne", {})
    if "clusters" in scale.protocols and arm not in tsne:  # the figure's map (first pretraining seed), kept
        tsne[arm] = embed_2d(features(0)["ct_organs"]["all"], method="tsne", seed=0).round(3).tolist()
        results.data["tsne_labels"] = crops.labels.tolist()
        results.data["tsne_names"] = list(data["ct_organs"].class_names)
        results.save()

    def norm(images: torch.Tensor, c: dict) -> torch.Tensor:
        return normalize_images(images, c["mean"], c["std"])

    train, test = (pn.splits["train"], pn.splits["test"]) if pn else (None, None)
    for frac in FRACTIONS:
        def finetune(p: int, d: int, frac: float = frac) -> dict[str, float]:
            make, c = encoders[p]
            idx = torch.from_numpy(stratified_subset(train.labels.numpy(), fraction=frac, seed=d))
            val = data["pneumonia_ft_val"]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                out = finetune_classification(
                    make, (norm(train.images[idx], c), train.labels[idx]), (norm(val[0], c), val[1]),
                    (norm(test.images, c), test.labels), num_classes=2, epochs=finetune_epochs(len(idx), scale),
                    batch_size=scale.finetune_batch, lr=1e-3, weight_decay=0.05, patience=5, seed=d,
                    device=scale.device, monitor="auc")
            return {"auc": out["metrics"]["auc"], "accuracy": out["metrics"]["accuracy"], "n_train": len(idx)}
        cell("pneumonia-finetune", f"pneumonia|fine-tune|{frac:.0%}|{arm}", finetune)

    if "ct_seg" in data:
        seg = data["ct_seg"]

        def segment(p: int, d: int) -> dict[str, float]:
            make, c = encoders[p]
            tr_, va_, te_ = ((norm(x, c), y) for x, y in seg["splits"])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                out = finetune_segmentation(make, tr_, va_, te_, num_classes=len(seg["classes"]),
                                            epochs=scale.seg_epochs, patience=5, seed=d, device=scale.device,
                                            **seg["hparams"])
            return {"mean_dice": out["metrics"]["mean_dice"], "mean_iou": out["metrics"]["mean_iou"]}
        cell("segmentation", f"ct-organs|U-Net segmentation|{len(seg['splits'][0][0])} slices|{arm}", segment)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Scale]:
    """The command line, and the scale it resolves to (with ``--quick``/``--steps``/... applied)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    p.add_argument("--data", default=None, help="folder holding mednist/, ... (default ../shared/data)")
    p.add_argument("--out", default=None, help="default benchmarks/results/coda_ablation-<scale>")
    p.add_argument("--docs", default=str(REPO / "docs" / "results.md"), help="results page ('' to skip)")
    p.add_argument("--arms", default=",".join(ALL_ARMS),
                   help="comma list of " + ",".join(VALID_ARMS) + " (default: all but the optional)")
    p.add_argument("--steps", type=int, default=None, help="override the scale's pretraining steps")
    p.add_argument("--pretrain-seeds", type=int, default=None, help="override the scale's pretraining seeds")
    p.add_argument("--protocols", default=None, help=f"comma list of {','.join(PROTOCOLS)} (default: the scale's)")
    p.add_argument("--quick", action="store_true", help="tiny everything: a smoke run, never a result")
    p.add_argument("--pretrain-only", action="store_true", help="stop after pretraining (evaluate in a later call)")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite the report from <out>/results.json alone (no data, no model)")
    args = p.parse_args(argv)
    scale = quick(SCALES[args.scale]) if args.quick else SCALES[args.scale]
    if args.steps:
        scale = dataclasses.replace(scale, steps=args.steps)
    if args.pretrain_seeds:
        scale = dataclasses.replace(scale, pretrain_seeds=args.pretrain_seeds)
    if args.protocols:
        protocols = tuple(x for x in args.protocols.split(",") if x)
        if set(protocols) - set(PROTOCOLS):
            p.error(f"unknown protocols {sorted(set(protocols) - set(PROTOCOLS))}; valid: {', '.join(PROTOCOLS)}")
        scale = dataclasses.replace(scale, protocols=protocols)
    args.arms = [a for a in args.arms.split(",") if a]
    if set(args.arms) - set(VALID_ARMS):
        p.error(f"unknown arms {sorted(set(args.arms) - set(VALID_ARMS))}; valid: {', '.join(VALID_ARMS)}")
    if not args.report_only and not (data_root(args) / MEDNIST).is_file():
        p.error(f"{data_root(args) / MEDNIST} not found: pass --data pointing at the folder that holds mednist/")
    return args, scale


def data_root(args: argparse.Namespace) -> Path:
    return Path(args.data or REPO.parent / "shared" / "data").resolve()


def command_line(args: argparse.Namespace) -> str:
    """The command that repeats this call's work (paths as given, flags only where not the default)."""
    words = ["python benchmarks/coda_ablation.py", f"--scale {args.scale}"]
    words += [f"--{k.replace('_', '-')} {v}" for k, v in (("data", args.data), ("out", args.out), ("steps", args.steps),
                                                         ("pretrain_seeds", args.pretrain_seeds),
                                                         ("protocols", args.protocols)) if v]
    if args.arms != list(ALL_ARMS):
        words.append(f"--arms {','.join(args.arms)}")
    return " ".join(words + ["--quick"] * args.quick)


def legacy_command(data: dict[str, Any]) -> str:
    """The command of results written before calls were recorded: the scale's own, with its protocol subset."""
    s = data["scale"]
    command = f"python benchmarks/coda_ablation.py --scale {s['name']}" + " --quick" * s["quick"]
    if tuple(s["protocols"]) != SCALES[s["name"]].protocols:
        command += f" --protocols {','.join(s['protocols'])}"
    return command


def main(argv: list[str] | None = None) -> int:
    args, scale = parse_args(argv)
    out = Path(args.out or REPO / "benchmarks" / "results" / f"coda_ablation-{args.scale}").resolve()
    results = Results(out / "results.json")
    if args.report_only:
        if not results.cells:
            sys.exit(f"{out / 'results.json'} holds no results to report")
        report(results.data, out, args)
        return 0
    if scale.device == "cpu":
        torch.set_num_threads(int(os.environ.get("ORGANFM_THREADS", "2")))
    out.mkdir(parents=True, exist_ok=True)
    timing = results.data.setdefault("seconds", {})
    done = set(results.data.get("scale", {}).get("protocols", ()))  # protocols of earlier calls stay listed
    results.data["scale"] = dict(dataclasses.asdict(scale), name=args.scale, quick=args.quick,
                                 protocols=[x for x in PROTOCOLS if x in done | set(scale.protocols)])
    results.data["device"] = (torch.cuda.get_device_name() if scale.device == "cuda" else
                              f"{platform.machine()} CPU, {torch.get_num_threads()} threads")
    commands = results.data.setdefault("commands", [legacy_command(results.data)] if results.cells else [])
    if command_line(args) not in commands:
        commands.append(command_line(args))

    t = time.time()
    root = data_root(args)
    split_file, num_train = save_mednist_split(root, out)
    # the split file stays out of git (58k rows); its hash pins the split every number was computed on
    results.data["mednist_split"] = {"sha256": hashlib.sha256(split_file.read_bytes()).hexdigest(),
                                     "train": num_train}
    # a student arm evaluates its base arm's runs: pretrain those (once) instead
    for arm in dict.fromkeys(STUDENT_ARMS.get(a, a) for a in args.arms):
        for seed in range(scale.pretrain_seeds if arm != "random" else 0):
            _, spent = pretrain_arm(arm, seed, scale, run=out / "pretrain" / f"{arm}-s{seed}",
                                    source=root / MEDNIST, split_file=split_file, num_train=num_train)
            if spent:
                timing[f"pretrain {arm}-s{seed}"] = round(spent, 1)
                results.save()
    print(f"pretraining: {time.time() - t:.0f} s this call", flush=True)
    results.save()
    if args.pretrain_only:
        return 0

    t = time.time()
    data = load_eval_data(root, split_file, num_train, scale)
    if "mednist" in data:
        check_no_leak(split_file, data["mednist"])
    for arm in args.arms:
        t_arm = time.time()
        encoders = encoders_of(arm, out, scale)
        print(f"evaluating {arm} ({len(encoders)} encoders, {scale.runs} runs)", flush=True)
        evaluate_arm(arm, encoders, data, results, scale)
        timing[f"evaluate {arm}"] = round(timing.get(f"evaluate {arm}", 0.0) + time.time() - t_arm, 1)
        results.save()
    print(f"evaluation: {time.time() - t:.0f} s this call", flush=True)
    report(results.data, out, args)
    return 0


def report(data: dict[str, Any], out: Path, args: argparse.Namespace) -> None:
    """Write the report of every cell in ``data`` (also those of earlier calls)."""
    from coda_ablation_report import write_report

    commands = data.get("commands") or [legacy_command(data)]
    write_report(data, out=out, docs=Path(args.docs) if args.docs and not args.quick else None,
                 command=" && ".join(commands))


def encoders_of(arm: str, out: Path, scale: Scale) -> list[tuple[Callable[[], torch.nn.Module], dict]]:
    """``load_encoder`` of each pretraining seed's run (``random``: a random init per seed; ``<arm>-student``:
    the student backbone of ``<arm>``'s runs, exported once to ``<run>/export-student``)."""
    from organfm.engine.checkpoint import export_backbone

    if arm == "random":
        return [load_encoder(f"random:{scale.backbone}", seed=s) for s in range(scale.pretrain_seeds)]
    runs = [out / "pretrain" / f"{STUDENT_ARMS.get(arm, arm)}-s{s}" for s in range(scale.pretrain_seeds)]
    if arm not in STUDENT_ARMS:
        return [load_encoder(str(run)) for run in runs]
    for run in runs:
        if not (run / "export-student" / "backbone.json").is_file():
            export_backbone(run, out_dir=run / "export-student", network="student")
    return [load_encoder(str(run / "export-student")) for run in runs]


if __name__ == "__main__":
    sys.exit(main())
