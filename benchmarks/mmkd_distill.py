"""MMKD distillation: is one student distilled from several teachers at or above the best single teacher?

Teachers: four organfm methods pretrained here at a tiny CPU recipe on a MedNIST subset drawn from the
evaluation's TRAIN split only (``N`` images per organ, written as PNG folders, so no test image is ever
pretrained on): Coda, SupCon and DINO (images only) and CLIP (MMKD-CLIP's stage 1: the image backbone plus a
small text tower trained on captions templated from the organ folder names, "a medical image of the CXR").
Every teacher and student is the same small timm architecture (``test_convnext``). Five student arms, each
``--seeds`` distillation runs of ``organfm pretrain --method mmkd`` (the distillation run is the unit: seed s
fixes the student's init, data order, views and teacher draws; the teachers are fixed):

- ``student``: images only, from the three image teachers (the original benchmark; its runs are reused);
- ``student4``: images only, from all four teachers;
- ``student4x``: the same with the projector's optional NT-Xent term (``method.projector_contrastive=1``);
- ``student+text, no stage 1``: texts = the same captions, all four teachers (the image-only ones still give
  image targets), ``teacher_filter=caption``, from a random student;
- ``student+text``: the same, started from the CLIP teacher's backbone and text side (stage 1 -> stage 2).

Every model is then evaluated on the same tasks through ``organfm.evaluation.evaluate_models``
(``configs/tasks/*.yaml`` with the overrides in ``TASK_FILES``):

- MedNIST kNN and linear-probe accuracy (6 classes; capped splits),
- PneumoniaMNIST linear-probe AUC,
- CT organ crops (one TotalSegmentator example scan): leave-one-out kNN organ accuracy and k-means NMI,
- models with a text tower only: MedNIST zero-shot accuracy (one prompt per class, the captions' template) and
  text -> image Recall@1 (each test image's caption queries the test images; any image of its class is a hit).

The table gives each teacher, each arm (mean ± sd over distillation runs, n = runs), the mean over the five
shared tasks, and the claims: each arm "at or above the best single teacher it was distilled from" (on the mean
over tasks) and ``student+text`` "at or above the CLIP teacher" on zero-shot accuracy, each a one-sided
one-sample t-test of the per-run differences (scipy.stats.ttest_1samp), with the per-task comparisons
Holm-corrected within an arm; and four paired contrasts (4th teacher: ``student4`` vs ``student``; NT-Xent
projector: ``student4x`` vs ``student4``;
texts: ``student+text, no stage 1`` vs ``student4``; stage 1: ``student+text`` vs ``student+text, no stage 1``). Everything is reused on a rerun with the same
settings.

    nice -n 10 python benchmarks/mmkd_distill.py            # the CPU budget used for docs/results.md
    python benchmarks/mmkd_distill.py --quick                # a smoke run (not a result)
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.results_page import write_section  # noqa: E402
from benchmarks.runs import finished, pretrain_or_resume  # noqa: E402
from organfm.evaluation import evaluate_models, load_task  # noqa: E402
from organfm.evaluation.task import task_to_dict  # noqa: E402

ARCH = "test_convnext"
BEGIN, END = "<!-- BEGIN mmkd -->", "<!-- END mmkd -->"
MODALITY = "medical"  # the captions' modality word; zero-shot prompts and retrieval captions must use the same
CAPTIONS = ["method.texts=captions", f"method.caption_modality={MODALITY}"]
TEACHERS = {  # method -> its tiny CPU recipe beyond COMMON
    "coda": ["views.num_local_views=2", "method.out_dim=1024", "method.hidden_dim=256"],
    "supcon": [],
    "dino": ["views.num_local_views=2", "method.out_dim=1024", "method.hidden_dim=256"],
    "clip": CAPTIONS,
}
IMAGE_TEACHERS = ("coda", "supcon", "dino")  # the image-only student's teachers (the original benchmark)
TEACHER_METHODS = {"clip": "imagetext"}  # teacher name -> its organfm method, where they differ
TEXT_TEACHER = "clip"  # stage 1: the text student starts from it and is compared with it on the text columns
COMMON = [f"backbone.name={ARCH}", "views.global_size=32", "views.local_size=32", "trainer.batch_size=16",
          "trainer.num_workers=0", "trainer.progress=false", "trainer.log_every=25", "trainer.checkpoint_every=1000",
          "optim.warmup_epochs=0.5"]
LINEAR = ["linear.lrs=[0.01,0.1,1.0]", "linear.weight_decays=[0.0,0.0001]", "linear.epochs=60"]
# task file -> its overrides (one evaluate_models call each)
TASK_FILES = {
    "mednist.yaml": ["protocols=[knn,linear,zeroshot,retrieval]", "data.image_size=32", "data.max_train=1500",
                     "data.max_val=300", "data.max_test=600", "knn.k=[20]", *LINEAR, f"zeroshot.modality={MODALITY}",
                     f"retrieval.modality={MODALITY}", "retrieval.k=[1,5]"],
    "pneumoniamnist.yaml": ["protocols=[linear]", "data.max_train=1500", "data.max_val=300", "data.max_test=600",
                            *LINEAR],
    "totalseg_ct_organs.yaml": ["protocols=[clusters]", "clusters.embeddings=[]"],
}
# column -> (task file, protocol, metric): the five tasks every model is evaluated on
TASKS = {
    "MedNIST kNN": ("mednist.yaml", "knn", "accuracy"),
    "MedNIST linear": ("mednist.yaml", "linear", "accuracy"),
    "Pneumonia linear AUC": ("pneumoniamnist.yaml", "linear", "auc"),
    "CT organs kNN": ("totalseg_ct_organs.yaml", "clusters", "knn_accuracy"),
    "CT organs NMI": ("totalseg_ct_organs.yaml", "clusters", "nmi"),
}
# columns of models with a text tower only ("n/a" for the others). With one caption per class, image -> text
# R@1 IS zero-shot accuracy (organfm.evaluation.protocols.retrieval), so the retrieval column is text -> image.
TEXT_TASKS = {
    "MedNIST zero-shot": ("mednist.yaml", "zeroshot", "accuracy"),
    "MedNIST t2i R@1": ("mednist.yaml", "retrieval", "t2i_R@1"),
}
MEAN = "mean over tasks"  # of the five TASKS columns
TIMING = "benchmark_seconds.json"  # in a run folder: its training wall time, written when it was trained


@dataclass(frozen=True)
class Arm:
    """A student arm: its distillation runs (the unit) and the teachers they are compared with.

    Attributes:
        label: its row in the table.
        runs: the model names of its distillation runs.
        teachers: the teachers it was distilled from; "best single teacher" is the best of these per column.
        text_reference: the teacher its TEXT_TASKS columns are compared with (None: no text claim).
    """

    label: str
    runs: tuple[str, ...]
    teachers: tuple[str, ...]
    text_reference: str | None = None


def cut_mednist(data_root: Path, out: Path, per_organ: int) -> Path:
    """``per_organ`` images of each organ from MedNIST's evaluation TRAIN split, as ``out/<organ>/*.png``."""
    from PIL import Image

    from organfm.data import build_dataset

    done = out / "done.json"
    if done.is_file() and json.loads(done.read_text()).get("per_organ") == per_organ:
        return out
    ds = build_dataset(data_root / "mednist" / "MedNIST.tar.gz", split="train")  # the task's split (seed 0, 80/10/10)
    organs = np.asarray(ds.organ_ids)
    rng = np.random.default_rng(0)
    for o, name in enumerate(ds.organs):
        (out / name).mkdir(parents=True, exist_ok=True)
        for i in rng.permutation(np.flatnonzero(organs == o))[:per_organ]:
            img = (ds[int(i)]["image"][0].numpy() * 255).round().astype(np.uint8)
            Image.fromarray(img).save(out / name / f"{int(i):06d}.png")
    done.write_text(json.dumps({"per_organ": per_organ}))
    return out


