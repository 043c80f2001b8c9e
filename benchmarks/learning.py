"""Does each method learn at the small scale? Every method's small recipe (``configs/small/<method>.yaml``),
two pretraining seeds each, on a 2-core CPU: the health verdict, the kNN monitor from step 0 to the end,
the wall time, and what the monitor itself costs.

    python benchmarks/learning.py                              # every method, seeds 0 and 1
    python benchmarks/learning.py --methods coda,triad --seeds 0
    python benchmarks/learning.py --report-only                # rebuild the page from the committed run files

Each (method, seed) pretrains through ``benchmarks/runs.py`` (reused when finished, resumed when interrupted)
and writes one committed run file, ``benchmarks/results/learning/runs/<method>-seed<k>.json``; the report
aggregates whatever run files exist, so the table fills up across sittings. Data: MedNIST for the 2D image
methods, AdrenalMNIST3D for Triad (both read from ``../shared/data``, or ``--data``), the embedded synthetic
subjects for Pan-FM and synthetic pairs for RaSD (whose monitor kNN runs on the embedded synthetic organs).
MMKD distils the small Coda and DINO runs of the same seed, which it pretrains first if they are missing.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from results_page import write_section  # noqa: E402
from runs import finished, pretrain_or_resume  # noqa: E402

METHODS = ("coda", "dino", "supcon", "imagetext", "mmkd", "rasd", "panfm", "triad")
OUT = HERE / "results" / "learning"
DOCS = HERE.parent / "docs" / "results.md"
MARKERS = ("<!-- learning:begin -->", "<!-- learning:end -->")
DEFAULT_INTERVAL = 100  # trainer.monitor_every's default, where the monitor's cost is stated
# the signal drawn for a method whose monitor batch has no labels (and shown beside kNN for every method)
FAMILY = {"coda": "teacher_entropy", "dino": "teacher_entropy", "panfm": "organ_entropy", "supcon": "alignment",
          "imagetext": "alignment", "mmkd": "alignment", "triad": "masked_loss", "rasd": "rasd_proto"}


def data_for(method: str, data_root: Path) -> tuple[str, list[str]]:
    """(a short name of the data, the overrides that select it)."""
    mednist = data_root / "mednist" / "MedNIST.tar.gz"
    adrenal = data_root / "medmnist" / "adrenalmnist3d.npz"
    if method in ("coda", "dino", "supcon", "imagetext", "mmkd") and mednist.is_file():
        return "MedNIST", [f"data={mednist}"]
    if method == "triad" and adrenal.is_file():
        return "AdrenalMNIST3D", [f"data={adrenal}"]
    if method == "panfm":
        return "synthetic subjects", []
    if method == "rasd":
        return "synthetic pairs (kNN: synthetic organs)", []
    return "synthetic organs", []


def recipe_steps(method: str) -> int:
    """The recipe's horizon: ``trainer.max_steps``, else epochs x steps per epoch."""
    from organfm.config import load_config

    tr = load_config(None, HERE.parent / "configs" / "small" / f"{method}.yaml").trainer
    return tr.max_steps or math.ceil(tr.epochs * tr.steps_per_epoch)


def run_dir(method: str, seed: int) -> Path:
    return OUT / "pretrain" / f"{method}-seed{seed}"


def overrides_for(method: str, seed: int, data_root: Path) -> tuple[str, list[str]]:
    name, data = data_for(method, data_root)
    extra = [f"trainer.seed={seed}", "trainer.progress=false", f"trainer.out_dir={run_dir(method, seed)}"]
    if method == "mmkd":  # teachers worth distilling: the small Coda and DINO runs of this seed
        extra.append(f"method.teachers=[coda={run_dir('coda', seed)},dino={run_dir('dino', seed)}]")
    return name, data + extra


