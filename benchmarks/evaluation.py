"""Evaluation benchmark: feature extraction images/s, blocked kNN over 50k x 50k, 10-seed few-shot on MedNIST.

Not a test: it prints a table and writes ``benchmarks/results/evaluation.json`` and ``.md``.

    python benchmarks/evaluation.py                       # CPU sizes (as below)
    python benchmarks/evaluation.py --knn-n 100000        # the issue's 100k x 100k kNN
    python benchmarks/evaluation.py --device cuda

Cases:
    features: ``extract_features`` on real MedNIST images (random init; weights do not change the speed);
    knn: ``knn_classify`` with N train = M test random features (E=384, 6 classes, k=(10, 20)); its
        working memory is block_size x (chunk_size + k) floats, whatever N is;
    fewshot: the MedNIST task's linear few-shot protocol (1/10/20/50%, 1/5/10 shots, 10 seeds each) on
        frozen features of a random convnext_atto, timed after extraction.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def bench_features(data, device: str, cases: list[tuple[str, int]], n: int) -> list[dict]:
    from organfm.features.extraction import extract_features
    from organfm.features.encoders import load_encoder

    rows = []
    for arch, size in cases:
        images = torch.nn.functional.interpolate(data.splits["train"].images[:n], size=(size, size), mode="bilinear",
                                                 antialias=True, align_corners=False)
        make, contract = load_encoder(f"random:{arch}", image_size=size)
        backbone = make()
        extract_features(backbone, images[:64], device=device)  # warm-up (allocator, cudnn autotune)
        t = time.perf_counter()
        extract_features(backbone, images, batch_size=256, device=device, mean=contract["mean"], std=contract["std"])
        seconds = time.perf_counter() - t
        rows.append({"case": "features", "arch": arch, "size": size, "images": len(images),
                     "seconds": round(seconds, 2), "images_per_s": round(len(images) / seconds, 1)})
        print(f"features {arch}@{size}: {rows[-1]['images_per_s']} images/s ({len(images)} images)", flush=True)
    return rows


def bench_knn(n: int, dim: int, device: str) -> dict:
    from organfm.evaluation.probes import knn_classify

    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(n, dim, generator=g), torch.randn(n, dim, generator=g)
    labels = torch.randint(0, 6, (n,), generator=g)
    block, chunk = 1024, 16384
    t = time.perf_counter()
    probs = knn_classify(train, labels, test, k=(10, 20), num_classes=6, block_size=block, chunk_size=chunk,
                         device=device)
    seconds = time.perf_counter() - t
    row = {"case": "knn", "n_train": n, "n_test": n, "dim": dim, "k": [10, 20], "seconds": round(seconds, 2),
           "queries_per_s": round(n / seconds, 1), "working_set_mb": round(block * (chunk + 20) * 4 / 2**20, 1),
           "full_matrix_gb": round(n * n * 4 / 2**30, 1), "rows_sum_to_1": bool(torch.allclose(
               probs[20].sum(1), torch.ones(n), atol=1e-4))}
    print(f"knn {n} x {n} (E={dim}): {seconds:.1f} s, {row['queries_per_s']} queries/s; working set "
          f"{row['working_set_mb']} MB vs {row['full_matrix_gb']} GB for the full similarity matrix", flush=True)
    return row


def bench_fewshot(data, device: str, seeds: int) -> dict:
    from organfm.features.extraction import extract_features
    from organfm.evaluation.protocols.fewshot import run_few_shot
    from organfm.evaluation.probes import linear_probe
    from organfm.evaluation.metrics import classification_metrics
    from organfm.features.encoders import load_encoder

    make, contract = load_encoder("random:convnext_atto", image_size=64)
    backbone = make()
    t = time.perf_counter()
    feats = {n: extract_features(backbone, s.images, device=device, mean=contract["mean"], std=contract["std"])
             for n, s in data.splits.items()}
    extract_s = time.perf_counter() - t
    tr, va, te = (data.splits[s] for s in ("train", "val", "test"))

    def evaluate(idx, seed):
        out = linear_probe(feats["train"][idx], tr.labels[idx], feats["val"], va.labels, feats["test"], seed=seed,
                           num_classes=len(data.class_names), device=device)
        m = classification_metrics(te.labels.numpy(), out["test_probs"].numpy())
        return {"accuracy": m["accuracy"], "auc": m["auc"]}

    t = time.perf_counter()
    summary = run_few_shot(tr.labels.numpy(), evaluate, seeds=range(seeds))
    seconds = time.perf_counter() - t
    fits = sum(len(s["seeds"]) for s in summary.values())
    row = {"case": "fewshot", "model": "random:convnext_atto@64", "train": len(tr), "val": len(va), "test": len(te),
           "seeds": seeds, "fits": fits, "extract_seconds": round(extract_s, 1), "seconds": round(seconds, 1),
           "seconds_per_fit": round(seconds / fits, 2),
           "accuracy": {name: s["metrics"]["accuracy"]["formatted"] for name, s in summary.items()}}
    print(f"fewshot linear, {seeds} seeds x {len(summary)} settings on MedNIST: {seconds:.1f} s "
          f"({row['seconds_per_fit']} s per fit); accuracy {row['accuracy']}", flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--knn-n", type=int, default=50_000)
    parser.add_argument("--knn-dim", type=int, default=384)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--feature-images", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-root", default=os.environ.get("ORGANFM_DATA", str(ROOT.parent / "shared" / "data")))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from organfm.evaluation.task import load_task
    from organfm.evaluation.task_data import load_task_data

    t = time.perf_counter()
    task = load_task(ROOT / "configs" / "tasks" / "mednist.yaml", [f"data.root={args.data_root}"])
    data = load_task_data(task, {"train": task.data.max_train, "val": task.data.max_val, "test": task.data.max_test})
    load_s = time.perf_counter() - t
    print(f"MedNIST task data: {', '.join(f'{n} {len(s)}' for n, s in data.splits.items())} in {load_s:.1f} s",
          flush=True)
    rows = bench_features(data, args.device, [("resnet18", 32), ("convnext_atto", 64), ("test_convnext", 32)],
                          args.feature_images)
    rows.append(bench_knn(args.knn_n, args.knn_dim, args.device))
    rows.append(bench_fewshot(data, args.device, args.seeds))
    result = {"device": args.device, "threads": args.threads, "machine": platform.machine(),
              "python": platform.python_version(), "torch": torch.__version__, "data_load_seconds": round(load_s, 1),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "rows": rows}
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(result, indent=2))
    lines = ["# Evaluation benchmark", "", f"device {args.device}, {args.threads} threads, torch {torch.__version__}, "
             f"peak RSS {result['peak_rss_mb']} MB; MedNIST task data loaded in {load_s:.1f} s", "",
             "| case | setting | time (s) | throughput |", "|---|---|---|---|"]
    for r in rows:
        if r["case"] == "features":
            lines.append(f"| features | {r['arch']} @ {r['size']} px, {r['images']} images | {r['seconds']} | "
                         f"{r['images_per_s']} images/s |")
        elif r["case"] == "knn":
            lines.append(f"| kNN | {r['n_train']} x {r['n_test']}, E={r['dim']}, k=10,20 (working set "
                         f"{r['working_set_mb']} MB) | {r['seconds']} | {r['queries_per_s']} queries/s |")
        else:
            lines.append(f"| few-shot linear | MedNIST {r['train']}/{r['val']}/{r['test']}, {r['seeds']} seeds x 7 "
                         f"settings = {r['fits']} fits | {r['seconds']} | {r['seconds_per_fit']} s per fit |")
    fewshot = rows[-1]
    lines += ["", "Few-shot test accuracy (random convnext_atto, mean ± sd over seeds): "
              + ", ".join(f"{k} {v}" for k, v in fewshot["accuracy"].items()), ""]
    (out / "evaluation.md").write_text("\n".join(lines))
    print(f"wrote {out / 'evaluation.json'} and {out / 'evaluation.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
