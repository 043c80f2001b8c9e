"""The "Coda ablation" blocks of docs/results.md, aggregated from every committed pretraining run.

Inputs of one output folder ``benchmarks/results/coda_ablation-<scale>``:
- ``runs/<arm>-seed<k>.json``: one finished (arm, pretraining seed) run of ``coda_ablation.py`` (its
  per-probe-seed values, final teacher entropy, recipe, timings and the equivalent ``organfm`` commands);
- ``results.json`` (legacy, written before per-run files): ``{"cells": {"task|protocol|setting|arm":
  {metric: [value of run d]}}}`` where run d used pretraining seed ``d mod P``; it is split back into runs.

Statistics (``claims.py``): probe seeds are averaged within each pretrained model, arms compared across
pretraining runs, the claims of one table Holm-corrected, n written beside every mean ± sd and every p, and no
verdict for an arm whose intra branch has not started learning. Each folder's block sits between two HTML
comments, so the rest of the page (other benchmarks, hand-written prose) survives a rerun::

    python benchmarks/coda_ablation_report.py                  # every benchmarks/results/coda_ablation-*/
    python benchmarks/coda_ablation_report.py benchmarks/results/coda_ablation-cpu-1k
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

REPO = Path(__file__).resolve().parents[1]
MARKERS = "<!-- {}:begin -->", "<!-- {}:end -->"
FIG = "@@figures@@"
LABELS = {"inter": "L_inter only", "intra": "L_intra only", "coda": "both (Coda)", "dino": "DINO",
          "supcon": "SupCon", "random": "random init", "coda-neg": "Coda, negatives-only denominator",
          "coda-ema": "Coda, 10x slower teacher EMA", "coda-student": "Coda, student backbone",
          "inter-student": "L_inter only, student backbone", "intra-student": "L_intra only, student backbone",
          "dino-student": "DINO, student backbone"}
# arms with a DINO-style intra branch (a teacher over K prototypes): gated on its entropy
INTRA = {"coda", "intra", "dino", "coda-neg", "coda-ema", "coda-student", "intra-student", "dino-student"}
OPTIONAL = ("coda-neg", "coda-ema", "coda-student", "inter-student", "intra-student", "dino-student")
# Coda paper, Table 2 (full data, 10 runs) and Table 1 (few-shot, TB AUC %)
PAPER_T2 = {"inter": ("95.74 ± 0.96", "84.85 ± 0.94"), "intra": ("97.17 ± 0.74", "85.23 ± 0.54"),
            "coda": ("97.78 ± 0.77", "85.59 ± 0.60")}
PAPER_T1 = {"Coda (paper, TB AUC)": ("81.70", "90.72", "93.09", "96.14"),
            "LVM-Med (paper, TB AUC)": ("59.50", "86.82", "88.78", "94.27")}
FRACTIONS = ("1%", "10%", "20%", "50%")
SEG = "ct-organs|U-Net segmentation"
CLUSTERS = "ct-organs|clusters|crops"


@dataclasses.dataclass
class Run:
    """One pretrained model (or random init) and its probe-seed values.

    Attributes:
        arm, seed: the arm and its pretraining seed.
        measures: canonical measure key -> metric -> value per probe seed.
        teacher_entropy: final logged teacher entropy (nats); None if not recorded or no teacher.
        out_dim: K of the DINO head (None without one).
    """

    arm: str
    seed: int
    measures: dict[str, dict[str, list[float]]]
    teacher_entropy: float | None = None
    out_dim: int | None = None


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


def load_runs(folder: Path) -> list[Run]:
    """Every committed run file of ``folder/runs``, in (arm, seed) order."""
    runs = []
    for path in sorted((folder / "runs").glob("*.json")):
        r = json.loads(path.read_text())
        measures: dict[str, dict[str, list[float]]] = {}
        for task, ev in r["evaluation"].items():
            for row in ev["rows"]:
                measures[canonical(task, row["protocol"], row["setting"])] = row["values"]
        pre = r.get("pretrain") or {}
        runs.append(Run(r["arm"], int(r["seed"]), measures, pre.get("teacher_entropy"), pre.get("out_dim")))
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


def gates(runs: Sequence[Run]) -> dict[str, st.Gate]:
    """The intra gate of every arm, over all its runs."""
    by_arm: dict[str, list[Run]] = {}
    for r in runs:
        by_arm.setdefault(r.arm, []).append(r)
    return {arm: st.intra_gate([r.teacher_entropy for r in rs], rs[0].out_dim, has_intra=arm in INTRA)
            for arm, rs in by_arm.items()}


def n_runs(runs: Sequence[Run], arm: str) -> int:
    return sum(r.arm == arm for r in runs)


def measure_table(runs: Sequence[Run], arms: Sequence[str], columns: Sequence[tuple[str, str, str]],
                  paper: dict[str, Sequence[str]] | None = None, paper_head: Sequence[str] = ()) -> list[str]:
    """One row per arm: its pretraining runs, then mean ± sd over them of each column (key, metric)."""
    columns = [c for c in columns if arm_means(runs, c[1], c[2])]
    if not columns:
        return []
    rows = ["| Objective | pretraining runs | " + " | ".join(c[0] for c in columns)
            + "".join(f" | {h}" for h in paper_head) + " |", "|---" * (len(columns) + 2 + len(paper_head)) + "|"]
    for arm in arms:
        n = n_runs(runs, arm)
        cells = [fmt(arm_means(runs, key, m).get(arm), n) for _, key, m in columns]
        if all(c == "–" for c in cells):
            continue
        extra = list((paper or {}).get(arm, ("–",) * len(paper_head)))
        rows.append(f"| {LABELS[arm]} | n = {n} | " + " | ".join(cells + extra) + " |")
    return rows


def claim_specs(runs: Sequence[Run]) -> list[tuple[str, str, str, str, str, str]]:
    """(claim, measure name, key, metric, arm A, arm B) of every claim both arms were measured on."""
    specs = []
    for a, b, why in (("coda", "inter", "both > L_inter only (Table 2)"),
                      ("coda", "intra", "both > L_intra only (Table 2)"),
                      ("intra", "inter", "L_intra only > L_inter only (Table 2)")):
        for key, metric, name in (("pneumonia|linear|100%", "auc", "Pneumonia AUC, linear"),
                                  ("pneumonia|fine-tune|50%", "auc", "Pneumonia AUC, fine-tune 50 %"),
                                  (SEG, "mean_dice", "CT Dice")):
            specs.append((why, name, key, metric, a, b))
    why = "Coda > DINO with little labelled data (Table 1)"
    specs += [(why, f"Pneumonia AUC, fine-tune {f}", f"pneumonia|fine-tune|{f}", "auc", "coda", "dino")
              for f in FRACTIONS]
    specs.append((why, "Pneumonia AUC, linear 1%", "pneumonia|linear|1%", "auc", "coda", "dino"))
    for other in ("random", "dino"):
        for metric, name in (("knn_accuracy", "CT organ kNN acc"), ("nmi", "CT organ NMI")):
            specs.append((f"organs cluster (t-SNE figure): Coda > {LABELS[other]}", name, CLUSTERS, metric,
                          "coda", other))
    # not the paper's claim: the one objective that moved at the CPU scale, tested under the same rules
    for key, metric, name in ((CLUSTERS, "knn_accuracy", "CT organ kNN acc"), (CLUSTERS, "nmi", "CT organ NMI"),
                              ("pneumonia|linear|100%", "auc", "Pneumonia AUC, linear")):
        specs.append(("(ours) SupCon > random init", name, key, metric, "supcon", "random"))
    out = []
    for spec in specs:
        means = arm_means(runs, spec[2], spec[3])
        if spec[4] in means and spec[5] in means:
            out.append(spec)
    return out


def claims_table(runs: Sequence[Run], specs: Sequence[tuple[str, str, str, str, str, str]],
                 header: str = "Claim") -> list[str]:
    """Each claim A > B across pretraining runs, Holm-corrected over the rows of this table."""
    if not specs:
        return []
    g = gates(runs)
    comps = []
    for _, _, key, metric, a, b in specs:
        means = arm_means(runs, key, metric)
        comps.append(st.compare(means[a], means[b]))
    adjusted = st.holm([c.p for c in comps])
    rows = [f"| {header} | Measure | n | Δ (%-points) | wins | test | p | Holm p | verdict |",
            "|---|---|---|---|---|---|---|---|---|"]
    for (why, name, _, _, a, b), c, ph in zip(specs, comps, adjusted):
        delta = f"{100 * c.delta:+.2f}" + (f" ± {100 * c.sd:.2f}" if math.isfinite(c.sd) else "")
        wins = f"{c.wins}/{c.n_a}" if c.wins >= 0 else "–"
        rows.append(f"| {why} | {name} | {c.n} | {delta} | {wins} | {c.test} | {st.pvalue(c.p)} | "
                    f"{st.pvalue(ph)} | {st.verdict(c, ph, (g[a], g[b]))} |")
    return rows


def gate_table(runs: Sequence[Run], arms: Sequence[str]) -> list[str]:
    g = gates(runs)
    rows = ["| Arm | pretraining runs | intra branch |", "|---|---|---|"]
    return rows + [f"| {LABELS[a]} | n = {n_runs(runs, a)} | {g[a].text} |" for a in arms if a in INTRA and a in g]


def variant_specs(runs: Sequence[Run], optional: Sequence[str]) -> list[tuple[str, str, str, str, str, str]]:
    """Optional arms against their reference (Coda, or for a student backbone its own teacher)."""
    out = []
    for arm in optional:
        ref = arm.removesuffix("-student") if arm.endswith("-student") else "coda"
        for key, metric, name in (("pneumonia|linear|100%", "auc", "Pneumonia AUC, linear"),
                                  ("pneumonia|linear|1%", "auc", "Pneumonia AUC, linear 1 %"),
                                  (CLUSTERS, "knn_accuracy", "CT organ kNN acc"), (CLUSTERS, "nmi", "CT organ NMI")):
            means = arm_means(runs, key, metric)
            if arm in means and ref in means:
                out.append((f"{LABELS[arm]} > {LABELS[ref]}", name, key, metric, arm, ref))
    return out


def plot_fewshot(runs: Sequence[Run], arms: Sequence[str], path: Path) -> bool:
    """Mean ± sd over pretraining runs against the labelled fraction, one panel per few-shot protocol."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(p, s, m, t) for p, s, m, t in (
        ("pneumonia|fine-tune", FRACTIONS, "auc", "PneumoniaMNIST fine-tune AUC"),
        ("pneumonia|linear", FRACTIONS, "auc", "PneumoniaMNIST linear-probe AUC"),
        ("mednist|few-shot linear", ("1-shot", "5-shot", "1%", "10%"), "accuracy", "MedNIST linear-probe accuracy"))
        if any(k.startswith(p + "|") for r in runs for k in r.measures)]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    for ax, (prefix, settings, metric, title) in zip(axes[0], panels):
        for arm in arms:
            ys = [arm_means(runs, f"{prefix}|{s}", metric).get(arm) for s in settings]
            if any(not y for y in ys):
                continue
            stats = [st.mean_sd(list(y.values())) for y in ys]
            ax.errorbar(range(len(settings)), [s[0] for s in stats], yerr=[np.nan_to_num(s[1]) for s in stats],
                        label=f"{LABELS[arm]} (n = {stats[0][2]})", marker="o", capsize=3)
        ax.set_xticks(range(len(settings)), settings)
        ax.set_title(title + "\n(mean ± sd over pretraining runs)", fontsize=9)
        ax.set_xlabel("labelled training data")
        ax.grid(alpha=0.3)
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_tsne(maps: dict[str, list], labels: Sequence[int], names: Sequence[str], path: Path) -> None:
    """One panel per arm: its 2-D map of the CT organ crops (pretraining seed 0), coloured by organ."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols, rows, labels = 3, math.ceil(len(maps) / 3), np.asarray(labels)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.6 * rows), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, (arm, xy) in zip(axes.flat, maps.items()):
        xy = np.asarray(xy)
        for c in np.unique(labels):
            ax.scatter(xy[labels == c, 0], xy[labels == c, 1], s=4, color=cmap(int(c) % 10), label=names[int(c)])
        ax.set_title(f"{LABELS[arm]} (seed 0)")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(maps):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6, markerscale=3, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def setting_lines(s: dict[str, Any], runs: Sequence[Run], legacy: dict[str, Any] | None) -> list[str]:
    """The recipe of a block, and how its numbers were computed."""
    lines = [f"- Pretraining: `{s['backbone']}`, {s['steps']} steps of batch {s['batch_size']} "
             f"({s['steps'] * s['batch_size']:,} images per run) on the MedNIST train split, globals "
             f"{s['global_size']} px, {s['num_local_views']} local crops of {s['local_size']} px (SupCon: the two "
             f"globals only), lr {s['lr']}, teacher EMA {s['momentum']}→1, DINO heads "
             f"{s['hidden_dim']}→{s['out_dim']} (ln K = {math.log(s['out_dim']):.2f})."]
    arms = dict.fromkeys(r.arm for r in runs)
    lines.append("- Pretraining runs per arm: " + ", ".join(f"{LABELS[a]} n = {n_runs(runs, a)}" for a in arms) + ".")
    if legacy is not None:
        lines.append(f"- Recorded as {legacy['scale']['runs']} probe runs per cell, run d on pretraining seed "
                     f"d mod {legacy['scale']['pretrain_seeds']}; here the probe runs of each pretrained model are "
                     "averaged first, so every mean ± sd, n and p below is over pretraining runs.")
    else:
        lines.append("- Each run: `organfm pretrain`, then `organfm evaluate` on each task file with the "
                     "run's pretraining seed as the task seed (probe subsets and random init follow it). The probe "
                     "seeds of a model are averaged first; mean ± sd, n and p are over pretraining runs.")
    return lines


def block(folder: Path, docs: Path | None) -> tuple[str, str]:
    """(block name, markdown of the block) for one output folder; figures go next to ``docs``."""
    legacy = json.loads((folder / "results.json").read_text()) if (folder / "results.json").is_file() else None
    runs = load_runs(folder) if (folder / "runs").is_dir() else []
    if legacy is not None:
        runs += legacy_runs(legacy)
    if not runs:
        raise FileNotFoundError(f"{folder} holds neither runs/*.json nor results.json")
    if legacy is not None:
        scale = legacy["scale"]
        command = " && ".join(legacy.get("commands") or [  # calls not recorded yet: the scale's, with its protocols
            f"python benchmarks/coda_ablation.py --scale {scale['name']} --protocols {','.join(scale['protocols'])}"])
    else:
        first = json.loads(sorted((folder / "runs").glob("*.json"))[0].read_text())
        scale, command = first["scale"], ""
    arms = [a for a in LABELS if any(r.arm == a for r in runs)]
    optional = [a for a in arms if a in OPTIONAL]
    name = folder.name.replace("_", "-")
    fig_dir = docs.parent / "figures" if docs else folder
    fig_dir.mkdir(parents=True, exist_ok=True)
    rel = FIG  # replaced per page: links are relative to the page that holds them
    md = [MARKERS[0].format(name), f"#### Setting ({scale['name']} scale)", "", *setting_lines(scale, runs, legacy), "",
          "**Intra branch** (a verdict on an arm with an intra branch needs its final teacher entropy "
          f"below {st.LEARNING_RATIO} · ln K in every run).", "", *gate_table(runs, arms), "",
          "**Table 2 layout (objective ablation)**, mean ± sd over pretraining runs, in %. The paper's columns are "
          "TB AUC and clavicle Dice after fine-tuning ConvNeXt-B pretrained on 23 organs (10 runs).", "",
          *measure_table(runs, arms, (("Pneumonia AUC (linear, 100 %)", "pneumonia|linear|100%", "auc"),
                                      ("Pneumonia AUC (fine-tune, 50 %)", "pneumonia|fine-tune|50%", "auc"),
                                      ("CT organ Dice (U-Net)", SEG, "mean_dice"),
                                      ("CT organ kNN acc", CLUSTERS, "knn_accuracy"), ("CT organ NMI", CLUSTERS, "nmi")),
                         PAPER_T2, ("paper: TB AUC %", "paper: Clavicle Dice %")), ""]
    for kind, label in (("fine-tune", "fine-tune"), ("linear", "linear probe")):
        cols = [(f"Pneumonia AUC {f}", f"pneumonia|{kind}|{f}", "auc") for f in FRACTIONS]
        table = measure_table(runs, arms, cols)
        if table:
            md += [f"**Table 1 layout (few-shot, {label})**, PneumoniaMNIST AUC with 1/10/20/50 % of its labels. "
                   "Paper (TB AUC, fine-tune): " + "; ".join(f"{k} {' / '.join(v)}" for k, v in PAPER_T1.items())
                   + ".", "", *table, ""]
    mednist = measure_table(runs, arms, [(f"MedNIST acc {s}", f"mednist|few-shot linear|{s}", "accuracy")
                                         for s in ("1-shot", "5-shot", "1%", "10%")])
    if mednist:
        md += ["**MedNIST few-shot** (linear probe; Coda, L_inter and SupCon saw every MedNIST *train* image's organ "
               "label in pretraining, so for them this is not few-shot).", "", *mednist, ""]
    md += ["**The paper's claims** (Δ = A − B over pretraining runs; paired t by pretraining seed where both arms "
           "share seeds, else Welch; Holm's correction over the rows of this table).", "",
           *claims_table(runs, claim_specs(runs)), ""]
    var = claims_table(runs, variant_specs(runs, optional), header="Variant")
    if var:
        md += ["**Variants tried** (a separate Holm family).", "", *var, ""]
    if plot_fewshot(runs, arms, fig_dir / f"{folder.name}_fewshot.png"):
        md += [f"![few-shot]({rel}/{folder.name}_fewshot.png)", ""]
    tsne = {a: legacy["tsne"][a] for a in LABELS if legacy and a in legacy.get("tsne", {})}
    if tsne:
        plot_tsne(tsne, legacy["tsne_labels"], legacy["tsne_names"], fig_dir / f"{folder.name}_tsne.png")
        md += [f"![t-SNE of CT organ crops]({rel}/{folder.name}_tsne.png)", ""]
    md += commands(folder, command) + [MARKERS[1].format(name)]
    return name, "\n".join(md) + "\n"


def commands(folder: Path, legacy_command: str) -> list[str]:
    """How to regenerate the block: the benchmark call, and one run's equivalent ``organfm`` commands."""
    report = f"python benchmarks/coda_ablation_report.py {folder.relative_to(REPO) if folder.is_relative_to(REPO) else folder}"
    if legacy_command:
        return [f"Produced by `{legacy_command}` with the benchmark's previous version (git history; its flags "
                f"differ from today's, and it predates per-run files); this block: `{report}`."]
    files = sorted((folder / "runs").glob("*.json"))
    example = next((json.loads(f.read_text()) for f in files if json.loads(f.read_text())["arm"] == "coda"),
                   json.loads(files[0].read_text()))
    return [f"Regenerate: `{example['bench_command']}` for each arm and seed (`--arms`, `--seeds`), then `{report}`. "
            f"Every run file holds its own equivalent product commands; for {example['arm']} seed {example['seed']}:",
            "", "```", *example["commands"], "```", ""]


def write_block(folder: Path, docs: Path | None) -> str:
    """Replace (or append) ``folder``'s block in ``docs``; also write ``folder/results.md``. Returns the block."""
    name, text = block(folder, docs)
    fig_dir = docs.parent / "figures" if docs else folder
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="*", help="output folders (default: every benchmarks/results/coda_ablation-*)")
    p.add_argument("--docs", default=str(REPO / "docs" / "results.md"), help="results page ('' to skip)")
    args = p.parse_args(argv)
    folders = [Path(f).resolve() for f in args.folders] or sorted((REPO / "benchmarks" / "results").glob("coda_ablation-*"))
    for folder in folders:
        write_block(folder, Path(args.docs) if args.docs else None)
        print(f"wrote the block of {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
