"""Coda ablation on real data, one (arm, pretraining seed) run at a time, through the product's own commands.

Arms: ``coda`` (both branches), ``inter`` (``method.use_intra=false``), ``intra`` (``method.use_inter=false``),
``dino``, ``supcon`` and the floor ``random`` (a random init per seed); on request ``coda-neg`` (the paper's
Eq. 1 negatives-only denominator) and ``coda-ema`` (a teacher EMA 10x slower). For each (arm, seed):

1. pretrain on the MedNIST *train* split (exact duplicates removed; the split is saved once to
   ``<out>/mednist_split.csv`` and used by pretraining and by the MedNIST task) with
   ``organfm.engine.pretrain.pretrain(load_config(...))`` — the call behind ``organfm pretrain``;
2. evaluate with ``organfm.evaluation.evaluate_models`` on the task files ``configs/tasks/*.yaml`` (plus the
   scale's overrides and ``seed=<pretraining seed>``) — the call behind ``organfm evaluate``;
3. write ``<out>/runs/<arm>-seed<k>.json`` (committed, a few kB): per-probe-seed values of every task, the
   final teacher entropy, the recipe, timings and the equivalent ``organfm`` commands.

The report (``coda_ablation_report.py``) aggregates every committed run file, so a table fills up across
sittings: ``--arms`` and ``--seeds`` choose the work of one call. Pretraining runs and evaluation folders
live under ``<out>/pretrain/`` (git-ignored); an interrupted pretraining run resumes from its checkpoint.

The pre-registered scales (``small``: ``configs/small/<method>.yaml`` on MedNIST, 300 steps, ~3 min of
pretraining and ~1-2 min of evaluation per run on 2 quiet cores; ``paper``: ConvNeXt-B at 224 px for a GPU)
evaluate only the primary endpoints' tasks and refuse to write a run file under ``runs/`` before their
pre-registration (``benchmarks/preregistered/coda-<scale>.yaml``) exists. The order of work::

    python benchmarks/coda_ablation.py --scale small --pilot                 # pilot runs -> <out>/pilot/
    python benchmarks/coda_ablation_report.py --preregister benchmarks/results/coda_ablation-small
    git add benchmarks/preregistered/coda-small.yaml && git commit          # before any run file
    python benchmarks/coda_ablation.py --scale small --arms coda,inter,intra --seeds 0,1   # a sitting's share
    python benchmarks/coda_ablation_report.py benchmarks/results/coda_ablation-small        # the page only

    python benchmarks/coda_ablation.py --scale cpu-1k --arms coda --seeds 0   # legacy scale, ~12 min + evaluation
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from organfm.outputs.atomic import write_atomic  # noqa: E402
from benchmarks.runs import final_logs, finished, health_record, pretrain_or_resume  # noqa: E402

# arm -> (method, overrides that set it apart); "random" has no pretraining
ARMS: dict[str, tuple[str, list[str]]] = {
    "coda": ("coda", []), "inter": ("coda", ["method.use_intra=false"]), "intra": ("coda", ["method.use_inter=false"]),
    "dino": ("dino", []), "supcon": ("supcon", []), "coda-neg": ("coda", ["method.supcon_denominator=negatives"]),
    "coda-ema": ("coda", []),
}
VALID_ARMS = (*ARMS, "random")
CENTRAL = ("coda", "dino", "supcon", "random")
PREREGISTERED_ARMS = ("coda", "inter", "intra", "dino", "supcon", "random")
PILOT_ARMS = ("coda", "inter", "intra", "dino")  # the arms of the pre-registered contrasts
PILOT_SEEDS = (100, 101)  # apart from every scale's seeds, so no pilot model is also a confirmatory one
MEDNIST = "mednist/MedNIST.tar.gz"
PREREGISTERED = REPO / "benchmarks" / "preregistered"
# frozen-feature tasks that fit a CPU: the Table 2 linear probe and the Table 1 fractions (PneumoniaMNIST),
# the organ clusters, MedNIST 1/5-shot; 5 probe seeds each (they are averaged within a model anyway)
CPU_TASKS = (("pneumoniamnist", ("protocols=[linear,fewshot]", "fewshot.shots=[]", "fewshot.seeds=5",
                                 "report.scatter_points=0")),
             ("totalseg_ct_organs", ("clusters.embeddings=[tsne]", "report.scatter_points=0")),
             ("mednist", ("protocols=[fewshot]", "fewshot.fractions=[]", "fewshot.shots=[1,5]", "fewshot.seeds=5",
                          "report.scatter_points=0")))
GPU_TASKS = (("pneumoniamnist", ("protocols=[linear,fewshot]", "fewshot.shots=[]", "fewshot.methods=[linear,finetune]",
                                 "data.image_size=224", "report.scatter_points=0")),
             ("totalseg_ct_organs", ("data.image_size=224", "clusters.embeddings=[tsne]", "report.scatter_points=0")),
             ("totalseg_ct_seg", ("segmentation.image_size=224",)),
             ("mednist", ("protocols=[fewshot]", "fewshot.fractions=[]", "fewshot.shots=[1,5]", "data.image_size=224",
                          "report.scatter_points=0")))


def primary_tasks(image_size: int) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The pre-registered endpoints' tasks only, at the pretraining global view size: PneumoniaMNIST linear AUC
    (100 %: the full grid; 1 %: few-shot linear, 10 label draws) and the CT organ crops' kNN accuracy and NMI
    (no t-SNE/UMAP maps, no HTML scatter). MedNIST is left out: L_inter, Coda and SupCon saw its organ labels."""
    return (("pneumoniamnist", ("protocols=[linear,fewshot]", "fewshot.fractions=[0.01]", "fewshot.shots=[]",
                                "fewshot.seeds=10", "fewshot.methods=[linear]", f"data.image_size={image_size}",
                                "report.scatter_points=0")),
            ("totalseg_ct_organs", ("clusters.embeddings=[]", f"data.image_size={image_size}",
                                    "report.scatter_points=0")))


