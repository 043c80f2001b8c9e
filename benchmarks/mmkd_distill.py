"""MMKD distillation: does one student distilled from several *different* experts beat each of them?

MMKD-CLIP's claim (``shared/design/seed-systems.md`` §4a) at a CPU scale, with teachers worth distilling: each
knows something the student could not learn from its own architecture alone, none saw an evaluation label.

**Data** (``cut_data``; pretraining images only, written as PNGs under ``<out>/pretrain/data/`` with a manifest
per set). Two disjoint domains of the local data, drawn from the evaluation's TRAIN splits only:

- ``ct``: MedNIST's CT classes (AbdomenCT, ChestCT, HeadCT), ``MEDNIST_PER_CLASS`` train images each;
- ``xr``: MedNIST's radiograph/MR classes (BreastMRI, CXR, Hand), ``MEDNIST_PER_CLASS`` each, plus
  ``PNEUMONIA_TRAIN`` PneumoniaMNIST train images.

(The TotalSegmentator organ crops are not in any pretraining set: the CT evaluation is cut from that scan.)

**Teachers** (``TEACHERS``): label-free DINO (``configs/small/dino.yaml``: 64 + 2 x 32 px, K = 256, batch 32,
300 steps; each teacher's own overrides in ``Teacher.overrides``), three architectures, seeds
``TEACHER_SEEDS``: ``ct`` = ``test_convnext`` on the CT set (the CT specialist), ``xr`` = ``test_resnet`` on the
radiograph/MR set (the radiograph specialist), ``all`` = ``test_efficientnet`` on the union (a generalist with the
student's own data). A teacher run must reach the health verdict ``learning`` (its ``health.json``) to be read.

**Students** (``ARMS``): ``mobilenetv3_small_100`` (1.5 M parameters) at 64 px, ``configs/small/mmkd_student.yaml``
(300 steps of batch 32; FD summed over D with w = 50/128, so its strength does not depend on D; D = 128),
distilled with ``organfm pretrain --method mmkd`` on the union from all three teachers, each image drawing one
of *its domain's* teachers (``method.teacher_filter=column``: a CT image ``ct`` or ``all``, a radiograph ``xr``
or ``all``: the seed's ``available_clips``). Student seed s distils the teachers of seed
``TEACHER_SEEDS[s % 2]``, so student seeds span the teachers' seeds. Two arms, ``STUDENT_SEEDS`` each:
``student`` (projector trained on reconstruction only, the default) and ``student_ntxent``
(``method.projector_contrastive=1``: the projector's NT-Xent term across teachers).

**Endpoints** (``ENDPOINTS``; frozen features, ``organfm.evaluation.evaluate_models`` with the task files
``configs/tasks/*.yaml`` and the overrides in ``EVALS``), two per domain, each a number in [0, 1] taken as is:

- CT: TotalSegmentator CT organ crops, leave-one-out kNN organ accuracy (zero-shot; 10 organs), and MedNIST
  CT classes 5-shot linear accuracy;
- radiograph: PneumoniaMNIST linear AUC, and MedNIST radiograph/MR classes 5-shot linear accuracy.

A domain's score is the mean of its two endpoints; the **mean over domains** is the mean of the two scores.

**Pre-registered** (``benchmarks/preregistered/mmkd-small.yaml``, committed before the first run file):

1. reference = the teacher with the highest mean (over its learning runs) of the mean over domains; each arm
   against it on the mean over domains, Welch's t across the arm's student seeds and the reference's teacher
   seeds, two-sided, α = 0.05, Holm over the arms (table 1);
2. each arm against each domain's specialist on that domain's score (``ct`` on CT, ``xr`` on radiograph),
   Welch, Holm over the 4 rows (table 2).

n and the minimum detectable effect (Welch, power 0.8, at α/m) beside every p. Reported, not tested: the
cross-teacher code alignment of each student run's projector (cosine of one image's codes across two teachers
against shuffled pairs) per projector setting; accuracy, balanced accuracy and the majority rate beside each
classification endpoint.

Each (teacher or arm, seed) writes ``<out>/runs/<name>-seed<s>.json`` (committed); pretraining and evaluation
folders live under ``<out>/pretrain/`` (git-ignored). The report aggregates whatever run files exist::

    python benchmarks/mmkd_distill.py --preregister              # once; commit the file before any run file
    python benchmarks/mmkd_distill.py --model ct --seed 0        # one run: pretrain (or reuse), evaluate, run file
    python benchmarks/mmkd_distill.py --model ct --seed 0 --stage pretrain    # only pretrain
    python benchmarks/mmkd_distill.py --model student --seed 0   # needs the teachers of seed 0 finished
    python benchmarks/mmkd_distill.py --report                   # results.md and the page section only
    python benchmarks/mmkd_distill.py --smoke                    # a few steps into a temp folder (not a result)
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import claims as st  # noqa: E402
from benchmarks.results_page import write_section  # noqa: E402
from organfm.outputs.atomic import write_atomic  # noqa: E402
from benchmarks.runs import finished, health_record, pretrain_or_resume  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "mmkd_distill"
PREREGISTRATION = REPO / "benchmarks" / "preregistered" / "mmkd-small.yaml"
BEGIN, END = "<!-- BEGIN mmkd -->", "<!-- END mmkd -->"
STEPS = 300
TEACHER_RECIPE = "configs/small/dino.yaml"
REVISION = (
    "2026-12-01, before any run file, from 300-step seed-0 trials on each teacher's own data (recipe otherwise as "
    "registered; not committed): ct (test_convnext) at the recipe's teacher temperature 0.04 ended uniform "
    "(per-sample teacher entropy 1.00 ln K, health 'not learning yet'), at 0.02 it headed there (0.93 ln K by step "
    "120), at 0.01 it learned (0.74 ln K, monitor kNN 0.45 -> 0.84): ct uses 0.01. xr (test_resnet) at 0.01 "
    "collapsed to a few prototypes (batch-mean entropy 0.98 of ln K = 5.55), at 0.04 it learned (kNN 0.85 -> "
    "0.94): xr keeps 0.04. The generalist was test_vit: at 0.04 its kNN fell (0.69 -> 0.64, 'not learning yet'), "
    "at 0.01 it collapsed; test_efficientnet at 0.04 learned (kNN 0.61 -> 0.78, 0.73 ln K) and replaces it, so the "
    "three teachers are a ConvNeXt, a ResNet and an EfficientNet, not a ViT")
STUDENT_RECIPE = "configs/small/mmkd_student.yaml"
STUDENT_ARCH = "mobilenetv3_small_100"
TEACHER_SEEDS = (0, 1)
STUDENT_SEEDS = (0, 1, 2, 3, 4)
MIN_TEACHER_RUNS = 2   # learning runs a teacher needs to be compared (Welch needs 2 per side)
MIN_STUDENT_RUNS = 3
MEDNIST_PER_CLASS = 400
PNEUMONIA_TRAIN = 600
KEEP = ("accuracy", "balanced_accuracy", "auc", "majority_accuracy", "knn_accuracy", "nmi")

# domain -> (label, MedNIST classes of its pretraining set and 5-shot endpoint, PneumoniaMNIST train images)
DOMAINS: dict[str, tuple[str, tuple[str, ...], int]] = {
    "ct": ("CT", ("AbdomenCT", "ChestCT", "HeadCT"), 0),
    "xr": ("radiograph/MR", ("BreastMRI", "CXR", "Hand"), PNEUMONIA_TRAIN),
}


@dataclass(frozen=True)
class Teacher:
    """A teacher: its method, architecture, pretraining domains and the domain it is the specialist of."""

    name: str
    method: str
    arch: str
    domains: tuple[str, ...]
    specialist_of: str | None
    overrides: tuple[str, ...] = ()


TEACHERS: dict[str, Teacher] = {
    # From 300-step seed-0 trials before any run file (REVISION): the ConvNeXt on one domain's 1,200 CT images needs
    # a sharper teacher than the recipe's 0.04; the ResNet learns at 0.04; test_vit did not learn here, so the
    # generalist is an EfficientNet
    "ct": Teacher("ct", "dino", "test_convnext", ("ct",), "ct", ("teacher.temp=0.01", "teacher.warmup_temp=0.01")),
    "xr": Teacher("xr", "dino", "test_resnet", ("xr",), "xr"),
    "all": Teacher("all", "dino", "test_efficientnet", ("ct", "xr"), None),
}
# arm -> the overrides beyond the student recipe
ARMS: dict[str, tuple[str, ...]] = {
    "student": ("method.projector_contrastive=0.0",),
    "student_ntxent": ("method.projector_contrastive=1.0",),
}
ARM_LABELS = {"student": "student (reconstruction-only projector)",
              "student_ntxent": "student (NT-Xent projector)"}

_FEWSHOT = ("protocols=[fewshot]", "fewshot.fractions=[]", "fewshot.shots=[5]", "fewshot.seeds=5",
            "fewshot.methods=[linear]", "data.max_train=600", "data.max_val=150", "data.max_test=600",
            "report.scatter_points=0")
# evaluation id -> (task file, overrides); one evaluate_models call each
EVALS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ct_organs": ("totalseg_ct_organs", ("protocols=[clusters]", "clusters.embeddings=[]", "report.scatter_points=0")),
    "mednist_ct": ("mednist", (*_FEWSHOT, f"data.organs=[{','.join(DOMAINS['ct'][1])}]")),
    "pneumonia": ("pneumoniamnist", ("protocols=[linear]", "linear.lrs=[0.01,0.1,1.0]",
                                     "linear.weight_decays=[0.0,0.0001]", "linear.epochs=60", "data.max_train=1500",
                                     "data.max_val=300", "report.scatter_points=0")),
    "mednist_xr": ("mednist", (*_FEWSHOT, f"data.organs=[{','.join(DOMAINS['xr'][1])}]")),
}
# endpoint -> (evaluation id, protocol, setting, metric, domain, label)
ENDPOINTS: dict[str, tuple[str, str, str | None, str, str, str]] = {
    "ct_organs_knn": ("ct_organs", "clusters", None, "knn_accuracy", "ct",
                      "CT organ crops (10 organs, one scan), LOO kNN accuracy"),
    "mednist_ct_5shot": ("mednist_ct", "fewshot-linear", "5-shot", "accuracy", "ct",
                         "MedNIST CT classes, 5-shot linear accuracy"),
    "pneumonia_auc": ("pneumonia", "linear", None, "auc", "xr", "PneumoniaMNIST linear AUC"),
    "mednist_xr_5shot": ("mednist_xr", "fewshot-linear", "5-shot", "accuracy", "xr",
                         "MedNIST radiograph/MR classes, 5-shot linear accuracy"),
}
MEAN = "mean_over_domains"
SMOKE_CAPS = ("data.max_train=90", "data.max_val=30", "data.max_test=90")  # --smoke only: small splits


# ------------------------------------------------------------------------------------------------------- data
def cut_data(data_root: Path, out: Path, *, per_class: int = MEDNIST_PER_CLASS,
             pneumonia: int | None = None) -> dict[str, Path]:
    """Write the pretraining PNGs and one manifest per set (``ct.csv``, ``xr.csv``, ``union.csv``).

    Every image comes from its source's evaluation TRAIN split (MedNIST: the task's hashed split of the whole
    archive; PneumoniaMNIST: the npz's ``train`` key). Each manifest row has ``split=train`` and a ``teachers``
    column naming the teachers an image may draw (its domain's specialist and the generalist).

    Returns:
        set name -> its manifest.
    """
    from PIL import Image

    from organfm.data import build_dataset

    done = out / "done.json"
    settings = {"per_class": per_class, "pneumonia": pneumonia, "domains": {d: list(v[1]) for d, v in DOMAINS.items()}}
    manifests = {name: out / f"{name}.csv" for name in (*DOMAINS, "union")}
    if done.is_file() and json.loads(done.read_text()) == settings:
        return manifests
    rows: dict[str, list[tuple[str, str]]] = {d: [] for d in DOMAINS}
    ds = build_dataset(data_root / "mednist" / "MedNIST.tar.gz", split="train")  # the task's split (seed 0, 80/10/10)
    organs = np.asarray(ds.organ_ids)
    rng = np.random.default_rng(0)
    for domain, (_, classes, n_pneu) in DOMAINS.items():
        for name in classes:
            o = ds.organs.index(name)
            (out / "png" / name).mkdir(parents=True, exist_ok=True)
            for i in rng.permutation(np.flatnonzero(organs == o))[:per_class]:
                img = (ds[int(i)]["image"][0].numpy() * 255).round().astype(np.uint8)
                rel = f"png/{name}/{int(i):06d}.png"
                Image.fromarray(img).save(out / rel)
                rows[domain].append((rel, name))
        n_pneu = n_pneu if pneumonia is None or not n_pneu else pneumonia
        if n_pneu:
            train = np.load(data_root / "pneumoniamnist-unofficial" / "pneumoniamnist.npz")["train_images"]
            (out / "png" / "PneumoniaCXR").mkdir(parents=True, exist_ok=True)
            for i in rng.permutation(len(train))[:n_pneu]:
                rel = f"png/PneumoniaCXR/{int(i):05d}.png"
                Image.fromarray(train[int(i)]).save(out / rel)
                rows[domain].append((rel, "PneumoniaCXR"))
    available = {d: ";".join(t.name for t in TEACHERS.values() if d in t.domains) for d in DOMAINS}
    for name, path in manifests.items():
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "organ", "split", "teachers"])
            for d in DOMAINS if name == "union" else (name,):
                w.writerows((rel, organ, "train", available[d]) for rel, organ in rows[d])
    done.write_text(json.dumps(settings))
    return manifests


# ---------------------------------------------------------------------------------------------------- running
def is_teacher(name: str) -> bool:
    if name not in TEACHERS and name not in ARMS:
        raise ValueError(f"unknown model {name!r}: teachers {', '.join(TEACHERS)}, arms {', '.join(ARMS)}")
    return name in TEACHERS


def teacher_seed_of(student_seed: int) -> int:
    """The teachers' pretraining seed a student seed distils (student seeds span the teachers' seeds)."""
    return TEACHER_SEEDS[student_seed % len(TEACHER_SEEDS)]


def run_folder(out: Path, name: str, seed: int) -> Path:
    return out / "pretrain" / (f"teacher-{name}-s{seed}" if is_teacher(name) else f"{name}-s{seed}")


def recipe(name: str, seed: int, *, out: Path, manifests: Mapping[str, Path], steps: int = STEPS
           ) -> tuple[str, list[str]]:
    """(config file, overrides) of one pretraining run: what ``organfm pretrain --config <file>`` is given."""
    run = run_folder(out, name, seed)
    common = [f"trainer.max_steps={steps}", f"trainer.seed={seed}", f"trainer.out_dir={run}", "trainer.progress=false",
              f"trainer.checkpoint_every={max(1, steps // 3)}"]
    if is_teacher(name):
        t = TEACHERS[name]
        data = manifests["union" if len(t.domains) > 1 else t.domains[0]]
        return TEACHER_RECIPE, [f"backbone.name={t.arch}", *t.overrides, f"data={data}", "data.split=train",
                                *common]
    ts = teacher_seed_of(seed)
    teachers = ",".join(f"{t}={run_folder(out, t, ts)}" for t in TEACHERS)
    return STUDENT_RECIPE, [f"method.teachers=[{teachers}]", *ARMS[name], f"data={manifests['union']}",
                            "data.split=train", f"method.features_dir={out / 'pretrain' / f'features-t{ts}'}", *common]


def pretrain(name: str, seed: int, *, out: Path, manifests: Mapping[str, Path], steps: int = STEPS) -> dict[str, Any]:
    """Pretrain (or resume, or reuse) one run; return the run file's ``pretrain`` record."""
    from organfm.config import load_config
    from organfm.monitor import read_health

    run = run_folder(out, name, seed)
    config, overrides = recipe(name, seed, out=out, manifests=manifests, steps=steps)
    if not is_teacher(name):
        missing = [t for t in TEACHERS if not finished(run_folder(out, t, teacher_seed_of(seed)), steps)]
        if missing:
            raise SystemExit(f"[{name} seed {seed}] teachers {missing} of seed {teacher_seed_of(seed)} are not "
                             "finished: run them first (--model <teacher> --seed <s>)")
    t0 = time.time()
    if not finished(run, steps):
        run.mkdir(parents=True, exist_ok=True)
        pretrain_or_resume(run, steps, lambda: load_config(None, REPO / config, overrides))
        if not finished(run, steps):
            raise SystemExit(f"[{name} seed {seed}] stopped before step {steps}; run the same command to resume")
        (run / "bench_seconds.json").write_text(json.dumps({"seconds": round(time.time() - t0, 1)}))
    history = (read_health(run) or {}).get("history") or [{}]
    loop = history[-1].get("time", math.nan) - history[0].get("time", math.nan)
    timing = run / "bench_seconds.json"
    return {"config": config, "overrides": overrides, "steps": steps,
            "seconds": json.loads(timing.read_text())["seconds"] if timing.is_file() else None,
            "loop_seconds": round(loop, 1) if math.isfinite(loop) else None}


