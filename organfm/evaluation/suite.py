"""The evaluation suite: every chosen protocol for every model, on the same splits and seeds, one results folder.

This is the one place that reads a whole :class:`TaskConfig`; protocols get tensors and plain kwargs.
Order of work: read the task's data once; per model, extract (or load cached) features of each split
once; run the frozen protocols (kNN, linear probe, few-shot linear, clusters) on those tensors and the
trained ones (fine-tuning, few-shot fine-tuning, segmentation) on the images; then write
``results.json``, ``results.md``, the plots and ``report.html`` (``organfm.evaluation.report``).
"""
from __future__ import annotations

import platform
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from organfm.evaluation.clusters import cluster_scores, embed_2d
from organfm.evaluation.features import FeatureCache, extract_features, normalize_images
from organfm.evaluation.few_shot import run_few_shot, stratified_subset
from organfm.evaluation.knn import knn_classify
from organfm.evaluation.leakage import check_leakage
from organfm.evaluation.linear_probe import linear_probe
from organfm.evaluation.metrics import CLASSIFICATION_METRICS, classification_metrics, summarize
from organfm.evaluation.models import load_encoder
from organfm.evaluation.task import TaskConfig, task_to_dict
from organfm.evaluation.task_data import SplitData, TaskData, load_task_data, public_metadata

__all__ = ["evaluate_models"]

_CLASSIFICATION = ("knn", "linear", "fewshot", "finetune")


