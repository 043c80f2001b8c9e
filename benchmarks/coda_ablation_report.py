"""The "Coda ablation" blocks of docs/results.md, aggregated from every committed pretraining run.

Inputs of one output folder ``benchmarks/results/coda_ablation-<scale>``:
- ``runs/<arm>-seed<k>.json``: one finished (arm, pretraining seed) run of ``coda_ablation.py`` (its
  per-probe-seed values, health verdict, recipe, timings and the equivalent ``organfm`` commands);
- ``pilot/<arm>-seed<k>.json``: pilot runs of a pre-registered scale; they size the pre-registration
  (``--preregister``) and never enter a table;
- ``results.json`` (legacy, written before per-run files): ``{"cells": {"task|protocol|setting|arm":
  {metric: [value of run d]}}}`` where run d used pretraining seed ``d mod P``; it is split back into runs.

A pre-registered scale (``small``, ``paper``: ``benchmarks/preregistration.py``) gets the full block: the
health of every run (a run not ``learning`` is shown, counted and excluded), the primary endpoints, the
pre-registered contrasts (paired t by pretraining seed, Holm over the registered family, the minimum
detectable effect at the achieved n beside the observed effect, and "supported" / "not supported" /
"no verdict"), an exploratory table (uncorrected p) and a figure of every run. An earlier scale (no
pre-registration, no health verdicts) gets one short paragraph. Each folder's block sits between two HTML
comments, so the rest of the page survives a rerun::

    python benchmarks/coda_ablation_report.py              # every coda_ablation-*/ folder, and the small scale
    python benchmarks/coda_ablation_report.py benchmarks/results/coda_ablation-small
    python benchmarks/coda_ablation_report.py --preregister benchmarks/results/coda_ablation-small   # once
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import claims as st  # noqa: E402
import coda_ablation as bench  # noqa: E402
import preregistration as prereg  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MARKERS = "<!-- {}:begin -->", "<!-- {}:end -->"
FIG = "@@figures@@"
LABELS = {"inter": "L_inter only", "intra": "L_intra only", "coda": "both (Coda)", "dino": "DINO",
          "supcon": "SupCon", "random": "random init", "coda-neg": "Coda, negatives-only denominator",
          "coda-ema": "Coda, 10x slower teacher EMA", "coda-student": "Coda, student backbone",
          "inter-student": "L_inter only, student backbone", "intra-student": "L_intra only, student backbone",
          "dino-student": "DINO, student backbone"}
# arms with a DINO-style head (K prototypes)
INTRA = {"coda", "intra", "dino", "coda-neg", "coda-ema", "coda-student", "intra-student", "dino-student"}
# exploratory comparisons of a pre-registered scale (A, B), on every primary endpoint
EXPLORATORY = (("coda", "dino"), ("coda", "supcon"), ("coda", "random"), ("intra", "inter"), ("dino", "random"),
               ("supcon", "random"), ("inter", "random"), ("intra", "random"))
SEG = "ct-organs|U-Net segmentation"
CLUSTERS = prereg.CLUSTERS


@dataclasses.dataclass
class Run:
    """One pretrained model (or random init) and its probe-seed values.

    Attributes:
        arm, seed: the arm and its pretraining seed.
        measures: canonical measure key -> metric -> value per probe seed.
        teacher_entropy: final logged teacher entropy (nats); None if not recorded or no teacher.
        out_dim: K of the DINO head (None without one).
        health: the run's health verdict (``health.json``); None for runs from before the monitor.
    """

    arm: str
    seed: int
    measures: dict[str, dict[str, list[float]]]
    teacher_entropy: float | None = None
    out_dim: int | None = None
    health: str | None = None


def canonical(task: str, protocol: str, setting: str) -> str:
    """The measure key of an ``evaluate_models`` row (task name, protocol, setting) in the tables' naming."""
    if task == "pneumoniamnist" and protocol == "linear":
        return "pneumonia|linear|100%"
    if task == "pneumoniamnist" and protocol.startswith("fewshot-"):
        kind = {"linear": "linear", "finetune": "fine-tune"}[protocol.split("-", 1)[1]]
        return f"pneumonia|{kind}|{setting}"
    if task == "mednist" and protocol == "fewshot-linear":
        return f"mednist|few-shot linear|{setting}"
    if task == "totalseg_ct_organs" and protocol == "clusters":
        return CLUSTERS
    if task == "totalseg_ct_seg" and protocol == "segmentation":
        return SEG
    return f"{task}|{protocol}|{setting}"