@dataclasses.dataclass(frozen=True)
class Scale:
    """The pretraining recipe and evaluation every arm of a scale shares.

    With ``recipe`` set, each arm's pretraining is ``load_config(method, <recipe>/<method>.yaml, overrides)``
    with overrides for the data, the seed and the run folder only, so the recipe file is the recipe; the
    fields below then restate it (a test checks they agree). Without it, the fields are the recipe.
    """

    name: str
    backbone: str
    steps: int
    batch_size: int
    global_size: int
    local_size: int
    num_local_views: int
    out_dim: int             # DINO-head prototypes (K); ln K is the untrained teacher's entropy
    hidden_dim: int
    lr: float
    momentum: float          # teacher EMA start (cosine to 1)
    num_workers: int
    tasks: tuple[tuple[str, tuple[str, ...]], ...] = CPU_TASKS
    seeds: tuple[int, ...] = (0, 1, 2)
    device: str = "cpu"
    arms: tuple[str, ...] = CENTRAL                       # the default --arms
    arm_seeds: tuple[tuple[str, tuple[int, ...]], ...] = ()  # per-arm default seeds where not ``seeds``
    recipe: str | None = None                             # folder of <method>.yaml recipe files
    preregistration: str | None = None                    # file under benchmarks/preregistered/ (run files wait for it)

    def seeds_of(self, arm: str) -> tuple[int, ...]:
        """The default pretraining seeds of ``arm`` at this scale."""
        return dict(self.arm_seeds).get(arm, self.seeds)


SIX = (0, 1, 2, 3, 4, 5)
SCALES = {s.name: s for s in (
    # The small recipe (configs/small/*.yaml): test_convnext, 64 px + 2 x 32 px, K = 256, 300 steps of batch 32,
    # EMA 0.99; learns on 2 cores in ~3 min. Six seeds for the arms of the Table 2 contrasts, three for the rest.
    Scale("small", "test_convnext", 300, 32, 64, 32, 2, 256, 256, 1e-3, 0.99, 2, primary_tasks(64),
          arms=PREREGISTERED_ARMS, arm_seeds=(("coda", SIX), ("inter", SIX), ("intra", SIX), ("dino", SIX)),
          recipe="configs/small", preregistration="coda-small.yaml"),
    # The paper's model and views on one GPU, the same arms, endpoints and design as small.
    Scale("paper", "convnext_base", 5000, 64, 224, 96, 12, 65536, 2048, 1.25e-4, 0.996, 8, primary_tasks(224),
          device="cuda", arms=PREREGISTERED_ARMS, arm_seeds=(("coda", SIX), ("inter", SIX), ("intra", SIX), ("dino", SIX)),
          preregistration="coda-paper.yaml"),
    # The CPU recipe with 2 local crops of 32 px: ~45 img/s on 2 cores, so 1,000 steps of batch 32 take ~12 min,
    # enough for the intra branch to move off ln K (64 steps were not). EMA 0.99: over 1,000 steps a 0.996
    # teacher keeps ~13 % of its random init (prod m_t ~ exp(-(1 - m0) T / 2)), 0.99 under 1 %.
    Scale("cpu-1k", "convnext_atto", 1000, 32, 64, 32, 2, 4096, 512, 5e-4, 0.99, 1),
    # The legacy CPU budget (64 steps, 12 crops; its committed results.json predates per-run files).
    Scale("cpu", "convnext_atto", 64, 32, 64, 32, 12, 4096, 512, 5e-4, 0.9, 1),
    # gpu-short is what one 15-minute lease held (legacy).
    Scale("gpu-short", "convnext_base", 100, 64, 224, 96, 12, 65536, 2048, 1.25e-4, 0.99, 12, GPU_TASKS[:1],
          seeds=(0,), device="cuda"),
)}