def evaluate(spec: str, name: str, *, data_root: Path, out: Path, seed: int,
             evals: Sequence[str] = tuple(EVALS), extra_overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Every evaluation of one model (one ``evaluate_models`` call per evaluation id); rows trimmed to KEEP."""
    from organfm.evaluation import evaluate_models, load_task

    result = {}
    for ev in evals:
        file, extra = EVALS[ev]
        caps = [o for o in extra_overrides if file != "totalseg_ct_organs"]
        overrides = [*extra, *caps, f"data.root={data_root}", f"seed={seed}", f"out_dir={out / ev}"]
        t = time.time()
        res = evaluate_models(load_task(REPO / "configs" / "tasks" / f"{file}.yaml", overrides), {name: spec})
        rows = [{"protocol": r["protocol"], "setting": r["setting"],
                 "values": {m: [round(float(x), 6) for x in v] for m, v in r["values"].items() if m in KEEP}}
                for r in res["rows"] if r["model"] == name]
        result[ev] = {"task": f"configs/tasks/{file}.yaml", "overrides": overrides, "seconds": round(time.time() - t, 1),
                      "rows": rows}
        print(f"[{name} seed {seed}] {ev}: {result[ev]['seconds']:.0f} s", flush=True)
    return result


def code_alignment(folder: Path, *, seed: int = 0) -> dict[str, Any]:
    """Cross-teacher alignment of a projector's stored codes (``projected-<key>/teacher-<k>.npy``, unit rows).

    For each pair of teachers: the mean cosine of one image's two codes, against the mean cosine of image i's
    code from one teacher and a random other image's code from the other (one fixed permutation). Over every
    image (each teacher is projected for every image, available or not).
    """
    from organfm.batches.features import FIT_FILE
    import torch

    names = list(torch.load(folder / FIT_FILE, map_location="cpu", weights_only=True)["names"])
    codes = [np.load(folder / f"teacher-{k}.npy", mmap_mode="r") for k in range(len(names))]
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(codes[0]))
    pairs = {}

    def cos(a: np.ndarray, b: np.ndarray) -> float:
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        return float((a * b).sum(1).mean())

    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            a, b = np.asarray(codes[i], dtype=np.float64), np.asarray(codes[j], dtype=np.float64)
            pairs[f"{names[i]}-{names[j]}"] = {"same_image": round(cos(a, b), 4), "shuffled": round(cos(a, b[perm]), 4)}
    same = float(np.mean([p["same_image"] for p in pairs.values()])) if pairs else math.nan
    shuffled = float(np.mean([p["shuffled"] for p in pairs.values()])) if pairs else math.nan
    return {"pairs": pairs, "same_image": round(same, 4), "shuffled": round(shuffled, 4), "images": len(codes[0])}


def relative(text: str) -> str:
    """Paths inside the repository written relative to it (the commands run from its root)."""
    return text.replace(str(REPO) + os.sep, "").replace(str(REPO.parent / "shared") + os.sep, "../shared/")


def run_file(out: Path, name: str, seed: int) -> Path:
    return out / "runs" / f"{name}-seed{seed}.json"


def run_one(name: str, seed: int, *, out: Path, data_root: Path, stage: str = "all", steps: int = STEPS,
            manifests: Mapping[str, Path] | None = None, command: str = "",
            eval_overrides: Sequence[str] = ()) -> Path | None:
    """Pretrain one (teacher or arm, seed) and/or evaluate it and write its run file (kept when present)."""
    path = run_file(out, name, seed)
    if path.is_file() and stage != "pretrain":
        print(f"[{name} seed {seed}] done already: {relative(str(path))}", flush=True)
        return path
    manifests = manifests or cut_data(data_root, out / "pretrain" / "data")
    pre = pretrain(name, seed, out=out, manifests=manifests, steps=steps)
    if stage == "pretrain":
        return None
    run = run_folder(out, name, seed)
    import torch

    from organfm.features.encoders import load_encoder

    make, contract = load_encoder(str(run))
    parameters = sum(p.numel() for p in make().parameters())
    evaluation = evaluate(str(run), name, data_root=data_root, out=run / "eval", seed=seed,
                          extra_overrides=eval_overrides)
    record: dict[str, Any] = {
        "model": name, "kind": "teacher" if is_teacher(name) else "student", "seed": seed,
        "architecture": contract.get("architecture"), "parameters": parameters,
        "pretrain": pre, "health": health_record(run), "evaluation": evaluation,
        "commands": [relative(f"organfm pretrain --config {pre['config']} " + " ".join(pre["overrides"]))]
        + [relative(f"organfm evaluate --models {name}={run} --task {e['task']} " + " ".join(e["overrides"]))
           for e in evaluation.values()],
        "bench_command": command,
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                        "device": f"{platform.machine()} CPU", "nice": os.nice(0)},
        "timings": {"pretrain_s": pre["seconds"], "evaluation_s": round(sum(e["seconds"] for e in evaluation.values()), 1)},
    }
    if is_teacher(name):
        t = TEACHERS[name]
        record["teacher"] = {"method": t.method, "domains": list(t.domains), "specialist_of": t.specialist_of}
    else:
        info = json.loads((run / "data.json").read_text()).get("distillation", {})
        folder = Path(info["projected_file"])
        record["student"] = {"arm": name, "teacher_seed": teacher_seed_of(seed),
                             "teachers": {k: {"spec": relative(v["spec"]), "available_images": v.get("available_images")}
                                          for k, v in info.get("teachers", {}).items()},
                             "projector_loss": info.get("projector_loss")}
        record["alignment"] = code_alignment(folder)
    write_atomic(path, relative(json.dumps(record, indent=1)) + "\n")
    print(f"[{name} seed {seed}] wrote {relative(str(path))}", flush=True)
    return path


def init_architectures() -> dict[str, str]:
    """Model -> the architecture whose random initialisation is its floor (the arms share the student's)."""
    return {**{t.name: t.arch for t in TEACHERS.values()}, "student": STUDENT_ARCH}


def init_file(out: Path, name: str, seed: int) -> Path:
    return out / "init" / f"{name}-seed{seed}.json"


def run_init(name: str, seed: int, *, out: Path, data_root: Path, eval_overrides: Sequence[str] = ()) -> Path:
    """Evaluate ``random:<architecture>`` of model ``name`` (init seed ``seed``) through the same evaluations
    as the trained models: the floor that shows the endpoints separate a trained model from its initial weights
    (reported, not tested). Writes ``<out>/init/<name>-seed<s>.json`` (kept when present)."""
    path = init_file(out, name, seed)
    if path.is_file():
        print(f"[init {name} seed {seed}] done already: {relative(str(path))}", flush=True)
        return path
    arch = init_architectures()[name]
    spec = f"random:{arch}"
    evaluation = evaluate(spec, name, data_root=data_root, out=out / "pretrain" / f"init-{name}-s{seed}" / "eval",
                          seed=seed, extra_overrides=eval_overrides)
    record = {"model": name, "kind": "init", "architecture": arch, "seed": seed, "spec": spec,
              "evaluation": evaluation,
              "commands": [relative(f"organfm evaluate --models {name}={spec} --task {e['task']} "
                                    + " ".join(e["overrides"])) for e in evaluation.values()],
              "timings": {"evaluation_s": round(sum(e["seconds"] for e in evaluation.values()), 1)}}
    write_atomic(path, relative(json.dumps(record, indent=1)) + "\n")
    print(f"[init {name} seed {seed}] wrote {relative(str(path))}", flush=True)
    return path


# ---------------------------------------------------------------------------------------------------- statistics
def endpoint_values(run: Mapping[str, Any], endpoint: str, metric: str | None = None) -> list[float]:
    """The probe-seed values of ``endpoint`` (or another ``metric`` of its row) in one run file ([] if absent)."""
    ev, protocol, setting, main, _, _ = ENDPOINTS[endpoint]
    rows = [r for r in run.get("evaluation", {}).get(ev, {}).get("rows", [])
            if r["protocol"] == protocol and (setting is None or r["setting"] == setting)]
    return [float(v) for r in rows[:1] for v in r["values"].get(metric or main, [])]


def scores(run: Mapping[str, Any]) -> dict[str, float]:
    """One run's endpoint means (probe seeds averaged), domain scores and mean over domains (nan if incomplete)."""
    out = {e: (float(np.mean(v)) if (v := endpoint_values(run, e)) else math.nan) for e in ENDPOINTS}
    for d in DOMAINS:
        out[d] = float(np.mean([out[e] for e, spec in ENDPOINTS.items() if spec[4] == d]))
    out[MEAN] = float(np.mean([out[d] for d in DOMAINS]))
    return out


def welch_mde(n_a: int, n_b: int, alpha: float, power: float = st.POWER) -> float:
    """Minimum detectable effect of the two-sided Welch t at level ``alpha``, in units of a common sd.

    With equal sds σ = 1 the standard error is √(1/n_a + 1/n_b) and the Welch–Satterthwaite df is
    (1/n_a + 1/n_b)² / ((1/n_a)²/(n_a − 1) + (1/n_b)²/(n_b − 1)); the power of a true difference δ is
    P(|T| > t*) for T ~ noncentral t(df, δ/se). Returns the δ with that power (inf below 2 runs a side).
    """
    from scipy import optimize, stats

    if n_a < 2 or n_b < 2:
        return math.inf
    va, vb = 1 / n_a, 1 / n_b
    se, df = math.sqrt(va + vb), (va + vb) ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1))
    t_crit = float(stats.t.ppf(1 - alpha / 2, df))

    def pw(d: float) -> float:
        lam = d / se
        return float(stats.nct.sf(t_crit, df, lam)) + float(np.nan_to_num(stats.nct.cdf(-t_crit, df, lam)))

    hi = 1.0
    while pw(hi) < power:
        hi *= 2
    return float(optimize.brentq(lambda d: pw(d) - power, 0.0, hi, xtol=1e-8))