def legacy_runs(data: dict[str, Any]) -> list[Run]:
    """Split a legacy ``results.json`` back into pretraining runs (run d used pretraining seed d mod P)."""
    p = int(data["scale"]["pretrain_seeds"])
    out_dim = int(data["scale"]["out_dim"])
    runs: dict[tuple[str, int], Run] = {}
    for key, metrics in data["cells"].items():
        measure, arm = key.rsplit("|", 1)
        if measure.startswith(SEG):
            measure = SEG
        for seed in range(p):
            run = runs.setdefault((arm, seed), Run(arm, seed, {}, None, out_dim if arm in INTRA else None))
            run.measures[measure] = {m: [float(x) for d, x in enumerate(v) if d % p == seed] for m, v in metrics.items()}
    return list(runs.values())


def load_runs(folder: Path, sub: str = "runs") -> list[Run]:
    """Every run file of ``folder/<sub>`` (``runs``: committed runs; ``pilot``: pilot runs), in (arm, seed) order."""
    runs = []
    for path in sorted((folder / sub).glob("*.json")):
        r = json.loads(path.read_text())
        measures: dict[str, dict[str, list[float]]] = {}
        for task, ev in r["evaluation"].items():
            for row in ev["rows"]:
                measures[canonical(task, row["protocol"], row["setting"])] = row["values"]
        pre = r.get("pretrain") or {}
        runs.append(Run(r["arm"], int(r["seed"]), measures, pre.get("teacher_entropy"), pre.get("out_dim"),
                        pre.get("health")))
    return sorted(runs, key=lambda x: (x.arm, x.seed))


def arm_means(runs: Sequence[Run], key: str, metric: str) -> dict[str, dict[int, float]]:
    """arm -> pretraining seed -> mean over that model's probe seeds (arms without the measure left out)."""
    out: dict[str, dict[int, float]] = {}
    for r in runs:
        values = r.measures.get(key, {}).get(metric)
        if values:
            out.setdefault(r.arm, {}).update(st.model_means({r.seed: values}))
    return out


def fmt(means: dict[int, float] | None, n_row: int | None = None) -> str:
    """"91.39 ± 0.30" (in %) over pretraining runs; "91.39" for one run; "(n = k)" if k differs from the row."""
    if not means:
        return "–"
    m, sd, n = st.mean_sd(list(means.values()))
    text = f"{100 * m:.2f}" + (f" ± {100 * sd:.2f}" if n > 1 else "")
    return text + (f" (n = {n})" if n_row is not None and n != n_row else "")


def n_runs(runs: Sequence[Run], arm: str) -> int:
    return sum(r.arm == arm for r in runs)


# ---- earlier scales: one short paragraph each -------------------------------------------------------------