def pretrain_one(method: str, seed: int, data_root: Path) -> dict[str, Any]:
    """Pretrain (or reuse) one small-recipe run and write its run file."""
    from organfm.config import load_config
    from organfm.monitor import read_health

    if method == "mmkd":
        for teacher in ("coda", "dino"):
            if not finished(run_dir(teacher, seed), recipe_steps(teacher)):
                pretrain_one(teacher, seed, data_root)
    data_name, overrides = overrides_for(method, seed, data_root)
    config = HERE.parent / "configs" / "small" / f"{method}.yaml"
    run = run_dir(method, seed)
    path = OUT / "runs" / f"{method}-seed{seed}.json"
    steps = recipe_steps(method)
    t0 = time.time()
    reused = finished(run, steps)
    if not reused:
        pretrain_or_resume(run, steps, lambda: load_config(None, config, overrides))
        if not finished(run, steps):  # stopped by a signal at a checkpoint: no run file for a partial run
            raise SystemExit(f"[{method} seed {seed}] stopped before step {steps}; run the same command to resume")
    wall = time.time() - t0
    health = read_health(run)
    if health is None:
        raise RuntimeError(f"{run} has no health.json: was it pretrained with trainer.monitor_every=0?")
    old = json.loads(path.read_text()) if path.is_file() else {}
    history = health["history"]
    measures = max(1, len(history))
    loop = _loop_seconds(history) or old.get("loop_seconds")
    monitor = health.get("monitor_seconds", 0.0)
    record = {
        "method": method, "seed": seed, "data": data_name, "steps": steps,
        "command": f"organfm pretrain --config configs/small/{method}.yaml " + " ".join(
            o for o in overrides if not o.startswith(("trainer.out_dir", "trainer.progress"))),
        "wall_minutes": old.get("wall_minutes") if reused and old else round(wall / 60, 2),
        "loop_seconds": loop, "monitor_seconds": monitor, "monitor_measures": measures,
        "verdict": health["verdict"], "reason": health["reason"], "next": health.get("next", []),
        "reference": health.get("reference"), "final": health.get("signals"),
        "history": [{k: r[k] for k in ("step", "knn", FAMILY[method], "distance", "embed_std_ratio", "rankme",
                                        "teacher_batch_entropy", "log_k", "mean_baseline_loss") if k in r}
                    for r in history],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    knn = _knn_text(record)
    print(f"[{method} seed {seed}] {record['verdict']}{knn}, {record['wall_minutes']} min", flush=True)
    return record


def _loop_seconds(history: list[dict[str, Any]]) -> float | None:
    """Seconds from the step-0 measurement to the last one (the training loop, monitor included)."""
    times = [h.get("time") for h in history]
    return round(times[-1] - times[0], 1) if len(times) > 1 and None not in (times[0], times[-1]) else None


def _knn_text(r: dict[str, Any]) -> str:
    ref, fin = r.get("reference") or {}, r.get("final") or {}
    return f" (kNN {ref['knn']:.3f} -> {fin['knn']:.3f})" if "knn" in ref and "knn" in fin else ""


def load_runs() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((OUT / "runs").glob("*.json"))]


def monitor_share(r: dict[str, Any], interval: int) -> float | None:
    """The monitor's cost as a share of training time at ``interval`` steps between measurements."""
    loop, mon, n = r.get("loop_seconds"), r.get("monitor_seconds"), r.get("monitor_measures") or 1
    if not loop or mon is None:
        return None
    step = max(loop - mon, 1e-9) / r["steps"]
    return (mon / n) / (interval * step)


def mean_sd(values: list[float]) -> str:
    if not values:
        return "–"
    m = sum(values) / len(values)
    if len(values) == 1:
        return f"{m:.3f}"
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
    return f"{m:.3f} ± {sd:.3f}"


