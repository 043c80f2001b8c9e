"""RaSD transfer: does a backbone pretrained on synthetic images only beat the same network at its random init?

Arms, paired by pretraining seed s:

- ``rasd``: RaSD pretrained on synthetic image/label pairs only (``configs/small/rasd.yaml``: ``unet_small``,
  64 px, K = 8 labels, batch 8, constant lr 1e-3, 300 steps; no real image) with ``trainer.seed=s``, through
  ``benchmarks/runs.py`` (``organfm.engine.pretrain.pretrain(load_config(...))``, the call behind
  ``organfm pretrain``);
- ``scratch``: ``random:unet_small`` evaluated with ``seed=s``, i.e. the same architecture with the *same*
  initial weights as the RaSD run of seed s (each run file records the check against the run's
  ``health-initial.safetensors``), so RaSD − scratch at a seed is "the trained model against its own init".

Both arms of a seed are evaluated in one ``organfm.evaluation.evaluate_models`` call per task file
(``configs/tasks/<task>.yaml`` with the overrides in ``TASKS`` and ``seed=s``), i.e. exactly::

    organfm evaluate --models rasd=<out>/pretrain/rasd-s<s>,scratch=random:unet_small \
        --task configs/tasks/<task>.yaml data.root=<data> seed=<s> out_dir=... <overrides...>

The pre-registered endpoints (``benchmarks/preregistered/rasd-small.yaml``; ``ENDPOINTS``): CT organ
segmentation mean Dice (U-Net fine-tuning on the TotalSegmentator example scan: RaSD's claim is dense transfer),
PneumoniaMNIST linear AUC on frozen features, MedNIST 5-shot linear accuracy on frozen features. Primary
contrast on each: RaSD − scratch > 0, one-sided paired t by pretraining seed (probe seeds averaged within a
model first), α = 0.05, Holm once over the three; a RaSD run whose health verdict (``health.json``) is not
``learning`` is shown, counted and left out (``claims.learning_seeds``).

Each (arm, seed) writes ``<out>/runs/<arm>-seed<s>.json`` (committed, a few kB: metrics per probe seed,
health record, init check, recipe, timings, commands); pretraining and evaluation folders live under
``<out>/pretrain/`` (git-ignored). The report aggregates whatever run files exist and writes
``<out>/results.md`` and the page section (``docs/results.md`` between ``<!-- BEGIN rasd -->`` and
``<!-- END rasd -->``); nothing else writes that section. The order of work::

    python benchmarks/rasd_transfer.py --pilot                  # seed 100 -> <out>/pilot/ (timings, health)
    python benchmarks/rasd_transfer.py --preregister            # writes benchmarks/preregistered/rasd-small.yaml once
    git add benchmarks/preregistered/rasd-small.yaml && git commit   # before any run file
    python benchmarks/rasd_transfer.py --seeds 0,1,2            # run files, then the report and the page
    python benchmarks/rasd_transfer.py --report                 # the report and the page only
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import claims as st  # noqa: E402
import preregistration as prereg  # noqa: E402
from benchmarks.results_page import write_section  # noqa: E402
from organfm.outputs.atomic import write_atomic  # noqa: E402
from benchmarks.runs import final_logs, finished, pretrain_or_resume  # noqa: E402
from benchmarks.runs import health_record as run_health  # noqa: E402

ARCH = "unet_small"
RECIPE = "configs/small/rasd.yaml"
STEPS = 300
ARMS = ("rasd", "scratch")
SEEDS = (0, 1, 2)
PILOT_SEEDS = (100,)  # apart from the confirmatory seeds: a pilot model is never a tested one
OUT = REPO / "benchmarks" / "results" / "rasd_transfer"
PREREGISTRATION = REPO / "benchmarks" / "preregistered" / "rasd-small.yaml"
BEGIN, END = "<!-- BEGIN rasd -->", "<!-- END rasd -->"  # its part of docs/results.md
KEEP = ("accuracy", "balanced_accuracy", "auc", "majority_accuracy", "mean_dice")  # metrics a run file keeps

# task file -> the benchmark's overrides (everything else comes from configs/tasks/<task>.yaml)
TASKS: dict[str, tuple[str, ...]] = {
    # one U-Net fine-tune per model (its decoder seeded by the pretraining seed, the same for both arms), 15 epochs
    "totalseg_ct_seg": ("protocols=[segmentation]", "segmentation.seeds=1", "segmentation.epochs=15"),
    "pneumoniamnist": ("protocols=[linear]", "report.scatter_points=0"),
    # 5 draws of 5 images per class from a 1,200-image stratified pool; 1,200 test images
    "mednist": ("protocols=[fewshot]", "fewshot.fractions=[]", "fewshot.shots=[5]", "fewshot.seeds=5",
                "fewshot.methods=[linear]", "data.max_train=1200", "data.max_val=300", "data.max_test=1200",
                "report.scatter_points=0"),
}
# endpoint id -> (task, protocol, setting, metric, label); setting None: the task's only row of that protocol
ENDPOINTS: dict[str, tuple[str, str, str | None, str, str]] = {
    "ct_dice": ("totalseg_ct_seg", "segmentation", None, "mean_dice",
                "CT organ segmentation (5 organs), U-Net fine-tuned, mean Dice"),
    "pneumonia_auc": ("pneumoniamnist", "linear", None, "auc", "PneumoniaMNIST linear probe (frozen), AUC"),
    "mednist_5shot": ("mednist", "fewshot-linear", "5-shot", "accuracy",
                      "MedNIST 5-shot linear probe (frozen), accuracy"),
}
CONTRASTS = [{"id": f"rasd-scratch:{e}", "endpoint": e, "claim": "RaSD > scratch (its own random init)",
              "terms": [[1, "rasd", e], [-1, "scratch", e]], "hypothesis": "> 0"} for e in ENDPOINTS]


# ---------------------------------------------------------------------------------------------------- running
def pretrain_overrides(seed: int, run: Path, steps: int = STEPS) -> list[str]:
    """What ``organfm pretrain --config configs/small/rasd.yaml`` is given: the seed, the run folder, the steps."""
    return [f"trainer.max_steps={steps}", f"trainer.seed={seed}", f"trainer.out_dir={run}", "trainer.progress=false",
            f"trainer.checkpoint_every={max(1, steps // 3)}"]


def task_overrides(task: str, seed: int, *, data_root: Path, out: Path) -> list[str]:
    """What ``organfm evaluate`` is given for ``configs/tasks/<task>.yaml`` at pretraining seed ``seed``."""
    return [*TASKS[task], f"data.root={data_root}", f"seed={seed}", f"out_dir={out}"]


def pretrain_rasd(seed: int, run: Path, steps: int = STEPS) -> dict[str, Any]:
    """Pretrain (or resume, or reuse) RaSD at ``seed``; return the run file's ``pretrain`` record."""
    from organfm.config import load_config

    overrides = pretrain_overrides(seed, run, steps)
    t = time.time()
    if not finished(run, steps):
        run.mkdir(parents=True, exist_ok=True)
        pretrain_or_resume(run, steps, lambda: load_config(None, REPO / RECIPE, overrides))
        if not finished(run, steps):  # stopped by a signal at a checkpoint: no run file for a partial run
            raise SystemExit(f"[rasd seed {seed}] stopped before step {steps}; run the same command to resume")
    from organfm.monitor import read_health

    contract = json.loads((run / "export" / "backbone.json").read_text())
    history = (read_health(run) or {}).get("history") or [{}]
    loop = history[-1].get("time", math.nan) - history[0].get("time", math.nan)  # step 0 to the last step
    return {"config": RECIPE, "overrides": overrides, "steps": int(contract.get("step", steps)),
            "seconds": round(time.time() - t, 1), "loop_seconds": round(loop, 1) if math.isfinite(loop) else None,
            "final_logs": {k: round(v, 5) for k, v in final_logs(run).items() if k in ("loss", "loss_seg", "loss_proto")}}