def evaluate_models(task: TaskConfig, models: Mapping[str, str], *,
                    log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run ``task.protocols`` for every model and write the results folder.

    Args:
        task: the resolved task config.
        models: name -> spec (run folder, export, ``.safetensors``, ``random:<arch>``, ``timm:<arch>:<file>``).
        log: progress lines (default: stderr).

    Returns:
        The results dict also written to ``<out_dir>/results.json``; ``results["out_dir"]`` is the folder.

    Raises:
        ValueError: bad specs or data, or train/test leakage without ``allow_leakage=true``.
    """
    from organfm.evaluation.report import write_report

    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    started = time.perf_counter()
    out_dir = Path(task.out_dir or Path("eval") / f"{task.name}-{datetime.now():%Y%m%d-%H%M%S}")
    out_dir.mkdir(parents=True, exist_ok=True)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if task.device == "auto" else task.device
    encoders = {name: load_encoder(spec, image_size=task.data.image_size, seed=task.seed)
                for name, spec in models.items()}
    results: dict[str, Any] = {
        "task": task_to_dict(task), "models": {n: _public_contract(c) for n, (_, c) in encoders.items()},
        "rows": [], "data": {}, "leakage": {}, "notes": [task.note] if task.note else [], "timing": {},
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "device": device},
    }
    protocols = list(task.protocols)
    data = _load_data(task, protocols)
    scatter: dict[str, Any] = {}
    embeddings: dict[str, Any] = {}
    if data is not None:
        results["data"] = data.summary
        if any(p in _CLASSIFICATION for p in protocols):
            results["leakage"] = check_leakage({n: s.records for n, s in data.splits.items()},
                                               allow=task.allow_leakage)
            if any(v for pair in results["leakage"].values() for v in pair.values()):
                results["notes"].append(f"allow_leakage=true: splits overlap {results['leakage']}")
        say(f"data: {', '.join(f'{n} {len(s)}' for n, s in data.splits.items())} images, "
            f"{len(data.class_names)} classes ({task.data.source})")
    cache = FeatureCache(task.cache_dir or out_dir / "cache")
    for name, (make_backbone, contract) in encoders.items():
        run = _ModelRun(name, make_backbone, contract, task, device, cache)
        if data is not None:
            results["rows"] += _frozen_and_finetuned(run, data, protocols, say, results["timing"])
            if "clusters" in protocols:
                t = time.perf_counter()
                rows, embeddings[name] = _clusters(run, data)
                results["rows"] += rows
                results["timing"][f"{name}/clusters"] = round(time.perf_counter() - t, 2)
                say(f"{name}: clusters {_brief(rows)}")
            if task.report.scatter_points > 0:
                scatter.setdefault("models", {})[name] = _scatter_coords(run, data, scatter)
        if "segmentation" in protocols:
            t = time.perf_counter()
            rows = _segmentation(run)
            results["rows"] += rows
            results["timing"][f"{name}/segmentation"] = round(time.perf_counter() - t, 2)
            say(f"{name}: segmentation {_brief(rows)}")
    results["timing"]["total"] = round(time.perf_counter() - started, 2)
    results["cache"] = {"dir": str(cache.root), "hits": cache.hits, "misses": cache.misses}
    results["out_dir"] = str(out_dir)
    write_report(results, out_dir, embeddings=embeddings, scatter=scatter)
    say(f"wrote {out_dir / 'results.json'}, {out_dir / 'results.md'} and {out_dir / 'report.html'}")
    return results


class _ModelRun:
    """One model within a task: its lazily built backbone and its cached features per split."""

    def __init__(self, name: str, make_backbone: Callable[[], nn.Module], contract: dict[str, Any],
                 task: TaskConfig, device: str, cache: FeatureCache) -> None:
        self.name, self.make_backbone, self.contract = name, make_backbone, contract
        self.task, self.device, self.cache = task, device, cache
        self.mean, self.std = contract["mean"], contract["std"]
        self._backbone: nn.Module | None = None
        self._features: dict[str, torch.Tensor] = {}

    def features(self, split: SplitData) -> torch.Tensor:
        """(N, E) features of ``split``, from the disk cache when the same model saw the same data."""
        if split.name not in self._features:
            key = FeatureCache.key(model=self.contract["model_hash"], data=split.identity,
                                   mean=self.mean, std=self.std)

            def extract() -> torch.Tensor:
                if self._backbone is None:
                    self._backbone = self.make_backbone()
                return extract_features(self._backbone, split.images, batch_size=self.task.batch_size,
                                        device=self.device, mean=self.mean, std=self.std)

            self._features[split.name] = self.cache.get_or_extract(key, extract)
        return self._features[split.name]

    def normalized(self, images: torch.Tensor) -> torch.Tensor:
        """Images scaled by this model's contract, for fine-tuning."""
        return normalize_images(images, self.mean, self.std)


def _load_data(task: TaskConfig, protocols: list[str]) -> TaskData | None:
    limits: dict[str, int | None] = {}
    if any(p in _CLASSIFICATION for p in protocols):
        limits = {"train": task.data.max_train, "val": task.data.max_val, "test": task.data.max_test}
    if "clusters" in protocols:
        split = task.clusters.split
        cap = task.clusters.max_points if split == "all" else limits.get(split, getattr(task.data, f"max_{split}"))
        limits.setdefault(split, cap)
    return load_task_data(task, limits) if limits else None


def _frozen_and_finetuned(run: _ModelRun, data: TaskData, protocols: list[str], say: Callable[[str], None],
                          timing: dict[str, float]) -> list[dict[str, Any]]:
    task, k = run.task, len(data.class_names)
    if not any(p in _CLASSIFICATION for p in protocols):
        return []
    train, val, test = data.splits["train"], data.splits["val"], data.splits["test"]
    t = time.perf_counter()
    f_train, f_val, f_test = run.features(train), run.features(val), run.features(test)
    timing[f"{run.name}/features"] = round(time.perf_counter() - t, 2)
    rows: list[dict[str, Any]] = []
    y_train, y_val, y_test = train.labels, val.labels, test.labels
    if "knn" in protocols:
        t = time.perf_counter()
        ks = [kk for kk in task.knn.k if kk <= len(f_train)]
        probs = knn_classify(f_train, y_train, f_test, k=ks, temperature=task.knn.temperature, num_classes=k,
                             device=run.device)
        new = [_row(run.name, "knn", f"k={kk}", _metrics(y_test, p)) for kk, p in probs.items()]
        rows += new
        timing[f"{run.name}/knn"] = round(time.perf_counter() - t, 2)
        say(f"{run.name}: knn {_brief(new)}")
    lin = task.linear
    lin_kwargs = dict(num_classes=k, lrs=lin.lrs, weight_decays=lin.weight_decays, epochs=lin.epochs,
                      batch_size=lin.batch_size, device=run.device)
    if "linear" in protocols:
        t = time.perf_counter()
        out = linear_probe(f_train, y_train, f_val, y_val, f_test, seed=task.seed, **lin_kwargs)
        row = _row(run.name, "linear", "grid", _metrics(y_test, out["test_probs"]),
                   chosen={"lr": out["lr"], "weight_decay": out["weight_decay"], "val_accuracy": out["val_accuracy"]})
        rows.append(row)
        timing[f"{run.name}/linear"] = round(time.perf_counter() - t, 2)
        say(f"{run.name}: linear {_brief([row])} (lr {out['lr']:g}, wd {out['weight_decay']:g})")
    ft = task.finetune
    ft_kwargs = dict(num_classes=k, epochs=ft.epochs, batch_size=ft.batch_size, lr=ft.lr,
                     weight_decay=ft.weight_decay, layer_decay=ft.layer_decay, patience=ft.patience,
                     augment=ft.augment, monitor=ft.monitor, device=run.device)
    if "fewshot" in protocols:
        fs = task.fewshot
        seeds = [task.seed + s for s in range(fs.seeds)]
        for method in fs.methods:
            t = time.perf_counter()
            if method == "linear":
                def evaluate(idx: np.ndarray, seed: int) -> dict[str, float]:
                    out = linear_probe(f_train[idx], y_train[idx], f_val, y_val, f_test, seed=seed, **lin_kwargs)
                    return _metric_values(y_test, out["test_probs"])
            else:
                images = (run.normalized(train.images), run.normalized(val.images), run.normalized(test.images))

                def evaluate(idx: np.ndarray, seed: int, images: tuple[torch.Tensor, ...] = images) -> dict[str, float]:
                    out = _finetune(run, (images[0][idx], y_train[idx]), (images[1], y_val), (images[2], y_test),
                                    seed=seed, **ft_kwargs)
                    return {m: out["metrics"][m] for m in CLASSIFICATION_METRICS}
            summary = run_few_shot(y_train.numpy(), evaluate, fractions=fs.fractions, shots=fs.shots, seeds=seeds)
            new = [_row(run.name, f"fewshot-{method}", setting, s["values"], n_train=s["n_train"])
                   for setting, s in summary.items()]
            rows += new
            timing[f"{run.name}/fewshot-{method}"] = round(time.perf_counter() - t, 2)
            say(f"{run.name}: fewshot-{method} {_brief(new)}")
    if "finetune" in protocols:
        t = time.perf_counter()
        idx = np.arange(len(y_train))
        if ft.max_train is not None and len(idx) > ft.max_train:
            idx = stratified_subset(y_train.numpy(), fraction=ft.max_train / len(idx), seed=task.seed)
        values: dict[str, list[float]] = {}
        epochs = []
        for s in range(ft.seeds):
            out = _finetune(run, (run.normalized(train.images[idx]), y_train[idx]),
                            (run.normalized(val.images), y_val), (run.normalized(test.images), y_test),
                            seed=task.seed + s, **ft_kwargs)
            for m in CLASSIFICATION_METRICS:
                values.setdefault(m, []).append(out["metrics"][m])
            epochs.append(out["best_epoch"])
        row = _row(run.name, "finetune", f"{len(idx)} train", values, best_epoch=epochs)
        rows.append(row)
        timing[f"{run.name}/finetune"] = round(time.perf_counter() - t, 2)
        say(f"{run.name}: finetune {_brief([row])}")
    return rows


def _finetune(run: _ModelRun, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
              test: tuple[torch.Tensor, torch.Tensor], **kwargs: Any) -> dict[str, Any]:
    from organfm.evaluation.finetune import finetune_classification

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tiny few-shot val/test splits: AUC skips are recorded anyway
        return finetune_classification(run.make_backbone, train, val, test, **kwargs)


def _clusters(run: _ModelRun, data: TaskData) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    task, c = run.task, run.task.clusters
    split = data.splits[c.split]
    feats = run.features(split)
    idx = np.arange(len(split))
    if len(idx) > c.max_points:
        idx = stratified_subset(split.labels.numpy(), fraction=c.max_points / len(idx), seed=task.seed)
    x, y = feats[idx], split.labels[idx]
    scores = cluster_scores(x, y, k=c.k, temperature=task.knn.temperature, seed=task.seed)
    maps = {method: embed_2d(x, method=method, seed=task.seed, perplexity=c.perplexity) for method in c.embeddings}
    meta = [public_metadata(split.records[i], int(split.labels[i]), data.class_names, split.name) for i in idx]
    colors = {col: [str(m.get(col, "")) for m in meta] for col in c.color_by}
    row = _row(run.name, "clusters", f"{split.name} ({len(idx)})", {m: [v] for m, v in scores.items()})
    return [row], {"maps": maps, "colors": colors}


def _scatter_coords(run: _ModelRun, data: TaskData, scatter: dict[str, Any]) -> list[list[float]]:
    """t-SNE coordinates of the report's scatter points; the points (and thumbnails) are chosen once."""
    task = run.task
    name = task.clusters.split if "clusters" in task.protocols else "test"
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


def _segmentation(run: _ModelRun) -> list[dict[str, Any]]:
    from organfm.data.volumes import load_class_map
    from organfm.evaluation.segmentation import finetune_segmentation, load_ct_segmentation_slices, split_slice_blocks

    task, s = run.task, run.task.segmentation
    image, label_map = task.data_path(s.image or task.data.source), task.data_path(s.label_map or task.data.label_map)
    if not image or not label_map:
        raise ValueError("segmentation needs segmentation.image (or data.source) and segmentation.label_map "
                         "(or data.label_map)")
    class_map = load_class_map(task.data_path(task.data.class_map), task.data.class_map_key) \
        if task.data.class_map else None
    images, masks, names = load_ct_segmentation_slices(image, label_map, class_map=class_map, classes=s.classes,
                                                       size=s.image_size, window=tuple(s.window),
                                                       min_foreground=s.min_foreground)
    parts = split_slice_blocks(len(images), block_size=s.block_size, fractions=s.fractions, gap=s.gap)
    x = run.normalized(images)
    train, val, test = ((x[p], masks[p]) for p in parts)
    values: dict[str, list[float]] = {}
    for seed in range(s.seeds):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # classes absent from a small test block: recorded below
            out = finetune_segmentation(run.make_backbone, train, val, test, num_classes=len(names), epochs=s.epochs,
                                        batch_size=s.batch_size, lr=s.lr, weight_decay=s.weight_decay,
                                        patience=s.patience, seed=task.seed + seed, device=run.device)
        m = out["metrics"]
        flat = {"mean_dice": m["mean_dice"], "mean_iou": m["mean_iou"]}
        for c in range(1, len(names)):
            flat[f"dice_{names[c]}"] = m["dice"].get(c, float("nan"))
            flat[f"iou_{names[c]}"] = m["iou"].get(c, float("nan"))
        for key, value in flat.items():
            values.setdefault(key, []).append(value)
    split_sizes = [int(len(p)) for p in parts]
    return [_row(run.name, "segmentation", f"{'/'.join(map(str, split_sizes))} slices", values,
                 classes=names[1:], slices=split_sizes)]


def _metric_values(y: torch.Tensor, probs: torch.Tensor) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = classification_metrics(y.numpy(), probs.numpy())
    return {m: out[m] for m in CLASSIFICATION_METRICS}


def _metrics(y: torch.Tensor, probs: torch.Tensor) -> dict[str, list[float]]:
    return {m: [v] for m, v in _metric_values(y, probs).items()}


def _row(model: str, protocol: str, setting: str, values: dict[str, list[float]], **extra: Any) -> dict[str, Any]:
    """One results row: per metric ``summarize(values)`` (mean, sd, n, 95% interval) and the raw values."""
    return {"model": model, "protocol": protocol, "setting": setting,
            "metrics": {m: summarize(v) for m, v in values.items()}, "values": values, **extra}


def _brief(rows: list[dict[str, Any]]) -> str:
    parts = []
    for row in rows:
        key = next((m for m in ("accuracy", "mean_dice", "knn_accuracy") if m in row["metrics"]), None)
        if key is not None:
            parts.append(f"{row['setting']}: {key} {row['metrics'][key]['formatted']}")
    return "; ".join(parts)


def _public_contract(contract: dict[str, Any]) -> dict[str, Any]:
    keep = ("architecture", "spec", "model_hash", "mean", "std", "input_size", "method", "num_features", "step",
            "intensity", "weights")
    return {k: contract[k] for k in keep if k in contract}