def legacy_block(folder: Path, runs: Sequence[Run], scale: dict[str, Any]) -> list[str]:
    """An earlier scale in one paragraph: its recipe, its runs per arm, and why it gives no verdict."""
    arms = [a for a in LABELS if any(r.arm == a for r in runs)]
    pretrained = [r for r in runs if r.arm != "random"]
    reasons = []
    if any(r.health is None for r in pretrained):
        reasons.append("its runs predate the health verdict")
    elif any(r.health != st.LEARNING for r in pretrained):
        reasons.append("not every run reached the health verdict `learning`")
    if max(n_runs(runs, a) for a in arms) < st.MIN_LEARNING_RUNS:
        reasons.append(f"fewer than {st.MIN_LEARNING_RUNS} pretraining runs per arm")
    reasons.append("nothing was pre-registered")
    rel = folder.relative_to(REPO) if folder.is_relative_to(REPO) else folder
    name = folder.name.removeprefix("coda_ablation-")
    return [f"**{name}** (earlier scale, no verdict): `{scale['backbone']}`, {scale['steps']:,} steps of batch "
            f"{scale['batch_size']}, {scale['num_local_views']} local crops of {scale['local_size']} px, "
            f"K = {scale['out_dim']:,}; pretraining runs per arm: "
            + ", ".join(f"{LABELS[a]} n = {n_runs(runs, a)}" for a in arms)
            + f". No verdict: {'; '.join(reasons)}. Its files stay in `{rel}/`; "
              f"`python benchmarks/coda_ablation_report.py {rel}` rewrites this paragraph."]


# ---- pre-registered scales ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Tested:
    """One contrast as tested: its comparison over the learning runs, Holm p, MDE and verdict words."""

    contrast: dict[str, Any]
    comparison: st.Comparison
    p_holm: float
    mde_sd: float
    verdict: str

    @property
    def observed_sd(self) -> float:
        c = self.comparison
        return c.delta / c.sd if math.isfinite(c.sd) and c.sd > 0 else math.nan


def learning(runs: Sequence[Run]) -> dict[str, st.LearningRuns]:
    """The learning runs of every arm (random init: every run; it has no pretraining to judge)."""
    by_arm: dict[str, dict[int, str | None]] = {}
    for r in runs:
        by_arm.setdefault(r.arm, {})[r.seed] = r.health
    return {a: st.learning_seeds(v, applies=a != "random") for a, v in by_arm.items()}


def endpoint_means(runs: Sequence[Run], gate: dict[str, st.LearningRuns], endpoint: str) -> dict[str, dict[int, float]]:
    """arm -> learning seed -> model mean of a primary endpoint (excluded runs left out)."""
    key, metric, _ = prereg.ENDPOINTS[endpoint]
    means = arm_means(runs, key, metric)
    return {a: {s: v for s, v in m.items() if s in gate[a].kept} for a, m in means.items() if a in gate}


def evaluate_contrasts(runs: Sequence[Run], contrasts: Sequence[dict[str, Any]], *, alpha: float,
                   family_size: int | None = None) -> list[Tested]:
    """Each contrast over the learning runs: paired t by seed, Holm over the family, MDE at the achieved n.

    The family is every registered contrast (``family_size``, default all of ``contrasts``): one without a test
    enters Holm's correction as p = 1, so a contrast that gets no verdict does not shrink the family. The MDE is
    at Bonferroni α/m (Holm's first, strictest step: conservative for every later rank), power 0.8.
    """
    gate = learning(runs)
    m = family_size or len(contrasts)
    comps, blocks = [], []
    for c in contrasts:
        terms, arms = [], prereg.arms_of(c)
        missing = [a for a in arms if a not in gate]
        for w, arm, e in c["terms"]:
            terms.append((float(w), endpoint_means(runs, gate, e).get(arm, {})))
        comps.append(st.contrast(terms))
        blocks.append([gate[a] for a in arms if a in gate] + [st.LearningRuns((), (), True)] * len(missing))
    raw = [c.p if math.isfinite(c.p) else 1.0 for c in comps]
    adjusted = st.holm(raw + [1.0] * (m - len(raw)))[:len(raw)]
    out = []
    for c, comp, ph, g in zip(contrasts, comps, adjusted, blocks):
        ph = ph if math.isfinite(comp.p) else math.nan
        mde_sd = st.mde(1.0, comp.n_a, alpha / m)
        out.append(Tested(c, comp, ph, mde_sd, st.preregistered_verdict(comp, ph, mde_sd, alpha=alpha, gates=g)))
    return out