def health_record(run: Path | None) -> dict[str, Any]:
    """``benchmarks.runs.health_record`` plus the distance from the initial weights."""
    return run_health(run, extra=("distance",))


def init_check(run: Path, seed: int) -> dict[str, Any]:
    """Is ``random:unet_small`` at evaluation seed ``seed`` the RaSD run's own initial network? Compares every
    parameter with the run's ``health-initial.safetensors`` (the monitor's copy of the weights at step 0)."""
    from safetensors.torch import load_file

    from organfm.features.encoders import load_encoder

    path = run / "health-initial.safetensors"
    if not path.is_file():
        return {"same_init": None, "note": f"{path.name} not found"}
    saved = load_file(str(path))
    initial = [saved[str(i)] for i in range(len(saved))]
    make, contract = load_encoder(f"random:{ARCH}", seed=seed)
    params = [p.detach() for p in make().parameters()]
    shapes = len(initial) == len(params) and all(a.shape == b.shape for a, b in zip(initial, params))
    diff = max(float((a - b).abs().max()) for a, b in zip(initial, params)) if shapes else math.inf
    return {"same_init": bool(shapes and diff == 0.0), "max_abs_diff": diff, "parameters": len(params),
            "architecture": contract["architecture"]}


def evaluate_seed(seed: int, models: Mapping[str, str], *, data_root: Path, out: Path,
                  tasks: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Every task for both arms of one seed: one ``evaluate_models`` call per task; returns task -> result."""
    from organfm.evaluation import evaluate_models, load_task

    evaluation = {}
    for task in tasks:
        overrides = task_overrides(task, seed, data_root=data_root, out=out / task)
        t = time.time()
        results = evaluate_models(load_task(REPO / "configs" / "tasks" / f"{task}.yaml", overrides), models)
        rows = [{"model": r["model"], "protocol": r["protocol"], "setting": r["setting"],
                 "values": {m: [round(float(x), 6) for x in v] for m, v in r["values"].items() if m in KEEP}}
                for r in results["rows"]]
        evaluation[task] = {"overrides": overrides, "seconds": round(time.time() - t, 1), "rows": rows}
        print(f"[seed {seed}] {task}: {evaluation[task]['seconds']:.0f} s", flush=True)
    return evaluation


def relative(text: str) -> str:
    """Paths inside the repository written relative to it (the commands run from its root)."""
    return text.replace(str(REPO) + os.sep, "").replace(str(REPO.parent / "shared") + os.sep, "../shared/")


def run_seed(seed: int, *, out: Path, data_root: Path, pilot: bool, command: str,
             steps: int = STEPS) -> list[Path]:
    """Pretrain RaSD at ``seed``, evaluate it and its own init, write both run files (kept when present)."""
    folder = out / ("pilot" if pilot else "runs")
    paths = [folder / f"{arm}-seed{seed}.json" for arm in ARMS]
    if all(p.is_file() for p in paths):
        print(f"[seed {seed}] done already: {', '.join(map(str, paths))}", flush=True)
        return paths
    run = out / "pretrain" / ("pilot" if pilot else "") / f"rasd-s{seed}"
    t0 = time.time()
    pre = pretrain_rasd(seed, run, steps)
    models = {"rasd": str(run), "scratch": f"random:{ARCH}"}
    evaluation = evaluate_seed(seed, models, data_root=data_root, out=run / "eval", tasks=list(TASKS))
    check = init_check(run, seed)
    import torch

    environment = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": f"{platform.machine()} CPU"}
    pretrain_cmd = relative(f"organfm pretrain --config {RECIPE} " + " ".join(pre["overrides"]))
    eval_cmds = [relative(f"organfm evaluate --models rasd={run},scratch=random:{ARCH} "
                          f"--task configs/tasks/{task}.yaml " + " ".join(ev["overrides"]))
                 for task, ev in evaluation.items()]
    for arm, path in zip(ARMS, paths):
        record = {
            "arm": arm, "seed": seed, "pilot": pilot, "architecture": ARCH,
            "recipe": {"config": RECIPE, "steps": steps, "tasks": {k: list(v) for k, v in TASKS.items()}},
            "pretrain": pre if arm == "rasd" else None,
            "health": health_record(run if arm == "rasd" else None),
            "init_check": check,
            "evaluation": {task: {"overrides": ev["overrides"], "seconds": ev["seconds"],
                                  "rows": [{k: v for k, v in r.items() if k != "model"}
                                           for r in ev["rows"] if r["model"] == arm]}
                           for task, ev in evaluation.items()},
            "timings": {"pretrain_s": pre["seconds"] if arm == "rasd" else 0.0,
                        "evaluation_s_both_arms": round(sum(ev["seconds"] for ev in evaluation.values()), 1),
                        "seed_total_s": round(time.time() - t0, 1)},
            "commands": ([pretrain_cmd] if arm == "rasd" else []) + eval_cmds,
            "bench_command": command, "environment": environment,
        }
        write_atomic(path, relative(json.dumps(record, indent=1)) + "\n")
        print(f"[{arm} seed {seed}] wrote {path}", flush=True)
    return paths


# ---------------------------------------------------------------------------------------------- pre-registration
def build_preregistration(pilot: Sequence[Mapping[str, Any]] = (), *, alpha: float = st.ALPHA,
                          power: float = st.POWER) -> dict[str, Any]:
    """The pre-registration as plain data: arms, endpoints, contrasts, test, α, family, gate, n and the MDE.

    Args:
        pilot: the pilot's run files (timings and health are recorded; with one pilot seed there is no sd of a
            paired difference, so the MDE is stated in sd units only).
    """
    m = len(CONTRASTS)
    n = len(SEEDS)
    in_sd = one_sided_mde(1.0, n, alpha / m, power)
    health = {f"{r['arm']}-seed{r['seed']}": r["health"]["verdict"] for r in pilot if r["arm"] == "rasd"}
    minutes = {f"seed{r['seed']}": {"pretraining_loop": round((r["pretrain"].get("loop_seconds") or math.nan) / 60, 1),
                                    "pretraining_this_call": round(r["timings"]["pretrain_s"] / 60, 1),
                                    "evaluation_both_arms": round(r["timings"]["evaluation_s_both_arms"] / 60, 1)}
               for r in pilot if r["arm"] == "rasd"}
    return {
        "name": "rasd-small",
        "scale": "small",
        "registered": datetime.date.today().isoformat(),
        "rule": "commit this file before the first run file under benchmarks/results/rasd_transfer/runs/",
        "arms": {"rasd": {"method": "rasd", "overrides": [], "recipe": RECIPE, "steps": STEPS, "seeds": list(SEEDS)},
                 "scratch": {"method": "random init", "overrides": [], "recipe": None, "seeds": list(SEEDS),
                             "note": f"random:{ARCH} at evaluation seed s: the same weights as the RaSD run of seed "
                                     "s at step 0 (checked per run against health-initial.safetensors)"}},
        "endpoints": {e: {"task": f"configs/tasks/{t}.yaml", "overrides": list(TASKS[t]), "protocol": p,
                          "setting": s, "metric": metric, "label": label}
                      for e, (t, p, s, metric, label) in ENDPOINTS.items()},
        "contrasts": [dict(c) for c in CONTRASTS],
        "test": "one-sided paired t (RaSD - scratch > 0) by pretraining seed on each endpoint (probe seeds averaged "
                "within a model first)",
        "alpha": alpha,
        "family": {"correction": "holm", "members": "all contrasts above, one family", "m": m},
        "gate": {"rule": "a RaSD run whose health verdict (health.json) is not 'learning' is shown, counted and "
                         f"excluded with its scratch pair; fewer than {st.MIN_LEARNING_RUNS} learning runs: no verdict",
                 "min_learning_runs": st.MIN_LEARNING_RUNS},
        "verdicts": "supported (Holm p < alpha, positive); not supported (with 'inconclusive' where the MDE at the "
                    "achieved n exceeds the observed effect); no verdict (gate, or fewer than 3 pairs)",
        "secondary": "beside each classification endpoint: balanced accuracy and the majority rate of the test set "
                     "(not tested); the health record of every run",
        "planned_n": {"rasd": n, "scratch": n},
        "power": {"target": power, "alpha_adjusted": f"Bonferroni alpha/m = {alpha}/{m} = {alpha / m:.5f}, one-sided "
                                                     "(Holm's first step; conservative for the later ranks)"},
        "pilot": {"folder": "benchmarks/results/rasd_transfer/pilot", "seeds": list(PILOT_SEEDS), "health": health,
                  "minutes": minutes,
                  "note": "the pilot times the recipe and checks its health only; it is not part of any test, and "
                          "one pilot seed gives no sd of a paired difference (MDE in sd units only)"},
        "mde": {c["id"]: {"n": n, "sd_units": round(in_sd, 3), "critical_sd_units": round(critical(n, alpha / m), 3)}
                for c in CONTRASTS},
    }


HEADER = prereg.header("the RaSD transfer claim at the small scale", "benchmarks/rasd_transfer.py",
                       "benchmarks/results/rasd_transfer/runs/")


def write_preregistration(path: Path, data: Mapping[str, Any]) -> Path:
    """Save ``data`` as the pre-registration at ``path``, once (``FileExistsError`` if it exists)."""
    return prereg.write_once(path, data, HEADER)


def require_preregistration(path: Path = PREREGISTRATION, *, committed: bool = True) -> None:
    """Refuse confirmatory run files before the pre-registration exists (and, with ``committed``, is in git with
    no uncommitted change)."""
    prereg.require_committed(path, committed=committed, how="--pilot, then --preregister, commit the file")


# ---------------------------------------------------------------------------------------------------- statistics
def one_sided_p(c: st.Comparison) -> float:
    """One-sided p of "delta > 0" from a paired comparison (nan without a test or without spread)."""
    from scipy import stats

    if c.test != "paired t" or not (math.isfinite(c.sd) and c.sd > 0):
        return math.nan
    t = c.delta / (c.sd / math.sqrt(c.n_a))
    return float(stats.t.sf(t, c.n_a - 1))


def one_sided_mde(sd: float, n: int, alpha: float, power: float = st.POWER) -> float:
    """Minimum detectable effect of a one-sided paired t at level ``alpha``: the two-sided MDE at 2α (the same
    critical value; the two-sided power adds only the opposite tail's negligible mass)."""
    return st.mde(sd, n, 2 * alpha, power)


def critical(n: int, alpha: float) -> float:
    """The observed effect (sd units) a one-sided paired t with n pairs must exceed at level ``alpha``."""
    from scipy import stats

    return math.inf if n < 2 else float(stats.t.ppf(1 - alpha, n - 1) / math.sqrt(n))


# ------------------------------------------------------------------------------------------------------ report
def load_runs(folder: Path) -> list[dict[str, Any]]:
    """Every run file of a folder (``<arm>-seed<s>.json``), sorted by (arm, seed)."""
    runs = [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*-seed*.json"))]
    return sorted(runs, key=lambda r: (ARMS.index(r["arm"]) if r["arm"] in ARMS else 99, r["seed"]))


def endpoint_values(run: Mapping[str, Any], endpoint: str, metric: str | None = None) -> list[float]:
    """The probe-seed values of ``endpoint`` (or another ``metric`` of its row) in one run file ([] if absent)."""
    task, protocol, setting, main, _ = ENDPOINTS[endpoint]
    rows = [r for r in run.get("evaluation", {}).get(task, {}).get("rows", [])
            if r["protocol"] == protocol and (setting is None or r["setting"] == setting)]
    return [float(v) for r in rows[:1] for v in r["values"].get(metric or main, [])]


def per_seed(runs: Sequence[Mapping[str, Any]], arm: str, endpoint: str, metric: str | None = None) -> dict[int, float]:
    """Pretraining seed -> the model mean of ``endpoint`` for ``arm`` (``claims.model_means``)."""
    return st.model_means({r["seed"]: endpoint_values(r, endpoint, metric) for r in runs if r["arm"] == arm})


def analyse(runs: Sequence[Mapping[str, Any]], *, alpha: float = st.ALPHA) -> dict[str, Any]:
    """The pre-registered table from run files: per endpoint the arms' mean ± sd, the paired contrast on the
    seeds whose RaSD run is learning, one-sided p, Holm p over the family, MDE and the verdict."""
    verdicts = {r["seed"]: r["health"]["verdict"] for r in runs if r["arm"] == "rasd"}
    gate_rasd = st.learning_seeds(verdicts)
    gate_scratch = st.learning_seeds({r["seed"]: None for r in runs if r["arm"] == "scratch"}, applies=False)
    kept = set(gate_rasd.kept)
    rows = []
    for c in CONTRASTS:
        e = c["endpoint"]
        a, b = per_seed(runs, "rasd", e), per_seed(runs, "scratch", e)
        a_kept = {s: v for s, v in a.items() if s in kept}
        comp = st.contrast([(1.0, a_kept), (-1.0, b)])
        rows.append({"id": c["id"], "endpoint": e, "rasd": st.mean_sd(list(a_kept.values())),
                     "scratch": st.mean_sd([v for s, v in b.items() if s in a_kept] or list(b.values())),
                     "comparison": comp, "p": one_sided_p(comp)})
    m = len(rows)
    for row, p_holm in zip(rows, st.holm([r["p"] for r in rows])):
        comp = row["comparison"]
        row["p_holm"] = p_holm
        row["mde_sd"] = one_sided_mde(1.0, comp.n_a, alpha / m)
        row["mde"] = row["mde_sd"] * comp.sd if math.isfinite(comp.sd) else math.nan
        row["verdict"] = st.preregistered_verdict(comp, p_holm, row["mde_sd"], alpha=alpha,
                                                  gates=[gate_rasd, gate_scratch])
    return {"rows": rows, "gate": gate_rasd, "scratch_gate": gate_scratch, "m": m}


def _ms(x: tuple[float, float, int], digits: int = 3) -> str:
    mean, sd, n = x
    if not n:
        return "–"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if math.isfinite(sd) else f"{mean:.{digits}f}"


def _num(x: Any, fmt: str = ".3f") -> str:
    return format(x, fmt) if isinstance(x, (int, float)) and math.isfinite(x) else "–"


def report(runs: Sequence[Mapping[str, Any]], *, prereg: Mapping[str, Any] | None, command: str) -> str:
    """The section's markdown from the run files (the page section and ``results.md``)."""
    res = analyse(runs, alpha=float((prereg or {}).get("alpha", st.ALPHA)))
    rasd = [r for r in runs if r["arm"] == "rasd"]
    k = len({r["seed"] for r in rasd})
    steps = sorted({(r.get("pretrain") or {}).get("steps") for r in rasd} - {None})
    minutes = sum(r["timings"]["seed_total_s"] for r in rasd) / 60
    pre_minutes = [r["timings"]["pretrain_s"] / 60 for r in rasd]
    eval_minutes = [r["timings"]["evaluation_s_both_arms"] / 60 for r in rasd]
    lines = [
        "## RaSD transfer", "",
        f"Synthetic-only pretraining (RaSD, `{RECIPE}`: `{ARCH}`, {', '.join(map(str, steps)) or STEPS} steps of "
        "batch 8 at 64 px, K = 8 labels, constant lr 1e-3; no real image) against **scratch**, the same "
        f"architecture at its random init — at each pretraining seed exactly the RaSD run's own initial weights "
        f"(`random:{ARCH}` at the same seed; checked per run). **n = {k} pretraining run{'s' if k != 1 else ''}** per arm (RaSD "
        f"pretraining seeds {', '.join(str(r['seed']) for r in rasd)}; scratch: one random init per seed), paired "
        "by seed; probe seeds are averaged within a model first, so the unit of replication is the pretrained "
        "model. Every number comes from `organfm evaluate` (`benchmarks/rasd_transfer.py`, `TASKS`). "
        f"Pre-registered in `benchmarks/preregistered/rasd-small.yaml`"
        + (f" ({prereg['registered']})" if prereg else " (**missing**)")
        + f": primary contrast RaSD − scratch > 0 on each of {res['m']} endpoints, one-sided paired t, α = 0.05, "
        "Holm over the table. CPU run on 2 cores: "
        f"{minutes:.0f} min in all (per seed: RaSD pretraining {_span(pre_minutes)} min, evaluation of both arms "
        f"{_span(eval_minutes)} min).",
        "",
        f"Health gate (`health.json` of each RaSD run; a run not `learning` is left out): {res['gate'].text}.",
        "",
        "| RaSD run | health | monitor kNN step 0 → end (majority) | distance from init | scratch = its init |",
        "|---|---|---|---|---|",
    ]
    for r in rasd:
        h, ic = r["health"], r.get("init_check") or {}
        same = {True: "yes (largest weight difference 0)",
                False: f"**no** (largest weight difference {_num(ic.get('max_abs_diff'), '.3g')})",
                None: "not checked"}[ic.get("same_init")]
        lines.append(f"| seed {r['seed']} | {h.get('verdict')} | {_num(h.get('knn_step0'))} → {_num(h.get('knn_final'))}"
                     f" ({_num(h.get('knn_majority'))}) | {_num(100 * h['distance'] if h.get('distance') is not None else None, '.1f')} % "
                     f"| {same} |")
    lines += ["", "Pre-registered endpoints (mean ± sd over pretraining runs; Δ = mean paired difference ± its sd; "
              "p one-sided; MDE: the smallest true Δ the test detects with power 0.8 at α/m one-sided, in sd units "
              "of Δ and in the endpoint's units):", "",
              "| endpoint | scratch (own init) | RaSD | Δ (RaSD − scratch) | RaSD wins | n | p | Holm p | MDE | verdict |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for row in res["rows"]:
        c = row["comparison"]
        mde = f"{_num(row['mde_sd'], '.2f')} sd = {_num(row['mde'])}" if math.isfinite(row["mde_sd"]) else "–"
        lines.append(f"| {ENDPOINTS[row['endpoint']][4]} | {_ms(row['scratch'])} | {_ms(row['rasd'])} | "
                     f"{_num(c.delta, '+.3f')} ± {_num(c.sd)} | {c.wins}/{c.n_a} | {c.n_a} | {st.pvalue(row['p'])} | "
                     f"{st.pvalue(row['p_holm'])} | {mde} | {row['verdict']} |")
    lines += ["", "Instrument check (not tested): each classification endpoint beside its balanced accuracy and the "
              "test set's majority rate (what always predicting the most frequent class scores); the Δ above is "
              "already the trained model against its own initial weights.", "",
              "| endpoint | arm | accuracy | balanced accuracy | AUC | majority rate |", "|---|---|---|---|---|---|"]
    for e, (_, _, _, metric, label) in ENDPOINTS.items():
        if metric == "mean_dice":
            continue
        for arm in ARMS:
            cells = [_ms(st.mean_sd(list(per_seed(runs, arm, e, m).values()))) for m in
                     ("accuracy", "balanced_accuracy", "auc", "majority_accuracy")]
            lines.append(f"| {label.split(',')[0]} | {arm} | " + " | ".join(cells) + " |")
    lines += ["", "Caveats: MedNIST has no patient ids (a random split can share a patient across splits); the "
              "PneumoniaMNIST copy has a modified train split (not comparable with published numbers); the CT task "
              "uses ONE scan (train/val/test are slice blocks of the same patient, so it measures fitting within a "
              "scan, not transfer to new patients) and TotalSegmentator predictions as masks. Scratch is fed with "
              "the random-init contract (mean 0.5, std 0.5), RaSD with its export's (intensities in [0, 1], no "
              "normalisation). The recipe is small (300 steps of batch 8 on a 0.5M-parameter U-Net; the paper "
              "pretrains a SwinUNETR far longer), so this tests the small recipe, not the paper's; with n = "
              f"{k} pairs only a large effect can be detected (MDE column). Splits are the evaluation suite's "
              "(`configs/tasks/*.yaml`), capped for a CPU budget.", "",
              f"Regenerate: `{command}`", ""]
    return "\n".join(lines)


def _span(values: Sequence[float]) -> str:
    if not values:
        return "–"
    lo, hi = min(values), max(values)
    return f"{lo:.1f}" if abs(hi - lo) < 0.05 else f"{lo:.1f}–{hi:.1f}"


def write_report(out: Path, docs: Path | None, *, command: str) -> str:
    """Aggregate ``<out>/runs/``, write ``<out>/results.md`` and (``docs`` given) the page section."""
    runs = load_runs(out / "runs")
    if not runs:
        raise SystemExit(f"no run files under {out / 'runs'}")
    md = report(runs, prereg=prereg.load(PREREGISTRATION), command=command)
    (out / "results.md").write_text(md)
    if docs is not None:
        write_section(docs, BEGIN, END, md)
    print(md)
    return md


# -------------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default=None, help=f"comma list of pretraining seeds (default {','.join(map(str, SEEDS))}; "
                   f"--pilot: {','.join(map(str, PILOT_SEEDS))})")
    p.add_argument("--pilot", action="store_true", help="pilot runs into <out>/pilot/ (timings, health); never tested")
    p.add_argument("--preregister", action="store_true", help=f"write {relative(str(PREREGISTRATION))} once and stop")
    p.add_argument("--report", action="store_true", help="only aggregate the run files into the report and the page")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--docs", default=str(REPO / "docs" / "results.md"), help="results page ('' to skip)")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    docs = Path(args.docs) if args.docs else None
    report_cmd = "python benchmarks/rasd_transfer.py --report"
    if args.preregister:
        pilot = load_runs(out / "pilot")
        path = write_preregistration(PREREGISTRATION, build_preregistration(pilot))
        print(f"wrote {path}: commit it before the first run file")
        return 0
    if args.report:
        write_report(out, docs, command=report_cmd)
        return 0
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s] if args.seeds else list(PILOT_SEEDS if args.pilot else SEEDS)
    except ValueError:
        p.error(f"--seeds takes integers, e.g. 0,1,2; got {args.seeds!r}")
    if args.pilot and set(seeds) & set(SEEDS):
        p.error(f"pilot seeds {sorted(set(seeds) & set(SEEDS))} are confirmatory seeds")
    if not args.pilot:
        require_preregistration()
    import torch

    torch.set_num_threads(int(os.environ.get("ORGANFM_THREADS", "2")))
    data_root = Path(args.data).resolve()
    command = "python benchmarks/rasd_transfer.py" + (" --pilot" if args.pilot else "") + f" --seeds {','.join(map(str, seeds))}"
    for seed in seeds:
        run_seed(seed, out=out, data_root=data_root, pilot=args.pilot, command=command)
    if not args.pilot:
        write_report(out, docs, command=report_cmd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