def figure(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in METHODS if any(r["method"] == m for r in runs)]
    fig, axes = plt.subplots(2, len(methods), figsize=(2.6 * len(methods), 5.2), squeeze=False)
    for j, m in enumerate(methods):
        for r in (r for r in runs if r["method"] == m):
            for i, key in enumerate(("knn", FAMILY[m])):
                pts = [(h["step"], h[key]) for h in r["history"] if key in h]
                if pts:
                    axes[i, j].plot(*zip(*pts), marker="o", ms=2, label=f"seed {r['seed']} ({r['verdict']})")
            if m == "triad":
                base = [(h["step"], h["mean_baseline_loss"]) for h in r["history"] if "mean_baseline_loss" in h]
                if base:
                    axes[1, j].plot(*zip(*base), ls="--", color="grey", lw=1)
            if FAMILY[m] == "teacher_entropy" and r["history"] and "log_k" in r["history"][0]:
                axes[1, j].axhline(r["history"][0]["log_k"], ls="--", color="grey", lw=1)
        axes[0, j].set_title(m, fontsize=10)
        axes[0, j].set_ylabel("monitor kNN" if j == 0 else "", fontsize=8)
        axes[1, j].set_ylabel(FAMILY[m], fontsize=8)
        for i in range(2):
            axes[i, j].tick_params(labelsize=7)
            axes[i, j].set_xlabel("step", fontsize=7)
        axes[0, j].legend(fontsize=6)
    fig.suptitle("Small recipes on 2 CPU cores: kNN monitor (top) and each family's signal (bottom; dashed: ln K, "
                 "or the per-volume-mean baseline for Triad)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def report(runs: list[dict[str, Any]]) -> str:
    rows = ["| method | data | pretraining runs | final verdicts | kNN step 0 → end (mean ± sd) | "
            "family signal step 0 → end | minutes per run | monitor cost at the default interval (100) |",
            "|---|---|---|---|---|---|---|---|"]
    for m in METHODS:
        rs = [r for r in runs if r["method"] == m]
        if not rs:
            continue
        verdicts = ", ".join(f"{r['seed']}: {r['verdict']}" for r in rs)
        k0 = [r["reference"]["knn"] for r in rs if "knn" in (r.get("reference") or {})]
        k1 = [r["final"]["knn"] for r in rs if "knn" in (r.get("final") or {})]
        key = FAMILY[m]
        f0 = [r["reference"][key] for r in rs if key in (r.get("reference") or {})]
        f1 = [r["final"][key] for r in rs if key in (r.get("final") or {})]
        shares = [s for s in (monitor_share(r, DEFAULT_INTERVAL) for r in rs) if s is not None]
        share = f"{100 * max(shares):.1f} % (worst run)" if shares else "–"
        knn = f"{mean_sd(k0)} → {mean_sd(k1)}" if k0 else "no labels"
        rows.append(f"| {m} | {rs[0]['data']} | n = {len(rs)} | {verdicts} | {knn} | {key}: {mean_sd(f0)} → "
                    f"{mean_sd(f1)} | {mean_sd([r['wall_minutes'] for r in rs])} | {share} |")
    not_learning = [f"- {r['method']} seed {r['seed']}: **{r['verdict']}** — {r['reason']}"
                    for r in runs if r["verdict"] != "learning"]
    body = ["## Does each method learn at the small scale?", "",
            "Every method's small recipe (`configs/small/<method>.yaml`, 300 steps; Pan-FM 1,200) on this 2-core CPU, by "
            "`python benchmarks/learning.py` (one run file per method and pretraining seed in "
            "`benchmarks/results/learning/runs/`). The verdict is the run's own (`health.json`, "
            "`organfm/monitor/verdict.py`): `learning` needs the exported network to have left its initial weights, "
            "every family signal to have moved (a prototype teacher below 0.9 ln K per sample and above 0.2 ln K on "
            "the batch mean; masked reconstruction below 0.95 × the per-volume mean; organ attention below its "
            "fresh-init entropy) and, where labels exist, the monitor kNN (leave-one-out, k = 20, 256 fixed "
            "training images) at least 2 points above the same network at step 0. Minutes are wall time of the "
            "pretraining call, with other work on the machine at the time; the monitor cost is measured in the "
            "same runs (its seconds per measurement over 100 steps of the run's step time).", "",
            "![small recipes: kNN monitor and family signals](figures/learning.png)", "", *rows, ""]
    if not_learning:
        body += ["Runs that did not reach `learning` (reason as the run gave it):", "", *not_learning, ""]
    return "\n".join(body)


def write_report() -> None:
    runs = load_runs()
    if not runs:
        print("no run files yet")
        return
    figure(runs, DOCS.parent / "figures" / "learning.png")
    write_section(DOCS, *MARKERS, report(runs))
    print(f"{len(runs)} run files -> {DOCS}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--data", default=os.environ.get("ORGANFM_DATA", str(HERE.parent.parent / "shared" / "data")))
    p.add_argument("--report-only", action="store_true")
    a = p.parse_args()
    if not a.report_only:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        for seed in (int(s) for s in a.seeds.split(",")):
            for m in a.methods.split(","):
                if m not in METHODS:
                    raise SystemExit(f"unknown method {m!r}; valid: {', '.join(METHODS)}")
                pretrain_one(m, seed, Path(a.data))
    write_report()


if __name__ == "__main__":
    main()