def health_table(runs: Sequence[Run], arms: Sequence[str]) -> list[str]:
    """Every arm's runs by health verdict: kept (learning) and excluded, by seed."""
    gate = learning(runs)
    rows = ["| Arm | pretraining runs | health verdict per run (seed: verdict) | in the contrasts |", "|---|---|---|---|"]
    for a in arms:
        if a not in gate:
            continue
        per_run = ", ".join(f"{r.seed}: {r.health or 'not recorded'}" for r in runs if r.arm == a)
        rows.append(f"| {LABELS[a]} | n = {n_runs(runs, a)} | {per_run if a != 'random' else '– (no pretraining)'} | "
                    f"{gate[a].text} |")
    return rows


def endpoint_table(runs: Sequence[Run], arms: Sequence[str]) -> list[str]:
    """Mean ± sd over each arm's learning runs of every primary endpoint, in %."""
    gate = learning(runs)
    rows = ["| Arm | pretraining runs (learning) | " + " | ".join(label for _, _, label in prereg.ENDPOINTS.values())
            + " |", "|---" * (len(prereg.ENDPOINTS) + 2) + "|"]
    for a in arms:
        if a not in gate:
            continue
        k = len(gate[a].kept)
        cells = [fmt(endpoint_means(runs, gate, e).get(a), k) for e in prereg.ENDPOINTS]
        rows.append(f"| {LABELS[a]} | n = {k} pretraining run{'s' if k != 1 else ''} | " + " | ".join(cells) + " |")
    return rows


def _delta(c: st.Comparison) -> str:
    if not math.isfinite(c.delta):
        return "–"
    return f"{100 * c.delta:+.2f}" + (f" ± {100 * c.sd:.2f}" if math.isfinite(c.sd) else "")