def pooled_sd(a: Sequence[float], b: Sequence[float]) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) + len(b) < 3:
        return math.nan
    ss = (len(a) - 1) * (a.var(ddof=1) if len(a) > 1 else 0) + (len(b) - 1) * (b.var(ddof=1) if len(b) > 1 else 0)
    return float(math.sqrt(ss / (len(a) + len(b) - 2)))


def welch_verdict(delta: float, p_holm: float, mde_sd: float, sd: float, *, alpha: float,
                  gates: Sequence[st.LearningRuns]) -> str:
    """supported / not supported (inconclusive when the MDE exceeds the observed effect) / no verdict."""
    blocked = [g for g in gates if g.blocks]
    if blocked:
        return f"no verdict (fewer than {blocked[0].min_runs} learning runs on a side)"
    if not math.isfinite(p_holm):
        return "no verdict (no test: fewer than 2 runs on a side, or no spread)"
    if p_holm < alpha:
        return "supported" if delta > 0 else "not supported (opposite sign, Holm p < α)"
    observed = abs(delta) / sd if sd > 0 else math.inf
    if not observed >= mde_sd:
        return f"not supported — inconclusive (MDE {mde_sd:.2f} sd > observed {observed:.2f} sd)"
    return f"not supported (MDE {mde_sd:.2f} sd ≤ observed {observed:.2f} sd)"