def save_mednist_split(data_root: Path, out: Path) -> tuple[Path, int]:
    """Index MedNIST once (duplicates removed), save its train/val/test split; return (file, train size)."""
    from organfm.data import build_dataset

    path = out / "mednist_split.csv"
    dataset = build_dataset(str(data_root / MEDNIST), split=None, dedup=True, split_seed=0,
                            split_file=str(path) if path.is_file() else None)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        dataset.save_split(path)
    return path, sum(r.split == "train" for r in dataset.records)


def pretrain_overrides(arm: str, seed: int, scale: Scale, *, source: Path, split_file: Path, num_train: int,
                       run: Path) -> tuple[str, str | None, list[str]]:
    """The method, recipe file and ``key=value`` overrides of one pretraining run (what ``organfm pretrain``
    is given: ``--method``, ``--config``, overrides)."""
    method, extra = ARMS[arm]
    data = [f"data.source={source}", "data.split=train", f"data.split_file={split_file}"]
    run_keys = [f"trainer.seed={seed}", f"trainer.out_dir={run}", "trainer.progress=false"]
    if scale.recipe is not None:  # the recipe file holds every schedule; only the steps are restated
        file = f"{scale.recipe}/{method}.yaml"
        return method, file, data + [f"trainer.max_steps={scale.steps}", *run_keys,
                                     f"trainer.checkpoint_every={max(1, scale.steps // 4)}"] + extra
    if arm == "coda-ema":
        extra = [f"teacher.momentum={1 - (1 - scale.momentum) / 10:.6g}"]
    horizon = scale.steps / (num_train // scale.batch_size)  # schedules end exactly at the last step
    o = data + [f"backbone.name={scale.backbone}", f"views.global_size={scale.global_size}",
                f"views.local_size={scale.local_size}", f"optim.lr={scale.lr}", f"optim.warmup_epochs={0.1 * horizon}",
                f"optim.freeze_last_layer_epochs={0.05 * horizon}", f"teacher.momentum={scale.momentum}",
                f"teacher.warmup_temp_epochs={0.3 * horizon}", f"trainer.epochs={horizon}",
                f"trainer.max_steps={scale.steps}", f"trainer.batch_size={scale.batch_size}", *run_keys[:2],
                f"trainer.num_workers={scale.num_workers}", run_keys[2],
                f"trainer.checkpoint_every={max(1, scale.steps // 4)}", f"trainer.log_every={max(1, scale.steps // 20)}"]
    if method != "supcon":  # SupCon sees the two global views only (its default: no local crops)
        o += [f"views.num_local_views={scale.num_local_views}", f"method.out_dim={scale.out_dim}",
              f"method.hidden_dim={scale.hidden_dim}"]
    return method, None, o + extra


def load_arm_config(method: str, file: str | None, overrides: list[str]) -> Any:
    """``load_config`` of one arm, the recipe file resolved against the repository."""
    from organfm.config import load_config

    return load_config(method, REPO / file if file else None, overrides)


def pretrain_run(arm: str, seed: int, scale: Scale, *, run: Path, **kwargs: Any) -> dict[str, Any]:
    """Pretrain (or resume, or reuse) one run; return its summary for the run file (with its health verdict)."""
    method, file, overrides = pretrain_overrides(arm, seed, scale, run=run, **kwargs)
    recipe, stamp = {"method": method, "overrides": overrides}, run / "bench_recipe.json"
    if file is not None:
        recipe["config"] = file
    if stamp.is_file() and json.loads(stamp.read_text()) != recipe:
        raise RuntimeError(f"{run} was pretrained with another recipe than {arm} at scale {scale.name} ({stamp}); "
                           "delete it or pass another --out")
    t = time.time()
    if not finished(run, scale.steps):
        run.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps(recipe, indent=1))
        pretrain_or_resume(run, scale.steps, lambda: load_arm_config(method, file, overrides))
        if not finished(run, scale.steps):  # stopped by a signal at a checkpoint: no run file for a partial run
            raise SystemExit(f"[{arm} seed {seed}] stopped before step {scale.steps}; run the same command to resume")
    logs = final_logs(run)
    from organfm.monitor import read_health

    health = read_health(run) or {}
    out = {"method": method, "config": file, "overrides": overrides, "steps": scale.steps,
           "seconds": round(time.time() - t, 1), "loss": logs.get("loss"), "teacher_entropy": logs.get("teacher_entropy"),
           "out_dim": scale.out_dim if method != "supcon" else None,
           "health": health.get("verdict"), "health_reason": health.get("reason")}
    print(f"[{arm} seed {seed}] pretrained: loss {out['loss']}, teacher entropy {out['teacher_entropy']} "
          f"(ln K = {math.log(scale.out_dim):.2f}), health {out['health']}, {out['seconds']:.0f} s this call", flush=True)
    return out


