"""Tables, effect checks and figures of ``coda_ablation.py``: the "Coda ablation" part of docs/results.md.

Every number comes from ``results.json`` (``{"cells": {"task|protocol|setting|arm": {metric: [per run]}}}``);
the paper's numbers are quoted beside ours for the direction of each effect only (other data, other scale).
The generated block of each scale sits between two HTML comments in docs/results.md, so hand-written discussion outside
it survives a rerun.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

MARKERS = "<!-- {}:begin -->", "<!-- {}:end -->"  # around each output folder's block of docs/results.md
LABELS = {"inter": "L_inter only", "intra": "L_intra only", "coda": "both (Coda)", "dino": "DINO",
          "supcon": "SupCon", "random": "random init", "coda-neg": "Coda, negatives-only denominator",
          "coda-ema": "Coda, 10x slower teacher EMA", "coda-student": "Coda, student backbone",
          "inter-student": "L_inter only, student backbone", "intra-student": "L_intra only, student backbone",
          "dino-student": "DINO, student backbone"}
# Coda paper, Table 2 (full data, 10 runs) and Table 1 (few-shot, TB AUC %)
PAPER_T2 = {"inter": ("95.74 ± 0.96", "84.85 ± 0.94"), "intra": ("97.17 ± 0.74", "85.23 ± 0.54"),
            "coda": ("97.78 ± 0.77", "85.59 ± 0.60")}
PAPER_T1 = {"Coda (paper, TB AUC)": ("81.70", "90.72", "93.09", "96.14"),
            "LVM-Med (paper, TB AUC)": ("59.50", "86.82", "88.78", "94.27")}
FRACTIONS = ("1%", "10%", "20%", "50%")
# run on request: what the paper leaves open, and the student backbones of the teacher-exporting arms
OPTIONAL = ("coda-neg", "coda-ema", "coda-student", "inter-student", "intra-student", "dino-student")


def values(cells: dict, key: str, metric: str) -> np.ndarray | None:
    cell = cells.get(key)
    return None if cell is None or metric not in cell else np.asarray(cell[metric], dtype=float)


def fmt(x: np.ndarray | None, scale: float = 100.0, digits: int = 2) -> str:
    if x is None or len(x) == 0:
        return "–"
    sd = float(np.std(x, ddof=1)) if len(x) > 1 else 0.0
    return f"{scale * float(np.mean(x)):.{digits}f} ± {scale * sd:.{digits}f}"


def paired(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Run-by-run difference a − b (runs share the downstream seed and pretraining seed index)."""
    from scipy import stats

    n = min(len(a), len(b))
    d = a[:n] - b[:n]
    p = float(stats.ttest_rel(a[:n], b[:n]).pvalue) if n > 1 and np.std(d) > 0 else float("nan")
    return {"mean": float(d.mean()), "sd": float(d.std(ddof=1)) if n > 1 else 0.0, "wins": int((d > 0).sum()),
            "n": n, "p": p}


def pvalue(p: float) -> str:
    return f"{p:.3f}" if math.isfinite(p) else "–"


def verdict(effect: dict[str, float]) -> str:
    """The claim's status from the paired runs: the mean difference, its t-test, and the share of runs won."""
    up, majority = effect["mean"] > 0, effect["wins"] > effect["n"] / 2
    if not math.isfinite(effect["p"]):  # every run the same difference (one seed, a deterministic measure)
        return ("same direction" if up else "**not reproduced** (opposite sign)") + ", no run-to-run spread to test"
    if effect["p"] < 0.05:
        return "reproduced (p < 0.05)" if up else "**not reproduced: opposite, p < 0.05**"
    if up != majority:
        return "mixed (the mean and most runs disagree), not significant"
    return "same direction, not significant" if up else "**not reproduced** (opposite sign, not significant)"


def table2(cells: dict, arms: Sequence[str], seg_key: str) -> list[str]:
    """Table 2's layout: one row per objective; our measures that were run, then the paper's two columns."""
    ours = (("PneumoniaMNIST AUC % (linear, 100 %)", "pneumonia|linear|100%", "auc"),
            ("PneumoniaMNIST AUC % (fine-tune, 50 %)", "pneumonia|fine-tune|50%", "auc"),
            ("CT organ Dice % (U-Net)", seg_key, "mean_dice"),
            ("CT organ kNN acc %", "ct-organs|clusters|crops", "knn_accuracy"),
            ("CT organ NMI %", "ct-organs|clusters|crops", "nmi"))
    ours = [c for c in ours if any(values(cells, f"{c[1]}|{arm}", c[2]) is not None for arm in arms)]
    rows = ["| Objective | " + " | ".join(c[0] for c in ours) + " | paper: TB AUC % | paper: Clavicle Dice % |",
            "|---" * (len(ours) + 3) + "|"]
    for arm in arms:
        paper = PAPER_T2.get(arm, ("–", "–"))
        rows.append(f"| {LABELS[arm]} | " + "".join(f"{fmt(values(cells, f'{key}|{arm}', m))} | " for _, key, m in ours)
                    + f"{paper[0]} | {paper[1]} |")
    return rows