def pretrain_run(run: Path, method: str, overrides: list[str]) -> Path:
    """Pretrain (or reuse) one run; return its export folder."""
    from organfm.config import load_config

    steps = int(next(o for o in overrides if o.startswith("trainer.max_steps=")).split("=")[1])
    t = time.time()
    summary = pretrain_or_resume(run, steps, lambda: load_config(method, None, [*overrides, f"trainer.out_dir={run}"]))
    if summary is None:
        return run / "export"
    seconds = time.time() - t
    (run / TIMING).write_text(json.dumps({"seconds": round(seconds, 1), "steps": steps}))
    print(f"{summary.line(method, ARCH)} [{seconds:.0f} s]", flush=True)
    return run / "export"


def run_seconds(run: Path) -> float | None:
    """The wall time ``pretrain_run`` measured when it trained ``run`` (None: trained before it was kept)."""
    f = run / TIMING
    return float(json.loads(f.read_text())["seconds"]) if f.is_file() else None


def evaluate(models: dict[str, str], *, out: Path, data_root: Path) -> dict[str, dict[str, float]]:
    """model -> column -> value (mean over the protocol's repeats), one evaluate_models call per task file.

    A model without a text tower has no TEXT_TASKS columns (the zero-shot and retrieval protocols skip it).
    """
    scores: dict[str, dict[str, float]] = {m: {} for m in models}
    columns = {**TASKS, **TEXT_TASKS}
    for file, overrides in TASK_FILES.items():
        part = file.removesuffix(".yaml")
        task = load_task(REPO / "configs" / "tasks" / file,
                         [f"data.root={data_root}", f"out_dir={out / part}", "report.scatter_points=0", *overrides])
        done = out / part / "results.json"
        results = None
        if done.is_file():
            prev = json.loads(done.read_text())
            if prev.get("task") == task_to_dict(task) and set(prev.get("models", {})) == set(models):
                results = prev
        if results is None:
            t = time.time()
            results = evaluate_models(task, models)
            print(f"{part}: {time.time() - t:.0f} s", flush=True)
        for column, (f, protocol, metric) in columns.items():
            if f != file:
                continue
            for row in results["rows"]:
                if row["protocol"] == protocol and metric in row["values"] and column not in scores[row["model"]]:
                    scores[row["model"]][column] = float(np.mean(row["values"][metric]))
    return scores