def task_overrides(name: str, scale: Scale, seed: int, *, data_root: Path, split_file: Path, out: Path) -> list[str]:
    """What ``organfm evaluate`` is given for task ``name`` (``configs/tasks/<name>.yaml``)."""
    extra = [f"data.split_file={split_file}"] if name == "mednist" else []
    return [*dict(scale.tasks)[name], *extra, f"data.root={data_root}", f"seed={seed}", f"out_dir={out}",
            f"device={scale.device}"]


def evaluate_run(spec: str, model: str, name: str, overrides: list[str]) -> dict[str, Any]:
    """One task for one model through ``evaluate_models``; the rows trimmed to what the report needs."""
    from organfm.evaluation import evaluate_models, load_task

    t = time.time()
    results = evaluate_models(load_task(REPO / "configs" / "tasks" / f"{name}.yaml", overrides), {model: spec})
    rows = [{"protocol": r["protocol"], "setting": r["setting"],
             "values": {m: [round(float(x), 6) for x in v] for m, v in r["values"].items()
                        if m in ("accuracy", "balanced_accuracy", "auc", "knn_accuracy", "nmi", "mean_dice")}}
            for r in results["rows"]]
    return {"overrides": overrides, "seconds": round(time.time() - t, 1), "rows": rows}


def relative(text: str) -> str:
    """Paths inside the repository written relative to it (the commands run from its root)."""
    return text.replace(str(REPO) + os.sep, "").replace(str(REPO.parent / "shared") + os.sep, "../shared/")


def preregistration_file(scale: Scale) -> Path | None:
    """The pre-registration a scale's run files wait for (None: a scale without one)."""
    return PREREGISTERED / scale.preregistration if scale.preregistration else None


def require_preregistration(scale: Scale) -> None:
    """Refuse to produce confirmatory run files of a pre-registered scale before its pre-registration exists."""
    path = preregistration_file(scale)
    if path is not None and not path.is_file():
        raise RuntimeError(f"scale {scale.name} is pre-registered: {relative(str(path))} must exist (and be committed) "
                           "before its first run file. Run the pilot (--pilot), then "
                           f"`python benchmarks/coda_ablation_report.py --preregister benchmarks/results/"
                           f"coda_ablation-{scale.name}`, commit the file, then the runs.")