def table1(cells: dict, arms: Sequence[str]) -> list[str]:
    rows = ["| Method | protocol | PneumoniaMNIST AUC % 1 % | 10 % | 20 % | 50 % |", "|---|---|---|---|---|---|"]
    for protocol, name in (("fine-tune", "fine-tune"), ("linear", "linear probe")):
        for arm in arms:
            auc = [values(cells, f"pneumonia|{protocol}|{f}|{arm}", "auc") for f in FRACTIONS]
            if any(a is not None for a in auc):
                rows.append(f"| {LABELS[arm]} | {name} | " + " | ".join(fmt(a) for a in auc) + " |")
    rows += [f"| {name} | fine-tune | " + " | ".join(v) + " |" for name, v in PAPER_T1.items()]
    return rows


def table_mednist(cells: dict, arms: Sequence[str]) -> list[str]:
    settings = ("1-shot", "5-shot", "1%", "10%")
    if not any(k.startswith("mednist|") for k in cells):
        return []
    rows = ["| Method | MedNIST acc % 1-shot | 5-shot | 1 % | 10 % |", "|---|---|---|---|---|"]
    for arm in arms:
        rows.append(f"| {LABELS[arm]} | " + " | ".join(
            fmt(values(cells, f"mednist|few-shot linear|{s}|{arm}", "accuracy")) for s in settings) + " |")
    return rows


def claims(cells: dict, seg_key: str) -> list[str]:
    """The paper's directional claims, each tested run by run on our cells."""
    checks = []
    for a, b, why in (("coda", "inter", "both > L_inter only (Table 2)"),
                      ("coda", "intra", "both > L_intra only (Table 2)"),
                      ("intra", "inter", "L_intra only > L_inter only (Table 2)")):
        for key, metric, name in (("pneumonia|linear|100%", "auc", "Pneumonia AUC, linear"),
                                  ("pneumonia|fine-tune|50%", "auc", "Pneumonia AUC, fine-tune 50 %"),
                                  (seg_key, "mean_dice", "CT Dice")):
            checks.append((why, name, f"{key}|{a}", f"{key}|{b}", metric))
    for f in FRACTIONS:
        checks.append(("Coda > DINO with little labelled data (Table 1 vs DINO)", f"Pneumonia AUC, fine-tune {f}",
                       f"pneumonia|fine-tune|{f}|coda", f"pneumonia|fine-tune|{f}|dino", "auc"))
    for other in ("random", "dino"):
        for metric, name in (("knn_accuracy", "CT organ kNN acc"), ("nmi", "CT organ NMI")):
            checks.append((f"organs cluster (Fig. t-SNE): Coda > {LABELS[other]}", name,
                           "ct-organs|clusters|crops|coda", f"ct-organs|clusters|crops|{other}", metric))
    rows = ["| Claim | Measure | Δ (ours, %-points, mean ± sd) | wins | paired t p | verdict |",
            "|---|---|---|---|---|---|"]
    for why, name, ka, kb, metric in checks:
        a, b = values(cells, ka, metric), values(cells, kb, metric)
        if a is None or b is None:
            continue
        e = paired(a, b)
        rows.append(f"| {why} | {name} | {100 * e['mean']:+.2f} ± {100 * e['sd']:.2f} | {e['wins']}/{e['n']} | "
                    f"{pvalue(e['p'])} | {verdict(e)} |")
    return rows


def reference(arm: str) -> str:
    """What an optional arm is compared with: a student backbone with its own run's teacher, else Coda."""
    return arm.removesuffix("-student") if arm.endswith("-student") else "coda"