@dataclass(frozen=True)
class Contrast:
    """Two arms that differ in one thing, their runs paired by distillation seed (position in ``runs``).

    Attributes:
        label: what the difference tests ("texts").
        arm: the arm with the thing.
        baseline: the arm without it.
    """

    label: str
    arm: Arm
    baseline: Arm


def paired(contrast: Contrast, scores: dict[str, dict[str, float]], columns: list[str]) -> dict[str, dict]:
    """Per column: the per-seed differences arm − baseline, their mean and a two-sided paired t-test.

    The five per-task columns are Holm-corrected together (``p_holm``); ``MEAN`` is tested on its own.
    """
    from scipy import stats

    a, b = contrast.arm, contrast.baseline
    if len(a.runs) != len(b.runs):
        raise ValueError(f"contrast {contrast.label!r}: {len(a.runs)} runs against {len(b.runs)}; pair by seed")
    out = {}
    for c in columns:
        diffs = np.array([scores[x][c] - scores[y][c] for x, y in zip(a.runs, b.runs)])
        p = float(stats.ttest_1samp(diffs, 0.0).pvalue) if len(diffs) > 1 and diffs.std() > 0 else float("nan")
        out[c] = {"diff_mean": float(diffs.mean()), "diff_sd": float(diffs.std(ddof=1)) if len(diffs) > 1 else 0.0,
                  "positive": int((diffs > 0).sum()), "n": len(diffs), "p": p}
    for c, q in holm({c: out[c]["p"] for c in columns if c in TASKS}).items():
        out[c]["p_holm"] = q
    return out


def contrast_table(contrasts: list[Contrast], scores: dict[str, dict[str, float]]) -> tuple[str, dict]:
    """Markdown rows of every contrast on the five tasks and their mean, and the statistics.

    The mean-over-tasks p-values are Holm-corrected across the contrasts (``p_holm``): each contrast is a claim.
    """
    stats_ = {con.label: paired(con, scores, [*TASKS, MEAN]) for con in contrasts}
    for label, q in holm({label: res[MEAN]["p"] for label, res in stats_.items()}).items():
        stats_[label][MEAN]["p_holm"] = q
    rows = ["| contrast | column | arm − baseline (mean ± sd over seeds) | seeds above | p (paired, two-sided) |",
            "|---|---|---|---|---|"]
    for label, res in stats_.items():
        for c, k in res.items():
            p = f"{k['p_holm']:.3g} (Holm)" if "p_holm" in k else (f"{k['p']:.3g}" if np.isfinite(k["p"]) else "n/a")
            rows.append(f"| {label} | {c} | {k['diff_mean']:+.3f} ± {k['diff_sd']:.3f} | {k['positive']}/{k['n']} "
                        f"| {p} |")
    return "\n".join(rows), stats_