def _sd_units(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{x:+.2f}" if x != 0 else "0.00"


def contrast_table(tested: Sequence[Tested], m: int, alpha: float) -> list[str]:
    """The pre-registered contrasts: n, Δ, p, Holm p, observed effect and MDE in sd units, verdict."""
    rows = [f"| Pre-registered contrast | Endpoint | n | Δ (%-points, mean ± sd) | wins | p | Holm p (m = {m}) | "
            f"observed (sd units) | MDE at n (sd units; α/m = {alpha / m:.4f}, power 0.8) | verdict |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for t in tested:
        c, e = t.comparison, t.contrast["endpoint"]
        label = prereg.ENDPOINTS[e][2] if e in prereg.ENDPOINTS else "PneumoniaMNIST AUC: (1 % gap) − (100 % gap)"
        mde = "–" if not math.isfinite(t.mde_sd) else f"{t.mde_sd:.2f}"
        rows.append(f"| {t.contrast['claim']} | {label} | {c.n} | {_delta(c)} | {c.wins}/{c.n_a} | {st.pvalue(c.p)} | "
                    f"{st.pvalue(t.p_holm)} | {_sd_units(t.observed_sd)} | {mde} | {t.verdict} |")
    return rows


def table2_lines(tested: Sequence[Tested]) -> list[str]:
    """The Table 2 claim per endpoint: it holds only where both Coda − L_inter and Coda − L_intra are supported."""
    by = {t.contrast["id"]: t for t in tested}
    lines = []
    for e, (_, _, label) in prereg.ENDPOINTS.items():
        pair = [by.get(f"coda-{o}:{e}") for o in ("inter", "intra")]
        if None in pair:
            continue
        words = [t.verdict for t in pair]
        if all(w == "supported" for w in words):
            status = "supported"
        elif any(w.startswith("no verdict") for w in words):
            status = "no verdict"
        else:
            status = "not supported" + (" (inconclusive)" if any("inconclusive" in w for w in words) else "")
        lines.append(f"- {label}: **{status}** (Coda − L_inter: {words[0]}; Coda − L_intra: {words[1]}).")
    return lines


def instrument_lines(runs: Sequence[Run]) -> list[str]:
    """Does each primary endpoint move at all? Every pretrained arm against random init of the same architecture
    (paired by seed, uncorrected p): an endpoint on which no objective beats random init cannot show a
    difference between objectives, whatever its contrasts say."""
    gate = learning(runs)
    if "random" not in gate:
        return []
    lines = ["**Instrument check** (before reading a contrast: each pretrained arm − random init on each primary "
             "endpoint, Δ in %-points with its uncorrected paired p; not a claim):", ""]
    for e, (_, _, label) in prereg.ENDPOINTS.items():
        means = endpoint_means(runs, gate, e)
        parts, moved = [], []
        for arm in ("coda", "inter", "intra", "dino", "supcon"):
            if not means.get(arm) or not means.get("random"):
                continue
            c = st.contrast([(1.0, means[arm]), (-1.0, means["random"])])
            parts.append(f"{LABELS[arm]} {100 * c.delta:+.2f} (p {st.pvalue(c.p)})")
            if math.isfinite(c.p) and c.p < st.ALPHA and c.delta > 0:
                moved.append(arm)
        if not parts:
            continue
        if "coda" in moved:
            word = "moves: Coda is above random init"
        elif moved:
            word = (f"Coda is not above random init (only {', '.join(LABELS[a] for a in moved)} is): the Coda contrasts "
                    "on it compare arms this endpoint does not tell apart from an untrained network")
        else:
            word = "no pretrained arm is above random init: this endpoint does not move at this scale"
        lines.append(f"- {label}: {'; '.join(parts)}. **{word}.**")
    return lines + [""]


def exploratory_table(runs: Sequence[Run]) -> list[str]:
    """Every other comparison (other arm pairs, each primary endpoint): uncorrected p, the word "exploratory"."""
    gate = learning(runs)
    rows = ["| Exploratory comparison | Endpoint | n | Δ (%-points, mean ± sd) | wins | p (uncorrected) | status |",
            "|---|---|---|---|---|---|---|"]
    for a, b in EXPLORATORY:
        if a not in gate or b not in gate:
            continue
        for e, (_, _, label) in prereg.ENDPOINTS.items():
            means = endpoint_means(runs, gate, e)
            if not means.get(a) or not means.get(b):
                continue
            c = st.contrast([(1.0, means[a]), (-1.0, means[b])])
            wins = f"{c.wins}/{c.n_a}" if c.n_a else "–"
            rows.append(f"| {LABELS[a]} − {LABELS[b]} | {label} | {c.n} | {_delta(c)} | {wins} | {st.pvalue(c.p)} | "
                        "exploratory |")
    return rows if len(rows) > 2 else []


def plot_runs(runs: Sequence[Run], arms: Sequence[str], path: Path) -> bool:
    """One panel per primary endpoint: each arm's runs as points (excluded runs hollow), the mean of its
    learning runs as a bar."""
    gate = learning(runs)
    arms = [a for a in arms if a in gate]
    if not arms:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(prereg.ENDPOINTS), figsize=(4.2 * len(prereg.ENDPOINTS), 3.8), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, (e, (key, metric, label)) in zip(axes[0], prereg.ENDPOINTS.items()):
        means = arm_means(runs, key, metric)
        for i, a in enumerate(arms):
            per_seed = means.get(a, {})
            kept = [100 * v for s, v in per_seed.items() if s in gate[a].kept]
            out = [100 * v for s, v in per_seed.items() if s not in gate[a].kept]
            ax.scatter(i + rng.uniform(-0.12, 0.12, len(kept)), kept, s=18, color=f"C{i}", zorder=3)
            ax.scatter(i + rng.uniform(-0.12, 0.12, len(out)), out, s=18, facecolors="none", edgecolors=f"C{i}",
                       zorder=3, label="excluded (not learning)" if out and i == 0 else None)
            if kept:
                ax.hlines(np.mean(kept), i - 0.3, i + 0.3, color="k", lw=2, zorder=4)
        ax.set_xticks(range(len(arms)), [f"{LABELS[a]}\nn = {len(gate[a].kept)}" for a in arms], fontsize=7,
                      rotation=30)
        ax.set_title(label, fontsize=8)
        ax.set_ylabel("%")
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Each point one pretraining run; bar: mean of the learning runs; hollow: excluded", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def preregistered_block(folder: Path, scale: bench.Scale, fig_dir: Path) -> list[str]:
    """The block of a pre-registered scale; with no run files it says so."""
    design = prereg.load(bench.preregistration_file(scale))
    runs = load_runs(folder) if (folder / "runs").is_dir() else []
    rel_prereg = f"benchmarks/preregistered/{scale.preregistration}"
    planned = ", ".join(f"{LABELS[a]} {len(scale.seeds_of(a))}" for a in scale.arms)
    recipe = (f"`{scale.recipe}/<method>.yaml` (`{scale.backbone}`, {scale.steps} steps of batch {scale.batch_size}, "
              f"{scale.global_size} px + {scale.num_local_views} × {scale.local_size} px crops, K = {scale.out_dim:,}, "
              f"teacher EMA {scale.momentum}→1)" if scale.recipe else
              f"`{scale.backbone}`, {scale.steps:,} steps of batch {scale.batch_size}, {scale.global_size} px + "
              f"{scale.num_local_views} × {scale.local_size} px crops, K = {scale.out_dim:,}")
    md = [f"#### Pre-registered test ({scale.name} scale)", "",
          f"- Pretraining: {recipe} on the MedNIST train split; every arm shares backbone, crops, batch, steps, "
          "schedules and seeds (SupCon: its two global views). Evaluation: the primary endpoints only, frozen "
          f"features at {scale.global_size} px, probe seeds averaged within each model.",
          f"- Planned pretraining runs per arm: {planned}."]
    if design is None:
        md += [f"- **Not pre-registered yet**: `{rel_prereg}` does not exist, and `coda_ablation.py` writes no run "
               "file of this scale before it does (pilot, then `coda_ablation_report.py --preregister`)."]
    else:
        m, alpha = design["family"]["m"], design["alpha"]
        md += [f"- Pre-registered in `{rel_prereg}` ({design['registered']}): {m} contrasts, {design['test']}, "
               f"α = {alpha}, Holm over all {m} as one family; a run whose health verdict is not `learning` is "
               f"excluded, an arm with fewer than {st.MIN_LEARNING_RUNS} learning runs gets no verdict. MDE at the "
               "planned n (sd units, α/m, power 0.8): "
               + ", ".join(f"{k} {v['sd_units']:.2f} (n = {v['n']})" for k, v in design["mde"].items()) + "."]
    if not runs:
        return md + ["", f"**No runs yet**: no run file under `{folder.name}/runs/`; the tables appear with the "
                         "first one and fill across sittings.", ""]
    arms = [a for a in LABELS if any(r.arm == a for r in runs)]
    md += ["", "**Health** (each run's `health.json` verdict; a run that is not `learning` is shown and counted "
               "here and excluded from every mean and contrast below).", "", *health_table(runs, arms), "",
           "**Primary endpoints**, mean ± sd over the learning pretraining runs, in %.", "",
           *endpoint_table(runs, arms), "", *instrument_lines(runs)]
    if design is not None:
        tested = evaluate_contrasts(runs, design["contrasts"], alpha=design["alpha"], family_size=design["family"]["m"])
        m, alpha = design["family"]["m"], design["alpha"]
        md += [f"**Pre-registered contrasts** (Δ = the contrast's per-seed value over paired learning runs, n = its "
               f"pairs; two-sided paired t; Holm over the {m} registered contrasts, one without a test counted as "
               f"p = 1; observed effect = mean / sd of the per-seed values; MDE = the effect the test detects with "
               f"power 0.8 at the achieved n and Bonferroni α/m, conservative against Holm's later ranks; "
               "\"inconclusive\": not significant with an MDE above the observed effect, which is not evidence of "
               "no effect).", "", *contrast_table(tested, m, alpha), "",
               "**Table 2 claim** (both objectives beat either alone) per endpoint:", "", *table2_lines(tested), ""]
    explore = exploratory_table(runs)
    if explore:
        md += ["**Exploratory** (not pre-registered: uncorrected p, no verdict).", "", *explore, ""]
    if plot_runs(runs, arms, fig_dir / f"{folder.name}_runs.png"):
        md += [f"![each run per arm and endpoint]({FIG}/{folder.name}_runs.png)", ""]
    return md + commands(folder)


def commands(folder: Path) -> list[str]:
    """How to regenerate the block: the benchmark call, and one run's equivalent ``organfm`` commands."""
    report = f"python benchmarks/coda_ablation_report.py {folder.relative_to(REPO) if folder.is_relative_to(REPO) else folder}"
    files = sorted((folder / "runs").glob("*.json"))
    records = [json.loads(f.read_text()) for f in files]
    example = next((r for r in records if r["arm"] == "coda"), records[0])
    return [f"Regenerate: `{example['bench_command']}` for each arm and seed (`--arms`, `--seeds`), then `{report}`. "
            f"Every run file holds its own equivalent product commands; for {example['arm']} seed {example['seed']}:",
            "", "```", *example["commands"], "```", ""]


def scale_of(folder: Path) -> bench.Scale | None:
    """The pre-registered scale a folder belongs to (``coda_ablation-small`` -> small), else None."""
    scale = bench.SCALES.get(folder.name.removeprefix("coda_ablation-"))
    return scale if scale is not None and scale.preregistration else None


def block(folder: Path, docs: Path | None) -> tuple[str, str]:
    """(block name, markdown of the block) for one output folder; figures go next to ``docs``."""
    name = folder.name.replace("_", "-")
    fig_dir = docs.parent / "figures" if docs else folder
    fig_dir.mkdir(parents=True, exist_ok=True)
    scale = scale_of(folder)
    if scale is not None:
        md = preregistered_block(folder, scale, fig_dir)
    else:
        legacy = json.loads((folder / "results.json").read_text()) if (folder / "results.json").is_file() else None
        runs = load_runs(folder) if (folder / "runs").is_dir() else []
        if legacy is not None:
            runs += legacy_runs(legacy)
        if not runs:
            raise FileNotFoundError(f"{folder} holds neither runs/*.json nor results.json")
        info = legacy["scale"] if legacy is not None else \
            json.loads(sorted((folder / "runs").glob("*.json"))[0].read_text())["scale"]
        md = legacy_block(folder, runs, info)
    return name, "\n".join([MARKERS[0].format(name), *md, MARKERS[1].format(name)]) + "\n"


def write_block(folder: Path, docs: Path | None) -> str:
    """Replace (or append) ``folder``'s block in ``docs``; also write ``folder/results.md``. Returns the block."""
    name, text = block(folder, docs)
    fig_dir = docs.parent / "figures" if docs else folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.md").write_text(text.replace(FIG, os.path.relpath(fig_dir, folder)))
    text = text.replace(FIG, os.path.relpath(fig_dir, docs.parent) if docs else ".")
    if docs is not None:
        begin, end = (m.format(name) for m in MARKERS)
        page = docs.read_text() if docs.is_file() else "# Results\n"
        if begin in page and end in page:
            page = page[:page.index(begin)] + text.rstrip("\n") + page[page.index(end) + len(end):]
        else:
            page = page.rstrip() + f"\n\n### Coda ablation ({folder.name})\n\n" + text
        docs.write_text(page)
    return text


# ---- the pre-registration, from the pilot ------------------------------------------------------------------

def pilot_sd(folder: Path) -> tuple[dict[str, float | None], dict[str, Any]]:
    """The sd of every registered contrast's per-seed values over the pilot's learning runs, and the pilot's
    description (folder, seeds, health) for the pre-registration."""
    runs = load_runs(folder, "pilot") if (folder / "pilot").is_dir() else []
    gate = learning(runs)
    sd: dict[str, float | None] = {}
    for c in prereg.CONTRASTS:
        terms = [(float(w), endpoint_means(runs, gate, e).get(arm, {})) for w, arm, e in c["terms"]]
        comp = st.contrast(terms)
        sd[c["id"]] = comp.sd if comp.n_a >= 2 and math.isfinite(comp.sd) else None
    rel = folder.relative_to(REPO) if folder.is_relative_to(REPO) else folder
    info = {"folder": f"{rel}/pilot", "seeds": sorted({r.seed for r in runs}),
            "health": {f"{r.arm}-seed{r.seed}": r.health or "not recorded" for r in runs},
            "note": "pilot runs size the MDE only; they are not part of any test"}
    return sd, info


def preregister(folder: Path, *, without_pilot: bool = False) -> Path:
    """Write ``benchmarks/preregistered/<scale's file>`` from the pilot in ``folder/pilot``; never overwrite it.

    Raises:
        FileExistsError: the pre-registration exists already.
        ValueError: not a pre-registered scale, or the pilot lacks the sd of a contrast (two learning pilot runs
            per arm are needed) unless ``without_pilot``, which states the MDE in sd units only.
    """
    scale = scale_of(folder)
    if scale is None:
        known = ", ".join(s for s, v in bench.SCALES.items() if v.preregistration)
        raise ValueError(f"{folder.name}: not a pre-registered scale ({known})")
    path = bench.preregistration_file(scale)
    if path.exists():
        raise FileExistsError(f"{path} exists: a pre-registration is written once and never overwritten")
    if without_pilot:
        sd, info = {}, {"folder": None, "seeds": [], "note": "no pilot: the MDE is stated in sd units only"}
    else:
        sd, info = pilot_sd(folder)
        missing = [k for k, v in sd.items() if v is None]
        if missing:
            raise ValueError(f"the pilot in {folder / 'pilot'} gives no sd for {', '.join(missing)}: it needs two "
                             "learning pilot runs of each arm on the same seeds (coda_ablation.py --scale "
                             f"{scale.name} --pilot), or pass --without-pilot")
    arms = {a: {"method": "random init" if a == "random" else bench.ARMS[a][0],
                "overrides": [] if a == "random" else bench.ARMS[a][1],
                "recipe": None if a == "random" or scale.recipe is None else f"{scale.recipe}/{bench.ARMS[a][0]}.yaml",
                "seeds": list(scale.seeds_of(a))} for a in scale.arms}
    return prereg.write(path, prereg.build(scale.name, arms, sd, pilot=info))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="*", help="output folders (default: every benchmarks/results/coda_ablation-*, "
                   "and the small scale's)")
    p.add_argument("--docs", default=str(REPO / "docs" / "results.md"), help="results page ('' to skip)")
    p.add_argument("--preregister", metavar="FOLDER", default=None,
                   help="write the scale's pre-registration from FOLDER/pilot (refuses to overwrite), then stop")
    p.add_argument("--without-pilot", action="store_true", help="with --preregister: MDE in sd units only")
    args = p.parse_args(argv)
    if args.preregister:
        try:
            path = preregister(Path(args.preregister).resolve(), without_pilot=args.without_pilot)
        except (FileExistsError, ValueError) as e:
            print(f"refused: {e}", file=sys.stderr)
            return 1
        print(f"wrote {path}: commit it before the first run file")
        return 0
    results = REPO / "benchmarks" / "results"
    folders = [Path(f).resolve() for f in args.folders] or sorted(
        set(results.glob("coda_ablation-*")) | {results / "coda_ablation-small"})
    for folder in folders:
        write_block(folder, Path(args.docs) if args.docs else None)
        print(f"wrote the block of {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