def variants(cells: dict, optional: Sequence[str], seg_key: str) -> list[str]:
    """Optional arms against their reference arm, paired by run (empty when none was run)."""
    if not optional:
        return []
    rows = ["**Variants tried** (Δ = variant − reference, paired by run; the reference is Coda, or for a student "
            "backbone the EMA teacher of the same runs).", "",
            "| Variant | reference | Measure | Δ (%-points, mean ± sd) | wins | paired t p |",
            "|---|---|---|---|---|---|"]
    for arm in optional:
        for key, metric, name in (("pneumonia|linear|100%", "auc", "Pneumonia AUC, linear"),
                                  ("pneumonia|linear|1%", "auc", "Pneumonia AUC, linear 1 %"),
                                  ("pneumonia|fine-tune|1%", "auc", "Pneumonia AUC, fine-tune 1 %"),
                                  ("pneumonia|fine-tune|50%", "auc", "Pneumonia AUC, fine-tune 50 %"),
                                  (seg_key, "mean_dice", "CT Dice"),
                                  ("ct-organs|clusters|crops", "knn_accuracy", "CT organ kNN acc"),
                                  ("ct-organs|clusters|crops", "nmi", "CT organ NMI")):
            a, b = values(cells, f"{key}|{arm}", metric), values(cells, f"{key}|{reference(arm)}", metric)
            if a is not None and b is not None:
                e = paired(a, b)
                rows.append(f"| {LABELS[arm]} | {LABELS[reference(arm)]} | {name} | "
                            f"{100 * e['mean']:+.2f} ± {100 * e['sd']:.2f} | {e['wins']}/{e['n']} | {pvalue(e['p'])} |")
    return rows + [""]