def analyse(runs: Sequence[Mapping[str, Any]], *, alpha: float = st.ALPHA) -> dict[str, Any]:
    """The pre-registered tables from run files.

    Returns:
        ``models`` (name -> seed -> scores), ``gates`` (name -> LearningRuns), ``reference`` (the pre-registered
        best teacher on the mean over domains, None without a teacher of enough learning runs), ``table1``
        (arm vs reference) and ``table2`` (arm vs each domain's specialist on that domain), each row with the
        two sides' values, delta, Welch p, Holm p, n, MDE (sd units and endpoint units) and the verdict.
    """
    models: dict[str, dict[int, dict[str, float]]] = {}
    verdicts: dict[str, dict[int, str | None]] = {}
    for r in runs:
        models.setdefault(r["model"], {})[int(r["seed"])] = scores(r)
        verdicts.setdefault(r["model"], {})[int(r["seed"])] = (r.get("health") or {}).get("verdict")
    gates = {m: st.learning_seeds(v, min_runs=MIN_TEACHER_RUNS if m in TEACHERS else MIN_STUDENT_RUNS)
             for m, v in verdicts.items()}

    def kept(m: str, column: str) -> list[float]:
        return [models[m][s][column] for s in gates[m].kept if math.isfinite(models[m][s][column])]

    eligible = [t for t in TEACHERS if t in gates and not gates[t].blocks and kept(t, MEAN)]
    reference = max(eligible, key=lambda t: float(np.mean(kept(t, MEAN)))) if eligible else None

    def rows(pairs: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
        out = []
        for arm, teacher, column in pairs:
            a = kept(arm, column) if arm in models else []
            b = kept(teacher, column) if teacher in models else []
            _, df, p = st.welch_t(a, b)
            delta = float(np.mean(a) - np.mean(b)) if a and b else math.nan
            out.append({"arm": arm, "teacher": teacher, "column": column, "a": st.mean_sd(a), "b": st.mean_sd(b),
                        "delta": delta, "df": df, "p": p, "sd": pooled_sd(a, b), "n_a": len(a), "n_b": len(b),
                        "gates": [gates.get(arm, st.learning_seeds({}, min_runs=MIN_STUDENT_RUNS)),
                                  gates.get(teacher, st.learning_seeds({}, min_runs=MIN_TEACHER_RUNS))]})
        for row, q in zip(out, st.holm([r["p"] for r in out])):
            row["p_holm"] = q
            row["mde_sd"] = welch_mde(row["n_a"], row["n_b"], alpha / len(out))
            row["mde"] = row["mde_sd"] * row["sd"] if math.isfinite(row["sd"]) else math.nan
            row["verdict"] = welch_verdict(row["delta"], q, row["mde_sd"], row["sd"], alpha=alpha, gates=row["gates"])
        return out

    table1 = rows([(arm, reference, MEAN) for arm in ARMS]) if reference else []
    table2 = rows([(arm, t.name, t.specialist_of) for arm in ARMS for t in TEACHERS.values() if t.specialist_of])
    return {"models": models, "gates": gates, "reference": reference, "table1": table1, "table2": table2}


# ---------------------------------------------------------------------------------------------- pre-registration
def build_preregistration(*, alpha: float = st.ALPHA, power: float = st.POWER) -> dict[str, Any]:
    """The pre-registration as plain data (``--preregister`` writes it once)."""
    n_s, n_t = len(STUDENT_SEEDS), len(TEACHER_SEEDS)
    m1, m2 = len(ARMS), len(ARMS) * sum(t.specialist_of is not None for t in TEACHERS.values())
    return {
        "name": "mmkd-small", "scale": "small", "registered": datetime.date.today().isoformat(),
        "revised": REVISION,
        "rule": "commit this file before the first run file under benchmarks/results/mmkd_distill/runs/",
        "claim": "one student distilled from several different expert teachers beats each of them (MMKD-CLIP)",
        "data": {"domains": {d: {"label": v[0], "mednist_train_classes": list(v[1]), "per_class": MEDNIST_PER_CLASS,
                                 "pneumoniamnist_train": v[2]} for d, v in DOMAINS.items()},
                 "note": "pretraining images from the evaluation's train splits only; no labels used in pretraining"},
        "teachers": {t.name: {"method": t.method, "architecture": t.arch, "recipe": TEACHER_RECIPE, "steps": STEPS,
                              "overrides": list(t.overrides), "domains": list(t.domains),
                              "specialist_of": t.specialist_of, "seeds": list(TEACHER_SEEDS)}
                     for t in TEACHERS.values()},
        "arms": {a: {"method": "mmkd", "architecture": STUDENT_ARCH, "recipe": STUDENT_RECIPE, "steps": STEPS,
                     "overrides": list(o), "teachers": list(TEACHERS), "teacher_filter": "column (its domain's teachers)",
                     "seeds": list(STUDENT_SEEDS), "teacher_seed": "TEACHER_SEEDS[s % 2]"} for a, o in ARMS.items()},
        "endpoints": {e: {"evaluation": v[0], "task": f"configs/tasks/{EVALS[v[0]][0]}.yaml",
                          "overrides": list(EVALS[v[0]][1]), "protocol": v[1], "setting": v[2], "metric": v[3],
                          "domain": v[4], "label": v[5]} for e, v in ENDPOINTS.items()},
        "domain_score": "mean of the domain's two endpoints (each in [0, 1], as is; probe seeds averaged first)",
        "mean_over_domains": "mean of the two domain scores",
        "primary": {"reference": "the teacher with the highest mean, over its learning runs, of the mean over domains",
                    "contrasts": [f"{a} - reference > 0 on the mean over domains" for a in ARMS],
                    "test": "Welch t, two-sided, across the arm's student seeds and the reference's teacher seeds",
                    "family": {"correction": "holm", "m": m1}},
        "secondary": {"contrasts": [f"{a} - {t.name} > 0 on the {t.specialist_of} domain score" for a in ARMS
                                    for t in TEACHERS.values() if t.specialist_of],
                      "test": "Welch t, two-sided", "family": {"correction": "holm", "m": m2}},
        "alpha": alpha,
        "gate": {"rule": "a run whose health verdict (health.json) is not 'learning' is shown, counted and excluded; "
                         f"a teacher with fewer than {MIN_TEACHER_RUNS} or an arm with fewer than {MIN_STUDENT_RUNS} "
                         "learning runs gets no verdict",
                 "min_teacher_runs": MIN_TEACHER_RUNS, "min_student_runs": MIN_STUDENT_RUNS},
        "verdicts": "supported (Holm p < alpha, positive); not supported (with 'inconclusive' where the MDE at the "
                    "achieved n exceeds the observed effect in pooled-sd units); no verdict (gate, or no test)",
        "reported_not_tested": ["cross-teacher code alignment per projector setting (cosine of one image's codes "
                                "across teachers vs shuffled pairs)",
                                "accuracy, balanced accuracy and the majority rate beside each classification endpoint",
                                "every model's endpoints and domain scores; health records"],
        "planned_n": {"teachers": n_t, "students": n_s},
        "power": {"target": power, "mde_sd_units": {
            "primary": round(welch_mde(n_s, n_t, alpha / m1, power), 3),
            "secondary": round(welch_mde(n_s, n_t, alpha / m2, power), 3)},
            "note": f"Welch with n = {n_s} vs {n_t} at alpha/m (Bonferroni, Holm's first step), in units of a common "
                    "sd; no pilot, so no endpoint-unit MDE in advance"},
    }


def write_preregistration(path: Path, data: Mapping[str, Any]) -> Path:
    """Save ``data`` as YAML at ``path`` once (``preregistration.write_once``: never overwritten)."""
    from preregistration import header, write_once

    return write_once(path, data, header("the MMKD distillation claim at the small scale", "benchmarks/mmkd_distill.py",
                                         "benchmarks/results/mmkd_distill/runs/"))


def require_preregistration(path: Path = PREREGISTRATION, *, committed: bool = True) -> None:
    """Refuse confirmatory run files before the pre-registration exists and is committed unchanged."""
    from preregistration import require_committed

    require_committed(path, committed=committed)


# ------------------------------------------------------------------------------------------------------ report
def load_runs(folder: Path) -> list[dict[str, Any]]:
    """Every run file of a folder (``<name>-seed<s>.json``), sorted by (teachers first, name, seed)."""
    runs = [json.loads(p.read_text()) for p in sorted(Path(folder).glob("*-seed*.json"))]
    order = [*TEACHERS, *ARMS]
    return sorted(runs, key=lambda r: (order.index(r["model"]) if r["model"] in order else 99, r["seed"]))


def _ms(x: tuple[float, float, int], digits: int = 3) -> str:
    mean, sd, n = x
    if not n or not math.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if math.isfinite(sd) else f"{mean:.{digits}f}"


def _num(x: Any, fmt: str = ".3f") -> str:
    return format(x, fmt) if isinstance(x, (int, float)) and math.isfinite(x) else "–"


def _label(name: str) -> str:
    if name in TEACHERS:
        t = TEACHERS[name]
        return f"teacher `{name}` ({t.arch}, DINO on {' + '.join(DOMAINS[d][0] for d in t.domains)})"
    return ARM_LABELS.get(name, name)


def init_lines(models: Mapping[str, Mapping[int, Mapping[str, float]]], inits: Sequence[Mapping[str, Any]],
               gates: Mapping[str, Any]) -> list[str]:
    """The instrument check: each model's domain scores (``analyse``'s ``models``, its learning runs) beside its
    architecture's at random initialisation."""
    if not inits:
        return ["", "Instrument check against initial weights: no `random:` evaluation yet (`--init`)."]
    lines = ["", "Instrument check (reported, not tested): each model's domain scores (its learning runs) beside "
             "the same architecture at random initialisation (`random:<architecture>`, init seeds "
             f"{', '.join(str(s) for s in sorted({int(i['seed']) for i in inits}))}), through the same evaluations:", "",
             "| model | architecture | trained n | CT domain | radiograph/MR domain | mean over domains | random init n "
             "| CT domain | radiograph/MR domain | mean over domains | Δ mean over domains |", "|---|---|---|" + "---|" * 8]
    floor: dict[str, list[dict[str, float]]] = {}
    below: list[str] = []
    for i in inits:
        floor.setdefault(i["model"], []).append(scores(i))
    for m in (*TEACHERS, *ARMS):
        base = m if m in TEACHERS else "student"
        trained = [models[m][s] for s in gates[m].kept] if m in gates else []
        if not trained or base not in floor:
            continue
        t = [st.mean_sd([x[c] for x in trained]) for c in (*DOMAINS, MEAN)]
        f = [st.mean_sd([x[c] for x in floor[base]]) for c in (*DOMAINS, MEAN)]
        lines.append(f"| {_label(m)} | `{init_architectures()[base]}` | {len(trained)} | " + " | ".join(map(_ms, t))
                     + f" | {len(floor[base])} | " + " | ".join(map(_ms, f)) + f" | {_num(t[-1][0] - f[-1][0], '+.3f')} |")
        if t[-1][0] <= f[-1][0]:
            below.append(f"`{m}`")
    if below:
        one = len(below) == 1
        lines += ["", f"**{', '.join(below)} end{'s' if one else ''} at or below {'its' if one else 'their'} own "
                  "architecture at random initialisation on the mean over domains**: on these endpoints, pretraining "
                  "lowered what the network's initial features already gave, so a contrast with such a model measures "
                  "what it lost, not what it learned."]
    return lines


def report(runs: Sequence[Mapping[str, Any]], *, prereg: Mapping[str, Any] | None, command: str,
           inits: Sequence[Mapping[str, Any]] | None = None) -> str:
    """The section's markdown from the run files (the page section and ``results.md``); ``inits``: the
    random-initialisation floor's files (``<out>/init/``)."""
    res = analyse(runs, alpha=float((prereg or {}).get("alpha", st.ALPHA)))
    models, gates = res["models"], res["gates"]
    n_of = {m: len(models.get(m, {})) for m in (*TEACHERS, *ARMS)}
    teacher_n = ", ".join(f"`{t}` n = {n_of[t]}" for t in TEACHERS)
    arm_n = ", ".join(f"`{a}` n = {n_of[a]}" for a in ARMS)
    planned_t, planned_s = len(TEACHER_SEEDS), len(STUDENT_SEEDS)
    partial = any(n_of[t] < planned_t for t in TEACHERS) or any(n_of[a] < planned_s for a in ARMS)
    ref = res["reference"]
    minutes = sum((r.get("timings") or {}).get("pretrain_s") or 0 for r in runs) / 60
    eval_minutes = sum((r.get("timings") or {}).get("evaluation_s") or 0 for r in runs) / 60
    lines = [
        "## MMKD: one student distilled from several different experts, against each of them", "",
        "Pre-registered in `benchmarks/preregistered/mmkd-small.yaml`"
        + (f" ({prereg['registered']})" if prereg else " (**missing**)")
        + ": the reference is the best teacher on the mean over domains (CT; radiograph/MR), each domain's score "
        "the mean of its two endpoints in [0, 1] as is; each student arm against it with Welch's t across "
        "student and teacher seeds, two-sided, α = 0.05, Holm over the table; and each arm against each domain's "
        "specialist on that domain, Holm over that table.", "",
        f"Teachers, pretraining runs so far ({planned_t} planned each): {teacher_n}.", "",
        f"Students, distillation runs so far ({planned_s} planned each): {arm_n}"
        + (" — **partial: the planned runs are not all done**." if partial else "."), "",
        "Teachers: label-free DINO (`configs/small/dino.yaml`, 300 steps of batch 32, 64 + 2 × 32 px; `ct` at "
        "teacher temperature 0.01, the others at 0.04, as revised before any run file: the pre-registration's "
        "`revised` field), each on its own data: "
        f"`ct` ({TEACHERS['ct'].arch}) on {MEDNIST_PER_CLASS} MedNIST train images of each CT class "
        f"(AbdomenCT, ChestCT, HeadCT); `xr` ({TEACHERS['xr'].arch}) on {MEDNIST_PER_CLASS} of each of BreastMRI, CXR, "
        f"Hand plus {PNEUMONIA_TRAIN} PneumoniaMNIST train images; `all` ({TEACHERS['all'].arch}) on the union. "
        f"Students: `{STUDENT_ARCH}` (1.5 M parameters, 64 px, `{STUDENT_RECIPE}`: 300 steps of batch 32, D = 128, "
        "FD summed over D at 50/128) distilled with `organfm pretrain --method mmkd` on the union, each image "
        "drawing one of its domain's teachers (its specialist or `all`; `method.teacher_filter=column`); student "
        "seed s distils the teachers of seed s mod 2. Arms: reconstruction-only projector (`student`) and the "
        "projector's NT-Xent term across teachers (`student_ntxent`, `method.projector_contrastive=1`). "
        "Evaluation: `organfm.evaluation.evaluate_models` on frozen features (`benchmarks/mmkd_distill.py`, "
        f"`EVALS`). CPU (2 shared cores): pretraining {minutes:.0f} min and evaluation {eval_minutes:.0f} min in "
        "all the run files.", "",
        "Health (`health.json` of each run; a run not `learning` is left out): "
        + ("; ".join(f"`{m}`: {gates[m].text}" for m in (*TEACHERS, *ARMS) if m in gates) or "no run files yet")
        + ".", "",
        "Every model (mean ± sd over its learning runs; n = runs):", "",
        "| model | n | " + " | ".join(v[5] for v in ENDPOINTS.values()) + " | CT domain | radiograph/MR domain "
        "| mean over domains |", "|---|---|" + "---|" * (len(ENDPOINTS) + 3)]
    for m in (*TEACHERS, *ARMS):
        if m not in models:
            continue
        seeds = [s for s in gates[m].kept]
        cells = [_ms(st.mean_sd([models[m][s][c] for s in seeds])) for c in (*ENDPOINTS, *DOMAINS, MEAN)]
        lines.append(f"| {_label(m)} | {len(seeds)} | " + " | ".join(cells) + " |")
    lines += init_lines(models, inits or [], gates)
    lines += ["", f"**Pre-registered reference: {'teacher `' + ref + '`' if ref else 'none yet (no teacher with ' + str(MIN_TEACHER_RUNS) + ' learning runs)'}** "
              "(the best teacher on the mean over domains).", "",
              "Table 1 — each arm against the reference on the mean over domains (Δ = arm − reference; Welch; MDE: the "
              "smallest true Δ detected with power 0.8 at α/m, in pooled-sd units and in the endpoint's units):", "",
              "| arm | reference | arm | reference | Δ | n (students vs teacher) | p | Holm p | MDE | verdict |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for row in res["table1"]:
        lines.append(_row(row))
    if not res["table1"]:
        lines.append("| – | – | – | – | – | – | – | – | – | no reference yet |")
    lines += ["", "Table 2 — each arm against each domain's specialist on that domain's score (Welch, Holm over the "
              "table):", "", "| arm | specialist (domain) | arm | specialist | Δ | n (students vs teacher) | p | Holm p "
              "| MDE | verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(row) for row in res["table2"]]
    lines += ["", "Cross-teacher code alignment of each student run's projector (reported, not tested): mean over "
              "teacher pairs of the cosine between one image's two codes, and between an image's code and a "
              "random other image's code (mean ± sd over runs):", "",
              "| projector | runs | same image | shuffled pairs |", "|---|---|---|---|"]
    for arm in ARMS:
        al = [r["alignment"] for r in runs if r["model"] == arm and r.get("alignment")]
        if al:
            lines.append(f"| {ARM_LABELS[arm]} | {len(al)} | {_ms(st.mean_sd([a['same_image'] for a in al]))} | "
                         f"{_ms(st.mean_sd([a['shuffled'] for a in al]))} |")
    lines += ["", "Classification endpoints (not tested): each one's accuracy beside balanced accuracy "
              "and the test set's majority rate (always predicting the most frequent class); the CT organ crops' "
              "`clusters` protocol reports kNN accuracy and NMI only.", "",
              "| endpoint | model | n | accuracy | balanced accuracy | AUC | majority rate |", "|---|---|---|---|---|---|---|"]
    for e, (ev, protocol, setting, metric, _, label) in ENDPOINTS.items():
        if protocol == "clusters":
            continue
        for m in (*TEACHERS, *ARMS):
            rs = [r for r in runs if r["model"] == m and int(r["seed"]) in (gates[m].kept if m in gates else ())]
            if not rs:
                continue
            cells = [_ms(st.mean_sd([float(np.mean(v)) for r in rs if (v := endpoint_values(r, e, k))]))
                     for k in ("accuracy", "balanced_accuracy", "auc", "majority_accuracy")]
            lines.append(f"| {label} | `{m}` | {len(rs)} | " + " | ".join(cells) + " |")
    lines += ["", "Caveats: a small recipe (tiny teachers, 300 steps, 64 px; the seed distils nine biomedical CLIP "
              "models into a ViT-B/16), images only (no texts); MedNIST has no patient ids; the PneumoniaMNIST copy "
              "has a modified train split; the CT organ crops come from one scan (neighbouring slices alike). "
              "Teacher n is small, so Welch's df and power are low (MDE column); a large p is not evidence of parity.",
              "", f"Regenerate: `{command}` (one run: `python benchmarks/mmkd_distill.py --model <teacher or arm> "
              "--seed <s>`).", ""]
    return "\n".join(lines)


def _row(row: Mapping[str, Any]) -> str:
    mde = f"{_num(row['mde_sd'], '.2f')} sd = {_num(row['mde'])}" if math.isfinite(row["mde_sd"]) else "–"
    column = "mean over domains" if row["column"] == MEAN else DOMAINS[row["column"]][0]
    return (f"| `{row['arm']}` | `{row['teacher']}` ({column}) | {_ms(row['a'])} | {_ms(row['b'])} | "
            f"{_num(row['delta'], '+.3f')} | {row['n_a']} vs {row['n_b']} | {st.pvalue(row['p'])} | "
            f"{st.pvalue(row['p_holm'])} | {mde} | {row['verdict']} |")


def write_report(out: Path, docs: Path | None, *, command: str) -> str:
    """Aggregate ``<out>/runs/``, write ``<out>/results.md`` and (``docs`` given) the page section."""
    import yaml

    runs = load_runs(out / "runs")
    inits = [json.loads(p.read_text()) for p in sorted((out / "init").glob("*-seed*.json"))]
    prereg = yaml.safe_load(PREREGISTRATION.read_text()) if PREREGISTRATION.is_file() else None
    md = report(runs, prereg=prereg, command=command, inits=inits)
    (out / "results.md").write_text(md)
    if docs is not None:
        write_section(docs, BEGIN, END, md)
    print(md)
    return md


# -------------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help=f"a teacher ({', '.join(TEACHERS)}) or an arm ({', '.join(ARMS)})")
    p.add_argument("--seed", type=int)
    p.add_argument("--stage", choices=("all", "pretrain"), default="all",
                   help="pretrain: only the pretraining run (no evaluation, no run file)")
    p.add_argument("--preregister", action="store_true", help=f"write {relative(str(PREREGISTRATION))} once and stop")
    p.add_argument("--init", action="store_true",
                   help=f"evaluate every model's architecture at random initialisation, seeds {TEACHER_SEEDS} (the floor)")
    p.add_argument("--report", action="store_true", help="only aggregate the run files into the report and the page")
    p.add_argument("--smoke", action="store_true", help="every model at a few steps, tiny data, a temp folder")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--docs", default=str(REPO / "docs" / "results.md"), help="results page ('' to skip)")
    args = p.parse_args(argv)
    out, data_root = Path(args.out).resolve(), Path(args.data).resolve()
    docs = Path(args.docs) if args.docs else None
    report_cmd = "python benchmarks/mmkd_distill.py --report"
    if args.preregister:
        print(f"wrote {write_preregistration(PREREGISTRATION, build_preregistration())}: commit it before any run file")
        return 0
    if args.report:
        write_report(out, docs, command=report_cmd)
        return 0
    import torch

    torch.set_num_threads(int(os.environ.get("ORGANFM_THREADS", "2")))
    if args.smoke:
        tmp = Path(tempfile.mkdtemp(prefix="mmkd-smoke-"))
        manifests = cut_data(data_root, tmp / "pretrain" / "data", per_class=24, pneumonia=24)
        for name, seed in [*((t, 0) for t in TEACHERS), ("student_ntxent", 0)]:
            run_one(name, seed, out=tmp, data_root=data_root, steps=4, manifests=manifests, command="--smoke",
                    eval_overrides=SMOKE_CAPS)
        print(report(load_runs(tmp / "runs"), prereg=None, command="--smoke"))
        print(f"smoke run in {tmp} (not a result)")
        return 0
    if args.init:
        for name in init_architectures():
            for seed in TEACHER_SEEDS:
                run_init(name, seed, out=out, data_root=data_root)
        write_report(out, docs, command=report_cmd)
        return 0
    if args.model is None or args.seed is None:
        p.error("give --model and --seed (or --preregister, --init, --report, --smoke)")
    is_teacher(args.model)
    require_preregistration()
    command = f"python benchmarks/mmkd_distill.py --model {args.model} --seed {args.seed}"
    if run_one(args.model, args.seed, out=out, data_root=data_root, stage=args.stage, command=command) is not None:
        write_report(out, docs, command=report_cmd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