def run_one(arm: str, seed: int, scale: Scale, *, out: Path, data_root: Path, split_file: Path, num_train: int,
            tasks: list[str], command: str, pilot: bool = False) -> Path:
    """Pretrain and evaluate one (arm, seed) and write its run file; a finished run file is kept.

    Args:
        pilot: write to ``<out>/pilot/`` (runs that size the pre-registration and never enter its tests)
            instead of ``<out>/runs/``; without it a pre-registered scale needs its pre-registration first.
    """
    if not pilot:
        require_preregistration(scale)
    path = out / ("pilot" if pilot else "runs") / f"{arm}-seed{seed}.json"
    record = json.loads(path.read_text()) if path.is_file() else None
    if record is not None and all(t in record["evaluation"] for t in tasks):
        print(f"[{arm} seed {seed}] done already: {path}", flush=True)
        return path
    run = out / "pretrain" / ("pilot" if pilot else "") / f"{arm}-s{seed}"
    pre = None
    if arm != "random":
        pre = pretrain_run(arm, seed, scale, run=run, source=data_root / MEDNIST, split_file=split_file,
                           num_train=num_train)
    spec, model = (str(run) if pre else f"random:{scale.backbone}"), f"{arm}-seed{seed}"
    commands = [] if pre is None else [relative(f"organfm pretrain --method {pre['method']} "
                                                + (f"--config {pre['config']} " if pre.get("config") else "")
                                                + " ".join(pre["overrides"]))]
    evaluation = dict(record["evaluation"]) if record else {}
    for name in tasks:
        if name in evaluation:
            continue
        o = task_overrides(name, scale, seed, data_root=data_root, split_file=split_file, out=run / "eval" / name)
        evaluation[name] = evaluate_run(spec, model, name, o)
        print(f"[{arm} seed {seed}] {name}: {evaluation[name]['seconds']:.0f} s", flush=True)
    for name, ev in evaluation.items():
        commands.append(relative(f"organfm evaluate --models {model}={spec} --task configs/tasks/{name}.yaml "
                                 + " ".join(ev["overrides"])))
    import torch
    record = {"arm": arm, "seed": seed, "scale": dataclasses.asdict(scale), "pilot": pilot, "pretrain": pre,
              "health": health_record(run if pre else None), "evaluation": evaluation,
              "commands": commands, "bench_command": command,
              "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                              "device": torch.cuda.get_device_name() if scale.device == "cuda" else
                              f"{platform.machine()} CPU"}}
    write_atomic(path, relative(json.dumps(record, indent=1)))
    print(f"[{arm} seed {seed}] wrote {path}", flush=True)
    return path


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Scale]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=sorted(SCALES), default="cpu-1k")
    p.add_argument("--arms", default=None, help=f"comma list of {','.join(VALID_ARMS)} (default: the scale's; "
                   f"--pilot: {','.join(PILOT_ARMS)})")
    p.add_argument("--seeds", default=None, help="comma list of pretraining seeds (default: each arm's at the scale; "
                   f"--pilot: {','.join(map(str, PILOT_SEEDS))})")
    p.add_argument("--pilot", action="store_true", help="pilot runs into <out>/pilot/: they size the "
                   "pre-registration (the sd of each contrast) and never enter its tests")
    p.add_argument("--tasks", default=None, help="comma list of task files to evaluate (default: the scale's)")
    p.add_argument("--steps", type=int, default=None, help="override the scale's pretraining steps (a smoke run)")
    p.add_argument("--data", default=None, help="folder holding mednist/, ... (default $ORGANFM_DATA or ../shared/data)")
    p.add_argument("--out", default=None, help="default benchmarks/results/coda_ablation-<scale>")
    p.add_argument("--docs", default=str(REPO / "docs" / "results.md"), help="results page ('' to skip)")
    args = p.parse_args(argv)
    scale = SCALES[args.scale]
    if args.steps:
        scale = dataclasses.replace(scale, steps=args.steps)
    if args.pilot and scale.preregistration is None:
        p.error(f"--pilot sizes a pre-registration; scale {scale.name} has none")
    default_arms = PILOT_ARMS if args.pilot else scale.arms
    args.arms = [a for a in args.arms.split(",") if a] if args.arms else list(default_arms)
    if set(args.arms) - set(VALID_ARMS):
        p.error(f"unknown arms {sorted(set(args.arms) - set(VALID_ARMS))}; valid: {', '.join(VALID_ARMS)}")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s] if args.seeds else None
    except ValueError:
        p.error(f"--seeds takes integers, e.g. 0,1,2; got {args.seeds!r}")
    if args.pilot:
        args.seeds = args.seeds or list(PILOT_SEEDS)
        overlap = sorted({s for a in args.arms for s in scale.seeds_of(a)} & set(args.seeds))
        if overlap:
            p.error(f"pilot seeds {overlap} are confirmatory seeds of scale {scale.name}: a pilot model must not also "
                    f"be a tested one (default pilot seeds: {','.join(map(str, PILOT_SEEDS))})")
    known = [t for t, _ in scale.tasks]
    args.tasks = [t for t in args.tasks.split(",") if t] if args.tasks else known
    if set(args.tasks) - set(known):
        p.error(f"unknown tasks {sorted(set(args.tasks) - set(known))} at scale {scale.name}; valid: {', '.join(known)}")
    args.data = Path(args.data or os.environ.get("ORGANFM_DATA") or REPO.parent / "shared" / "data").resolve()
    if not (args.data / MEDNIST).is_file():
        p.error(f"{args.data / MEDNIST} not found: pass --data pointing at the folder that holds mednist/")
    return args, scale