def plot_fewshot(cells: dict, arms: Sequence[str], path: Path) -> bool:
    """Mean ± sd against the labelled fraction, one panel per few-shot protocol that was run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(prefix, settings, metric, title) for prefix, settings, metric, title in (
        ("pneumonia|fine-tune", FRACTIONS, "auc", "PneumoniaMNIST fine-tune AUC"),
        ("pneumonia|linear", FRACTIONS, "auc", "PneumoniaMNIST linear-probe AUC"),
        ("mednist|few-shot linear", ("1-shot", "5-shot", "1%", "10%"), "accuracy", "MedNIST linear-probe accuracy"))
        if any(k.startswith(prefix + "|") for k in cells)]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    for ax, (prefix, settings, metric, title) in zip(axes[0], panels):
        for arm in arms:
            ys = [values(cells, f"{prefix}|{s}|{arm}", metric) for s in settings]
            if any(y is None for y in ys):
                continue
            ax.errorbar(range(len(settings)), [y.mean() for y in ys], yerr=[y.std(ddof=1) for y in ys],
                        label=LABELS[arm], marker="o", capsize=3)
        ax.set_xticks(range(len(settings)), settings)
        ax.set_title(title)
        ax.set_xlabel("labelled training data")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_tsne(maps: dict[str, list], labels: Sequence[int], names: Sequence[str], path: Path) -> None:
    """One panel per arm: its 2-D map of the CT organ crops, coloured by organ."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols, rows, labels = 3, math.ceil(len(maps) / 3), np.asarray(labels)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.6 * rows), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, (arm, xy) in zip(axes.flat, maps.items()):
        xy = np.asarray(xy)
        for c in np.unique(labels):
            m = labels == c
            ax.scatter(xy[m, 0], xy[m, 1], s=4, color=cmap(int(c) % 10), label=names[int(c)])
        ax.set_title(f"{LABELS[arm]} (seed 0)")
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(maps):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6, markerscale=3, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(data: dict[str, Any], *, out: Path, docs: Path | None, command: str) -> str:
    """Write ``<out>/results.md`` and the figures; replace the generated block of ``docs`` if given.

    Args:
        data: the content of ``results.json``: ``cells``, ``scale``, ``seconds``, ``mednist_split`` and the
            t-SNE maps (``tsne``: arm -> (N, 2) coordinates, ``tsne_labels``, ``tsne_names``).
        out: the benchmark's output folder (``results.md``; the figures too when ``docs`` is None); its name
            names the block in ``docs`` and the figures, so runs in different folders keep apart.
        docs: the results page whose generated block is replaced (figures go to its ``figures/``), or None.
        command: the command that regenerates the block.
    """
    cells, s, sec, split = data["cells"], data["scale"], data.get("seconds", {}), data.get("mednist_split", {})
    arms = [a for a in LABELS if any(k.endswith(f"|{a}") for k in cells)]
    seg_key = next((k.rsplit("|", 1)[0] for k in cells if k.startswith("ct-organs|U-Net")), "ct-organs|U-Net")
    fig_dir = (docs.parent / "figures") if docs else out
    fig_dir.mkdir(parents=True, exist_ok=True)
    fewshot = plot_fewshot(cells, arms, fig_dir / f"{out.name}_fewshot.png")
    tsne = {a: data["tsne"][a] for a in LABELS if a in data.get("tsne", {})}
    if tsne:
        plot_tsne(tsne, data["tsne_labels"], data["tsne_names"], fig_dir / f"{out.name}_tsne.png")
    default = [a for a in arms if a not in OPTIONAL]
    pre = sum(v for k, v in sec.items() if k.startswith("pretrain") and k.split()[1].rsplit("-s", 1)[0] in default)
    ev = sum(v for k, v in sec.items() if k.startswith("evaluate") and k.split()[1] in default)
    extra = sum(v for k, v in sec.items() if k.split()[1].rsplit("-s", 1)[0] in OPTIONAL)
    optional = [a for a in arms if a in OPTIONAL]
    mednist = table_mednist(cells, arms)
    begin, end = (m.format(out.name.replace("_", "-")) for m in MARKERS)
    md = [begin, f"#### Setting ({s['name']} scale{', QUICK smoke run' if s['quick'] else ''})", "",
          f"- Pretraining: `{s['backbone']}`, {s['steps']} steps of batch {s['batch_size']} "
          f"({s['steps'] * s['batch_size']:,} images per run) on the MedNIST train split "
          f"({split.get('train', 0):,} images; exact duplicates removed; the split is saved to `mednist_split.csv`, "
          f"sha256 `{split.get('sha256', '?')[:16]}`), globals {s['global_size']} px, "
          f"{s['num_local_views']} local crops of {s['local_size']} px "
          f"(SupCon: the two globals only), lr {s['lr']}, teacher EMA {s['momentum']}→1, DINO heads "
          f"{s['hidden_dim']}→{s['out_dim']}; {s['pretrain_seeds']} pretraining seed(s) per arm.",
          f"- Evaluation: {s['runs']} runs per cell, run d = pretraining seed d mod {s['pretrain_seeds']} and "
          "downstream seed d; mean ± sd over the runs, in %. Protocols run: "
          f"{', '.join(s['protocols'])}" + (" (the others did not fit this scale's budget)."
                                            if len(s["protocols"]) < 5 else "."),
          *([f"- Fine-tuning: ~{s['finetune_steps']} AdamW steps of batch {s['finetune_batch']} per fine-tune "
             f"whatever the fraction (at most {s['finetune_max_epochs']} epochs, early stopping on val AUC over "
             f"{s['finetune_val']} val images); U-Net: {s['seg_epochs']} epochs."]
            if "pneumonia-finetune" in s["protocols"] else []),
          f"- Time (device: {data.get('device', 'not recorded')}): pretraining {pre / 60:.1f} min, evaluation "
          f"{ev / 60:.1f} min, total {(pre + ev) / 60:.1f} min"
          + (f" (+ {extra / 60:.1f} min for the optional arms)." if extra else "."),
          "",
          "**Table 2 layout (objective ablation).** The paper's columns are tuberculosis AUC and clavicle Dice "
          "after full fine-tuning of ConvNeXt-B pretrained on 23 organs; ours are the closest tasks we have.", "",
          *table2(cells, arms, seg_key), "",
          "**Table 1 layout (few-shot).** Ours: PneumoniaMNIST AUC with 1/10/20/50 % of its training labels, by "
          "fine-tuning and by a linear probe on frozen features; paper: tuberculosis AUC after fine-tuning.", "",
          *table1(cells, arms), "",
          *(["**MedNIST few-shot** (linear probe on frozen features; the MedNIST *test* split is never pretrained "
             "on, but Coda, L_inter and SupCon saw every *train* image's organ label during pretraining, so for them "
             "this is not a few-shot setting).", "", *mednist, ""] if mednist else []),
          "**The paper's claims, tested run by run** (Δ = first − second, paired by run).", "",
          *claims(cells, seg_key), "",
          *variants(cells, optional, seg_key)]

    def page_text(rel: str) -> str:  # figure links are relative to the page that holds them
        figures = ([f"![few-shot]({rel}{out.name}_fewshot.png)", ""] if fewshot else []) + \
            ([f"![t-SNE of CT organ crops]({rel}{out.name}_tsne.png)", ""] if tsne else [])
        return "\n".join([*md, *figures, f"Regenerate: `{command}`", end]) + "\n"

    (out / "results.md").write_text(page_text(_relative(fig_dir, out)))
    text = page_text(_relative(fig_dir, docs.parent) if docs else "")
    if docs is not None:
        page = docs.read_text() if docs.is_file() else "# Results\n"
        if begin in page and end in page:
            page = page[:page.index(begin)] + text.rstrip("\n") + page[page.index(end) + len(end):]
        else:
            page = page.rstrip() + f"\n\n## Coda ablation ({s['name']} scale)\n\n" + text
        docs.write_text(page)
    return text


def _relative(folder: Path, page_dir: Path) -> str:
    """``folder`` as a link prefix from a page in ``page_dir`` ("" when they are the same folder)."""
    rel = os.path.relpath(folder.resolve(), page_dir.resolve())
    return "" if rel == "." else rel + "/"