def compare(values: np.ndarray, reference: float) -> dict:
    """An arm's per-run values against one reference value (a single teacher run).

    Args:
        values: (n,) the arm's value of one column, one per distillation run.
        reference: the teacher's value of that column.

    Returns:
        ``diff_mean`` (mean of run − reference), ``runs_at_or_above``, ``n``, ``student_mean`` and ``p_below``: the
        one-sided one-sample t-test of "run − reference < 0" (NaN with fewer than 2 runs or no spread).
    """
    from scipy import stats

    diffs = np.asarray(values, dtype=float) - reference
    p = float(stats.ttest_1samp(diffs, 0.0, alternative="less").pvalue) if len(diffs) > 1 and diffs.std() > 0 \
        else float("nan")
    return {"student_mean": float(np.mean(values)), "diff_mean": float(diffs.mean()),
            "runs_at_or_above": int((diffs >= 0).sum()), "n": len(diffs), "p_below": p}


def holm(ps: dict[str, float]) -> dict[str, float]:
    """Holm-adjusted p-values of a family (NaN entries are left out of the family and of the result)."""
    finite = sorted((p, c) for c, p in ps.items() if np.isfinite(p))
    out, running = {}, 0.0
    for i, (p, c) in enumerate(finite):
        running = max(running, min(1.0, (len(finite) - i) * p))
        out[c] = running
    return out


def _arm_values(scores: dict[str, dict[str, float]], arm: Arm, column: str) -> np.ndarray | None:
    """The arm's per-run values of ``column``; None when no run has it (a text column of an image-only arm)."""
    have = [r for r in arm.runs if column in scores[r]]
    if not have:
        return None
    if len(have) != len(arm.runs):
        missing = sorted(set(arm.runs) - set(have))
        raise ValueError(f"arm {arm.label!r}: runs {missing} have no {column!r} score while {have} do")
    return np.array([scores[r][column] for r in arm.runs])


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _p_text(k: dict) -> str:
    if "p_below_holm" in k:
        return f"{k['p_below_holm']:.3g} (Holm)"
    return f"{k['p_below']:.3g}" if np.isfinite(k["p_below"]) else "n/a (no spread)"


def table(scores: dict[str, dict[str, float]], teachers: list[str], arms: list[Arm]) -> tuple[str, dict]:
    """Markdown tables (scores, then comparisons) + the claim statistics.

    Args:
        scores: model -> column -> value; TEXT_TASKS columns only for models with a text tower. Gains a
            ``MEAN`` entry per model (over the five TASKS columns).
        teachers: the teacher model names, in row order (n = 1 run each).
        arms: the student arms.

    Returns:
        ``(markdown, claims)`` with ``claims[arm.label][column]`` = :func:`compare`'s dict plus ``reference``
        (the teacher) and ``reference_value``, and ``p_below_holm`` on the per-task columns (Holm within the arm).
    """
    cols = list(TASKS)
    for m in scores:
        scores[m][MEAN] = float(np.mean([scores[m][c] for c in cols]))
    shown = [*cols, MEAN, *TEXT_TASKS]
    lines = ["| model | n | " + " | ".join(shown) + " |", "|---|---|" + "---|" * len(shown)]
    for t in teachers:
        lines.append(f"| teacher {t} | 1 | " + " | ".join(_cell(scores[t].get(c)) for c in shown) + " |")
    for arm in arms:
        cells = []
        for c in shown:
            v = _arm_values(scores, arm, c)
            cells.append("n/a" if v is None else
                         f"{v.mean():.3f}" + (f" ± {v.std(ddof=1):.3f}" if len(v) > 1 else ""))
        lines.append(f"| **{arm.label}** | {len(arm.runs)} | " + " | ".join(cells) + " |")
    claims: dict[str, dict[str, dict]] = {}
    rows = ["", "| arm | column | reference | arm − reference (mean over runs) | runs at or above | "
                "p (arm below reference) |", "|---|---|---|---|---|---|"]
    for arm in arms:
        unknown = [t for t in (*arm.teachers, arm.text_reference) if t is not None and t not in teachers]
        if unknown:
            raise ValueError(f"arm {arm.label!r} names teachers {unknown} that are not among {teachers}")
        refs = {c: max(arm.teachers, key=lambda t, c=c: scores[t][c]) for c in [*cols, MEAN]}
        if arm.text_reference is not None:
            refs |= {c: arm.text_reference for c in TEXT_TASKS}
        mine = claims[arm.label] = {}
        for c, ref in refs.items():
            v = _arm_values(scores, arm, c)
            if v is None or c not in scores[ref]:
                raise ValueError(f"arm {arm.label!r} or its reference {ref!r} has no {c!r} score to compare")
            mine[c] = {"reference": ref, "reference_value": scores[ref][c], **compare(v, scores[ref][c])}
        for c, p in holm({c: mine[c]["p_below"] for c in cols}).items():  # MEAN and the text columns: on their own
            mine[c]["p_below_holm"] = p
        for c, k in mine.items():
            rows.append(f"| {arm.label} | {c} | {k['reference']} ({k['reference_value']:.3f}) | {k['diff_mean']:+.3f} "
                        f"| {k['runs_at_or_above']}/{k['n']} | {_p_text(k)} |")
    return "\n".join(lines + rows), claims


