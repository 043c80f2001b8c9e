"""The Coda-ablation report: the pre-registered design, the health gate that excludes runs, power beside every
contrast, exploratory comparisons apart, and earlier scales in one paragraph."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import claims as st  # noqa: E402
import coda_ablation as bench  # noqa: E402
import coda_ablation_report as report  # noqa: E402
import preregistration as prereg  # noqa: E402


def test_legacy_cells_split_back_into_pretraining_runs() -> None:
    data = {"scale": {"pretrain_seeds": 3, "out_dim": 4096},
            "cells": {"pneumonia|linear|100%|coda": {"auc": [float(d) for d in range(10)]},
                      "ct-organs|U-Net segmentation|27 slices|random": {"mean_dice": [0.1] * 10}}}
    runs = {(r.arm, r.seed): r for r in report.legacy_runs(data)}
    # run d used pretraining seed d mod 3
    assert [runs["coda", s].measures["pneumonia|linear|100%"]["auc"] for s in range(3)] == \
        [[0.0, 3.0, 6.0, 9.0], [1.0, 4.0, 7.0], [2.0, 5.0, 8.0]]
    assert report.SEG in runs["random", 0].measures                      # the slice count is not part of the key
    assert runs["coda", 0].health is None                                 # never recorded by the legacy runs
    means = report.arm_means(list(runs.values()), "pneumonia|linear|100%", "auc")
    assert means == {"coda": pytest.approx({0: 4.5, 1: 4.0, 2: 5.0})}


def test_evaluate_rows_map_to_the_measures_the_preregistration_names() -> None:
    assert report.canonical("pneumoniamnist", "linear", "grid") == prereg.ENDPOINTS["pneumonia_auc_100"][0]
    assert report.canonical("pneumoniamnist", "fewshot-linear", "1%") == prereg.ENDPOINTS["pneumonia_auc_1"][0]
    assert report.canonical("totalseg_ct_organs", "clusters", "all (411)") == prereg.ENDPOINTS["organ_knn"][0]
    assert report.canonical("pneumoniamnist", "fewshot-finetune", "50%") == "pneumonia|fine-tune|50%"
    assert report.canonical("mednist", "fewshot-linear", "5-shot") == "mednist|few-shot linear|5-shot"


BASE = {"coda": 0.90, "inter": 0.88, "intra": 0.89, "dino": 0.87, "supcon": 0.92, "random": 0.86}


def _run(arm: str, seed: int, value: float, health: str | None = "learning", noise: float = 0.0) -> report.Run:
    auc_1 = value - 0.10 + (0.02 if arm == "coda" else 0.0) + noise
    return report.Run(arm, seed, {"pneumonia|linear|100%": {"auc": [value]},
                                  "pneumonia|linear|1%": {"auc": [auc_1, auc_1 + 0.002]},
                                  report.CLUSTERS: {"knn_accuracy": [value], "nmi": [value - 0.4]}},
                      health=None if arm == "random" else health)


def _runs(health: dict[tuple[str, int], str] | None = None) -> list[report.Run]:
    rng = np.random.default_rng(0)
    runs = []
    for arm, b in BASE.items():
        for s in (range(6) if arm in ("coda", "inter", "intra") else range(3)):
            runs.append(_run(arm, s, b + 0.005 * s + 0.004 * rng.standard_normal(),
                             (health or {}).get((arm, s), "learning"), 0.01 * rng.standard_normal()))
    return runs


def test_the_interaction_is_tested_on_per_seed_gaps_and_holm_spans_the_registered_family() -> None:
    runs = _runs()
    tested = report.evaluate_contrasts(runs, prereg.CONTRASTS, alpha=0.05)
    by = {t.contrast["id"]: t for t in tested}
    m = {a: {r.seed: (np.mean(r.measures["pneumonia|linear|1%"]["auc"]), r.measures["pneumonia|linear|100%"]["auc"][0])
             for r in runs if r.arm == a} for a in ("coda", "dino")}
    by_hand = [(m["coda"][s][0] - m["dino"][s][0]) - (m["coda"][s][1] - m["dino"][s][1]) for s in range(3)]
    inter = by["fewshot-interaction"].comparison
    assert inter.n_a == 3 and inter.delta == pytest.approx(np.mean(by_hand)) and inter.p == pytest.approx(
        st.paired_t(by_hand)[2])
    # Holm over all 9 registered contrasts; the MDE at each contrast's own n and alpha / 9
    assert len(tested) == len(prereg.CONTRASTS) == 9
    assert [t.p_holm for t in tested] == pytest.approx(st.holm([t.comparison.p for t in tested]))
    assert by["coda-inter:organ_knn"].mde_sd == pytest.approx(st.mde(1.0, 6, 0.05 / 9))
    assert by["fewshot-interaction"].mde_sd == pytest.approx(st.mde(1.0, 3, 0.05 / 9))


def test_a_run_not_learning_is_shown_counted_and_excluded_and_too_few_learning_runs_get_no_verdict() -> None:
    runs = _runs({("coda", 2): "collapsed", ("dino", 1): "not learning yet"})
    tested = {t.contrast["id"]: t for t in report.evaluate_contrasts(runs, prereg.CONTRASTS, alpha=0.05)}
    assert tested["coda-inter:pneumonia_auc_100"].comparison.n_a == 5             # seed 2 of Coda left out
    assert tested["fewshot-interaction"].verdict == "no verdict (fewer than 3 learning runs in an arm)"  # DINO: 2
    health = "\n".join(report.health_table(runs, list(report.LABELS)))
    assert "| both (Coda) | n = 6 | 0: learning, 1: learning, 2: collapsed," in health
    assert "| 5 learning, 1 excluded (seed 2: collapsed) |" in health
    assert "| DINO | n = 3 |" in health and "2 learning, 1 excluded (seed 1: not learning yet) — fewer than 3" in health
    endpoints = "\n".join(report.endpoint_table(runs, list(report.LABELS)))
    kept = [r.measures["pneumonia|linear|100%"]["auc"][0] for r in runs if r.arm == "coda" and r.seed != 2]
    assert f"| both (Coda) | n = 5 pretraining runs | {100 * np.mean(kept):.2f} ± {100 * np.std(kept, ddof=1):.2f} |" \
        in endpoints


def test_a_non_significant_contrast_with_an_mde_above_the_observed_effect_is_inconclusive() -> None:
    runs = [r for r in _runs() if r.arm in ("coda", "inter", "intra")]
    for r in runs:  # Coda equal to L_inter up to noise: no effect to find at n = 6
        if r.arm == "inter":
            twin = next(x for x in runs if x.arm == "coda" and x.seed == r.seed)
            noise = 0.003 * (-1) ** r.seed
            r.measures = {k: {mk: [v + noise for v in mv] for mk, mv in m.items()} for k, m in twin.measures.items()}
    tested = report.evaluate_contrasts(runs, prereg.CONTRASTS, alpha=0.05)
    t = next(t for t in tested if t.contrast["id"] == "coda-inter:pneumonia_auc_100")
    assert t.p_holm >= 0.05 and "inconclusive" in t.verdict and t.verdict.startswith("not supported")
    table = "\n".join(report.contrast_table(tested, 9, 0.05))
    assert "| Holm p (m = 9) |" in table and "MDE at n (sd units; α/m = 0.0056, power 0.8)" in table
    assert "no effect" not in table
    assert "| n = 6 pretraining runs |" in table


def _write_run(folder: Path, arm: str, seed: int, run: report.Run, sub: str = "runs") -> None:
    rows = {"pneumoniamnist": [{"protocol": "linear", "setting": "grid",
                                "values": {"auc": run.measures["pneumonia|linear|100%"]["auc"]}},
                               {"protocol": "fewshot-linear", "setting": "1%",
                                "values": {"auc": run.measures["pneumonia|linear|1%"]["auc"]}}],
            "totalseg_ct_organs": [{"protocol": "clusters", "setting": "all (411)",
                                    "values": run.measures[report.CLUSTERS]}]}
    record = {"arm": arm, "seed": seed, "scale": {"name": "small"},
              "pretrain": None if arm == "random" else {"health": run.health, "out_dim": 256},
              "evaluation": {t: {"rows": r} for t, r in rows.items()},
              "commands": [f"organfm pretrain --method {arm} --config configs/small/{arm}.yaml trainer.seed={seed}"],
              "bench_command": f"python benchmarks/coda_ablation.py --scale small --arms {arm} --seeds {seed}"}
    (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / sub / f"{arm}-seed{seed}.json").write_text(json.dumps(record))


@pytest.fixture
def prereg_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "preregistered"
    monkeypatch.setattr(bench, "PREREGISTERED", folder)
    return folder


def test_preregistration_comes_from_the_pilot_sd_and_is_never_overwritten(tmp_path: Path, prereg_dir: Path) -> None:
    folder = tmp_path / "coda_ablation-small"
    pilot = {(r.arm, r.seed): r for r in _runs() if r.arm in bench.PILOT_ARMS and r.seed < 2}
    for (arm, seed), run in pilot.items():
        _write_run(folder, arm, seed + 100, run, sub="pilot")
    path = report.preregister(folder)
    assert path == prereg_dir / "coda-small.yaml" and not (folder / "runs").exists()
    design = prereg.load(path)
    assert [c["id"] for c in design["contrasts"]] == [c["id"] for c in prereg.CONTRASTS]
    assert design["alpha"] == 0.05 and design["family"] == {"correction": "holm", "members": "all contrasts above, one "
                                                            "family", "m": 9}
    assert design["planned_n"] == {"coda": 6, "inter": 6, "intra": 6, "dino": 6, "supcon": 3, "random": 3}
    assert design["arms"]["inter"]["overrides"] == ["method.use_intra=false"]
    assert design["arms"]["supcon"]["recipe"] == "configs/small/supcon.yaml"
    # the pilot's sd of Coda - L_inter on the 100 % AUC, by hand; the MDE at the planned n from it
    d = [pilot["coda", s].measures["pneumonia|linear|100%"]["auc"][0]
         - pilot["inter", s].measures["pneumonia|linear|100%"]["auc"][0] for s in (0, 1)]
    sd = design["pilot"]["sd"]["coda-inter:pneumonia_auc_100"]
    assert sd == pytest.approx(np.std(d, ddof=1), abs=1e-6) and design["pilot"]["seeds"] == [100, 101]
    mde = design["mde"]["coda-inter:pneumonia_auc_100"]
    assert mde["n"] == 6 and mde["sd_units"] == pytest.approx(st.mde(1.0, 6, 0.05 / 9), abs=1e-3)
    assert mde["absolute"] == pytest.approx(mde["sd_units"] * sd, rel=1e-3)
    assert design["mde"]["fewshot-interaction"]["n"] == 6
    before = path.read_text()
    with pytest.raises(FileExistsError, match="never overwritten"):
        report.preregister(folder)
    assert report.main(["--preregister", str(folder)]) == 1 and path.read_text() == before


def test_preregistration_needs_a_usable_pilot(tmp_path: Path, prereg_dir: Path) -> None:
    folder = tmp_path / "coda_ablation-small"
    with pytest.raises(ValueError, match="gives no sd"):
        report.preregister(folder)
    assert not (prereg_dir / "coda-small.yaml").exists()
    path = report.preregister(folder, without_pilot=True)            # sd units only
    assert prereg.load(path)["mde"]["coda-intra:organ_nmi"]["absolute"] is None
    with pytest.raises(ValueError, match="not a pre-registered scale"):
        report.preregister(tmp_path / "coda_ablation-cpu-1k")


def test_small_block_says_no_runs_yet_cleanly(tmp_path: Path, prereg_dir: Path) -> None:
    folder, docs = tmp_path / "coda_ablation-small", tmp_path / "docs" / "results.md"
    docs.parent.mkdir()
    docs.write_text("# Results\n\nkept\n")
    text = report.write_block(folder, docs)
    assert "**Not pre-registered yet**" in text and "**No runs yet**" in text and "|" not in text
    report.preregister(folder, without_pilot=True)
    text = report.write_block(folder, docs)
    assert "Pre-registered in `benchmarks/preregistered/coda-small.yaml`" in text and "**No runs yet**" in text
    assert docs.read_text().count("<!-- coda-ablation-small:begin -->") == 1 and "kept" in docs.read_text()


def test_small_block_tables_power_exploratory_and_figure(tmp_path: Path, prereg_dir: Path) -> None:
    folder, docs = tmp_path / "coda_ablation-small", tmp_path / "docs" / "results.md"
    docs.parent.mkdir()
    report.preregister(folder, without_pilot=True)
    for r in _runs({("intra", 4): "collapsed"}):
        _write_run(folder, r.arm, r.seed, r)
    text = report.write_block(folder, docs)
    lines = text.splitlines()
    contrasts = [x for x in lines if x.startswith("| Coda")]
    assert len(contrasts) == 9 and all(x.endswith(" |") for x in contrasts)
    assert all(("supported" in x or "no verdict" in x) for x in contrasts)
    assert any("| n = 6 pretraining runs |" in x for x in contrasts)
    assert any("| n = 5 pretraining runs |" in x for x in contrasts if "L_intra" in x)   # seed 4 excluded
    explore = [x for x in lines if x.endswith("| exploratory |")]
    assert explore and not any("supported" in x for x in explore)
    assert "**Table 2 claim**" in text and (docs.parent / "figures" / "coda_ablation-small_runs.png").is_file()
    assert "(figures/coda_ablation-small_runs.png)" in docs.read_text()
    # every bold heading of the block is followed by something (the empty-claims-heading bug)
    for i, line in enumerate(lines):
        if line.startswith("**") and line.endswith(":**") or line.endswith(").") and line.startswith("**"):
            assert lines[i + 1] == "" and lines[i + 2].strip(), line


def test_earlier_scales_shrink_to_one_paragraph_without_a_claims_table(tmp_path: Path) -> None:
    folder = tmp_path / "coda_ablation-cpu-1k"
    run = _run("coda", 0, 0.92, health=None)
    _write_run(folder, "coda", 0, run)
    (folder / "runs" / "coda-seed0.json").write_text(json.dumps(
        dict(json.loads((folder / "runs" / "coda-seed0.json").read_text()),
             scale=dict(bench.__dict__["SCALES"]["cpu-1k"].__dict__))))
    _, text = report.block(folder, None)
    body = text.splitlines()[1:-1]
    assert len(body) == 1 and body[0].startswith("**cpu-1k** (earlier scale, no verdict)")
    assert "its runs predate the health verdict" in body[0] and "both (Coda) n = 1" in body[0]
    assert "claims" not in text.lower() and "|" not in text


def test_committed_legacy_results_render_as_paragraphs(tmp_path: Path) -> None:
    folder = report.REPO / "benchmarks" / "results" / "coda_ablation-cpu"
    if not (folder / "results.json").is_file():
        pytest.skip(f"{folder}/results.json not committed")
    _, text = report.block(folder, tmp_path / "results.md")
    assert "**cpu** (earlier scale, no verdict)" in text and "L_intra only n = 3" in text
    assert not math.isnan(len(text)) and text.count("\n") == 3


def test_the_instrument_check_says_when_an_endpoint_does_not_move_from_random_init() -> None:
    # every arm 0.2 above random init on every endpoint but the PneumoniaMNIST ones, where all sit at random's level
    runs = []
    for arm in ("coda", "inter", "random"):
        for s in range(4):
            lift = 0.0 if arm == "random" else 0.2 + 0.01 * s
            runs.append(report.Run(arm, s, {"pneumonia|linear|100%": {"auc": [0.8 + 0.01 * ((s * 7) % 3)]},
                                            "pneumonia|linear|1%": {"auc": [0.7 + 0.01 * ((s * 5 + len(arm)) % 3)]},
                                            report.CLUSTERS: {"knn_accuracy": [0.5 + lift], "nmi": [0.3 + lift]}},
                                   health=None if arm == "random" else "learning"))
    lines = {line.split(":", 1)[0].lstrip("- "): line for line in report.instrument_lines(runs) if line.startswith("- ")}
    assert "moves: Coda is above random init" in lines["CT organ crops, kNN accuracy (zero-shot)"]
    assert "moves" in lines["CT organ crops, k-means NMI (zero-shot)"]
    assert "does not move at this scale" in lines["PneumoniaMNIST linear AUC, 100 % labels"]
    assert "both (Coda) +21.50" in lines["CT organ crops, kNN accuracy (zero-shot)"]  # 100 x mean lift
    assert report.instrument_lines([r for r in runs if r.arm != "random"]) == []  # no floor, no check