def schedule(args: argparse.Namespace, scale: Scale) -> list[tuple[str, int]]:
    """(arm, seed) of this call in seed-major order, so the arms of one seed finish together (pairs first)."""
    plan = [(a, s) for a in args.arms for s in (args.seeds if args.seeds is not None else scale.seeds_of(a))]
    return sorted(plan, key=lambda x: (x[1], args.arms.index(x[0])))


def command_line(args: argparse.Namespace, scale: Scale) -> str:
    """This call's command, flags only where not the default."""
    words = ["python benchmarks/coda_ablation.py", f"--scale {scale.name}", f"--arms {','.join(args.arms)}"]
    if args.seeds is not None:
        words.append(f"--seeds {','.join(map(str, args.seeds))}")
    words += ["--pilot"] if getattr(args, "pilot", False) else []
    words += [f"--{k} {v}" for k, v in (("steps", args.steps), ("out", args.out)) if v]
    return " ".join(words)


def expected_minutes(scale: Scale, arms: list[str], results: Path = REPO / "benchmarks" / "results") -> dict[str, float]:
    """Minutes of pretraining per run of each arm from ``gpu_throughput.py``'s figures at this scale's
    settings (``benchmarks/results/gpu_throughput-<scale>-*/gpu_throughput.json``, the fastest case of each
    method at the scale's batch); arms without a figure are left out."""
    best: dict[str, float] = {}
    for path in sorted(results.glob(f"gpu_throughput-{scale.name}-*/gpu_throughput.json")):
        data = json.loads(path.read_text())
        for case in data.get("cases", []):
            if case.get("batch") == scale.batch_size and case.get("step_s"):
                best[case["method"]] = min(best.get(case["method"], math.inf), float(case["step_s"]))
    return {a: scale.steps * best[ARMS[a][0]] / 60 for a in arms if a in ARMS and ARMS[a][0] in best}


def print_plan(args: argparse.Namespace, scale: Scale, plan: list[tuple[str, int]]) -> None:
    """The runs of this call and, where measured, their expected pretraining minutes."""
    print(f"scale {scale.name}: {len(plan)} runs ({', '.join(f'{a}-seed{s}' for a, s in plan)})", flush=True)
    minutes = expected_minutes(scale, args.arms)
    if minutes:
        total = sum(minutes.get(a, 0.0) for a, _ in plan)
        print("expected pretraining minutes per run (gpu_throughput figures): "
              + ", ".join(f"{a} {m:.1f}" for a, m in minutes.items()) + f"; this call ~{total:.0f} min + evaluation",
              flush=True)
    elif scale.device == "cuda":
        print(f"no benchmarks/results/gpu_throughput-{scale.name}-*/ figures: `python benchmarks/gpu_throughput.py "
              f"--scale {scale.name}` on the GPU measures the minutes per run first", flush=True)


def main(argv: list[str] | None = None) -> int:
    args, scale = parse_args(argv)
    if not args.pilot:
        require_preregistration(scale)  # before any pretraining, not after the first one
    out = Path(args.out or REPO / "benchmarks" / "results" / f"coda_ablation-{scale.name}").resolve()
    if scale.device == "cpu":
        import torch
        torch.set_num_threads(int(os.environ.get("ORGANFM_THREADS", "2")))
    plan = schedule(args, scale)
    print_plan(args, scale, plan)
    split_file, num_train = save_mednist_split(args.data, out)
    command = command_line(args, scale)
    for arm, seed in plan:
        run_one(arm, seed, scale, out=out, data_root=args.data, split_file=split_file, num_train=num_train,
                tasks=args.tasks, command=command, pilot=args.pilot)
    if args.docs and not args.steps and not args.pilot:  # a smoke run or a pilot never reaches the page
        from coda_ablation_report import write_block
        write_block(out, Path(args.docs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