def claim_sentence(name: str, k: dict, unit: str) -> str:
    """One claim's verdict in words, e.g. "below the best teacher (supcon): -0.033 (n = 3 ..., p = 0.001)"."""
    verdict = "at or above" if k["diff_mean"] >= 0 else "below"
    return (f"{verdict} {name} ({k['reference']}, {k['reference_value']:.3f}): {k['diff_mean']:+.3f} "
            f"(n = {k['n']} {unit}, {k['runs_at_or_above']}/{k['n']} at or above; p = {_p_text(k)})")


def contrast_sentence(k: dict) -> str:
    """A contrast's verdict on the mean over tasks, in words (on its Holm-corrected p when there is one)."""
    p = k.get("p_holm", k["p"])
    verdict = ("no reliable difference" if not np.isfinite(p) or p >= 0.05 else
               ("reliably better" if k["diff_mean"] > 0 else "reliably worse"))
    return (f"{k['diff_mean']:+.3f} ± {k['diff_sd']:.3f} on the mean over tasks ({k['positive']}/{k['n']} "
            f"seeds above, p = {p:.3g}{' Holm' if 'p_holm' in k else ''}): {verdict}.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher-steps", type=int, default=40)
    p.add_argument("--student-steps", type=int, default=40)
    p.add_argument("--seeds", type=int, default=3, help="distillation runs per arm")
    p.add_argument("--per-organ", type=int, default=60, help="MedNIST train images per organ for pretraining")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "mmkd_distill"))
    p.add_argument("--docs", default=str(REPO / "docs" / "results.md"), help="results page ('' to skip)")
    p.add_argument("--quick", action="store_true", help="few steps, 2 runs: a smoke run, not a result")
    args = p.parse_args(argv)
    if args.quick:
        args.teacher_steps, args.student_steps, args.seeds, args.per_organ = 4, 4, 2, 20
    # one thread: these networks are tiny, and on a shared, busy CPU two threads ran up to 10x slower (measured)
    torch.set_num_threads(int(os.environ.get("ORGANFM_THREADS", "1")))
    out, data_root = Path(args.out), Path(args.data).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    folder = cut_mednist(data_root, out / "mednist-train-subset", args.per_organ)
    trained: list[str] = []
    reused: list[str] = []
    order: list[str] = []  # every run, in the order they were asked for

    def run(name: str, method: str, overrides: list[str]) -> Path:
        steps = int(next(o for o in overrides if o.startswith("trainer.max_steps=")).split("=")[1])
        (reused if finished(out / "runs" / name, steps) else trained).append(name)
        order.append(name)
        return pretrain_run(out / "runs" / name, method, overrides)

    exports = {m: run(m, TEACHER_METHODS.get(m, m), [*COMMON, *extra, f"data={folder}",
                                                     f"trainer.max_steps={args.teacher_steps}", "trainer.seed=0"])
               for m, extra in TEACHERS.items()}
    image_teachers = ",".join(f"{m}={exports[m]}" for m in IMAGE_TEACHERS)
    all_teachers = ",".join(f"{m}={e}" for m, e in exports.items())
    clip = exports[TEXT_TEACHER]
    arms, students = [], {}
    text_student = [*CAPTIONS, "method.teacher_filter=caption"]
    for label, prefix, run_prefix, teachers, extra, reference in (
            # the image-only arm's overrides are the original benchmark's (its runs are reused)
            ("student (mmkd)", "student", "mmkd", IMAGE_TEACHERS, [f"method.teachers=[{image_teachers}]"], None),
            ("student, 4 teachers (mmkd)", "student4", "mmkd4", tuple(exports),
             [f"method.teachers=[{all_teachers}]"], None),
            ("student, 4 teachers, NT-Xent projector (mmkd)", "student4x", "mmkd4x", tuple(exports),
             [f"method.teachers=[{all_teachers}]", "method.projector_contrastive=1.0"], None),
            ("student+text, no stage 1 (mmkd, texts)", "student-text0", "mmkd-text0", tuple(exports),
             [f"method.teachers=[{all_teachers}]", *text_student], TEXT_TEACHER),
            ("student+text (mmkd, texts)", "student-text", "mmkd-text", tuple(exports),
             [f"method.teachers=[{all_teachers}]", *text_student, f"method.text_init={clip}",
              f"backbone.pretrained_file={clip / 'backbone.safetensors'}"], TEXT_TEACHER)):
        names = [f"{prefix}-s{s}" for s in range(args.seeds)]
        for s, name in enumerate(names):
            students[name] = run(f"{run_prefix}-s{s}", "mmkd", [
                *COMMON, f"data={folder}", *extra, f"method.features_dir={out / 'teacher_features'}",  # embedded once
                f"trainer.max_steps={args.student_steps}", f"trainer.seed={s}"])
        arms.append(Arm(label, tuple(names), tuple(teachers), reference))
    # arms that differ in one thing, paired by seed (a seed fixes the student's initial backbone and data order)
    contrasts = [Contrast("4th teacher", arms[1], arms[0]), Contrast("NT-Xent projector", arms[2], arms[1]),
                 Contrast("texts", arms[3], arms[1]), Contrast("stage 1", arms[4], arms[3])]
    models = {**{m: str(e) for m, e in exports.items()}, **{k: str(v) for k, v in students.items()}}
    scores = evaluate(models, out=out / "eval", data_root=data_root)
    md_table, claims = table(scores, list(exports), arms)
    md_contrasts, contrast_stats = contrast_table(contrasts, scores)
    python = Path(sys.executable)
    python = str(python.relative_to(REPO)) if python.is_relative_to(REPO) else "python"
    command = (f"nice -n {os.nice(0)} " if os.nice(0) else "") + f"{python} benchmarks/mmkd_distill.py " \
        + shlex.join(argv if argv is not None else sys.argv[1:])
    minutes = (time.time() - t0) / 60
    n_img = sum(1 for _ in folder.rglob("*.png"))
    seconds = {n: run_seconds(out / "runs" / n) for n in order}
    timed = ", ".join(f"{n} {v:.0f} s" for n, v in seconds.items() if v is not None) or "none recorded"
    untimed = [n for n, v in seconds.items() if v is None]
    if untimed:
        timed += f" (not recorded for {', '.join(untimed)}: trained before the benchmark kept timings)"
    data_info = out / "runs" / IMAGE_TEACHERS[0] / "data.json"  # what pretraining read of the folder
    n_read = json.loads(data_info.read_text()).get("n_items", "?") if data_info.is_file() else "?"
    md = "\n".join([
        "## MMKD: distilling several teachers into one student, with and without texts", "",
        f"Teachers, each pretrained here for {args.teacher_steps} steps (batch 16, 32 px) on a folder of "
        f"{args.per_organ} MedNIST train-split images per organ ({n_img} PNGs, of which pretraining reads the "
        f"folder's default 80 % train split, {n_read} images): Coda, SupCon and DINO (images only) and CLIP (MMKD-CLIP's stage 1: the image "
        "backbone plus a small 2-layer text Transformer on captions templated from the organ folder names, "
        f"\"a {MODALITY} image of the CXR\"). Students: `{ARCH}` (the teachers' architecture) distilled with "
        f"`organfm pretrain --method mmkd` for {args.student_steps} steps from the teachers' stored, projected "
        "features (task + 50·FD + ICL, one teacher sampled per image), in five arms:", "",
        "- **student (mmkd)**: images only (two views), from Coda, SupCon and DINO: the benchmark's original arm, "
        "with the same settings;",
        "- **student, 4 teachers (mmkd)**: images only, from all four teachers (CLIP as an image teacher);",
        "- **student, 4 teachers, NT-Xent projector (mmkd)**: the same, with the seed's optional projector term "
        "(`method.projector_contrastive=1`: NT-Xent, positives = one image's codes across teachers, so the "
        "teachers' targets for an image agree);",
        "- **student+text, no stage 1 (mmkd, texts)**: MMKD-CLIP's stage 2 from a random student: image-text pairs "
        "with the same captions, from all four teachers (CLIP gives image and text targets, the others image "
        "targets only), `method.teacher_filter=caption` (CLIP is kept for an image when it ranks the image's own "
        "caption first; the image-only teachers stay available);",
        "- **student+text (mmkd, texts)**: the same, started from the CLIP teacher's backbone and text side "
        "(`backbone.pretrained_file`, `method.text_init`): MMKD-CLIP's stage 1 -> stage 2.", "",
        f"n = {args.seeds} distillation runs per arm (seeds 0..{args.seeds - 1}; the unit), n = 1 pretraining run "
        "per teacher. Frozen-feature evaluation through `organfm.evaluation.evaluate_models` (capped MedNIST and "
        "PneumoniaMNIST splits, linear grid 3 lr x 2 wd; CT organ crops from one scan); the mean is over those "
        "five tasks. For models with a text tower only (n/a for the others), on the same capped MedNIST test "
        f"split: zero-shot accuracy (protocol `zeroshot`, one prompt per class, \"a {MODALITY} image of the "
        "<class>\", the training captions' template) and text -> image Recall@1 (protocol `retrieval`: each test "
        "image's caption queries the test images, any image of its class is a hit, ties count as misses; "
        "image -> text R@1 is not shown because with one caption per class it equals zero-shot accuracy). "
        f"Wall time on a shared 2-core CPU (nice {os.nice(0)}, {torch.get_num_threads()} thread(s)): pretraining, as measured when each run was "
        f"trained: {timed}; the invocation that wrote this: {minutes:.1f} min"
        + (f" (it reused {len(reused)} of {len(reused) + len(trained)} runs)." if reused else "."), "",
        md_table, "",
        "Comparisons: each arm against the best single teacher it was distilled from, per column (chosen after the "
        "fact), and the text arm against the CLIP teacher on the text columns; one-sided one-sample t-test of the "
        "per-run differences arm − reference < 0 (scipy.stats.ttest_1samp). The five per-task p-values are "
        "Holm-corrected within an arm; the mean over tasks and the text columns are tested on their own. A "
        "p-value below 0.05 means the arm is reliably BELOW the reference there; a large p-value is not evidence "
        "of parity with n this small.", "",
        f"**Claim (seed): the student is at or above the best single teacher.** On the mean over tasks the "
        + "; ".join(f"{a.label} is {claim_sentence('the best of its teachers', claims[a.label][MEAN], 'distillation runs')}"
                    for a in arms) + ".", "",
        "**Claim (seed, text side): the student is at or above the CLIP teacher on zero-shot accuracy.** On MedNIST "
        "zero-shot accuracy " + "; ".join(
            f"{a.label} is {claim_sentence('the CLIP teacher', claims[a.label]['MedNIST zero-shot'], 'distillation runs')}"
            for a in arms if a.text_reference) + ". (\"At or above\" is the direction of the mean difference; with "
        "a large p the runs are not reliably below the teacher, which is not a proof of parity.)", "",
        "**What a 4th teacher, the projector term, the texts and stage 1 change** (arms that differ in one thing, runs paired by distillation seed; the "
        "seed fixes the student's initial backbone, data order and views; two-sided paired t-test, the five tasks "
        "Holm-corrected within a contrast, the means Holm-corrected across the contrasts):", "",
        md_contrasts, "",
        *(f"- {c.label} ({c.arm.label} vs {c.baseline.label}): " + contrast_sentence(contrast_stats[c.label][MEAN])
          for c in contrasts), "",
        "Caveats: tiny recipe (a 0.2M-parameter network, minutes of CPU pretraining; the text tower is a small "
        "Transformer learnt from six distinct captions, not a biomedical language model): these are the mechanics "
        "of distillation at toy scale, not the seed's biomedical-CLIP setting; the teachers are single runs; with "
        "six captions, zero-shot is a six-way nearest-prompt classifier and retrieval has only six distinct queries "
        "(so t2i R@1 moves in steps of a class's share of the test split). The stage 1 arm has had twice the steps "
        "of the others (CLIP's plus distillation's).",
        "",
        f"Regenerate: `{command.strip()}`", ""])
    (out / "results.md").write_text(md)
    (out / "scores.json").write_text(json.dumps({"scores": scores, "claims": claims, "contrasts": contrast_stats},
                                                indent=1))
    if args.docs and not args.quick:
        write_section(Path(args.docs), BEGIN, END, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
