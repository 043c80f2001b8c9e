"""The Coda-ablation report: runs as the unit, Holm over one table, n beside every number, the intra gate."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import claims as st  # noqa: E402
import coda_ablation_report as report  # noqa: E402


def test_legacy_cells_split_back_into_pretraining_runs() -> None:
    data = {"scale": {"pretrain_seeds": 3, "out_dim": 4096},
            "cells": {"pneumonia|linear|100%|coda": {"auc": [float(d) for d in range(10)]},
                      "ct-organs|U-Net segmentation|27 slices|random": {"mean_dice": [0.1] * 10}}}
    runs = {(r.arm, r.seed): r for r in report.legacy_runs(data)}
    # run d used pretraining seed d mod 3
    assert [runs["coda", s].measures["pneumonia|linear|100%"]["auc"] for s in range(3)] == \
        [[0.0, 3.0, 6.0, 9.0], [1.0, 4.0, 7.0], [2.0, 5.0, 8.0]]
    assert report.SEG in runs["random", 0].measures                      # the slice count is not part of the key
    assert runs["coda", 0].out_dim == 4096 and runs["random", 0].out_dim is None
    assert runs["coda", 0].teacher_entropy is None                        # never recorded by the legacy runs
    means = report.arm_means(list(runs.values()), "pneumonia|linear|100%", "auc")
    assert means == {"coda": pytest.approx({0: 4.5, 1: 4.0, 2: 5.0})}


def test_evaluate_rows_map_to_the_tables_measures() -> None:
    assert report.canonical("pneumoniamnist", "linear", "grid") == "pneumonia|linear|100%"
    assert report.canonical("pneumoniamnist", "fewshot-linear", "1%") == "pneumonia|linear|1%"
    assert report.canonical("pneumoniamnist", "fewshot-finetune", "50%") == "pneumonia|fine-tune|50%"
    assert report.canonical("totalseg_ct_organs", "clusters", "all (1200)") == report.CLUSTERS
    assert report.canonical("mednist", "fewshot-linear", "5-shot") == "mednist|few-shot linear|5-shot"
    assert report.canonical("mednist", "knn", "k=10") == "mednist|knn|k=10"


def _runs(entropy: dict[str, float | None], seeds: int = 3) -> list[report.Run]:
    rng = np.random.default_rng(0)
    base = {"coda": 0.90, "inter": 0.88, "intra": 0.89, "dino": 0.87, "supcon": 0.92, "random": 0.86}
    runs = []
    for arm, b in base.items():
        for s in range(seeds):
            values = list(b + 0.01 * s + 0.005 * rng.standard_normal(4))  # 4 probe seeds per model
            runs.append(report.Run(arm, s, {"pneumonia|linear|100%": {"auc": values},
                                            report.CLUSTERS: {"knn_accuracy": values, "nmi": values}},
                                   entropy.get(arm), 4096 if arm in report.INTRA else None))
    return runs


def test_claims_table_tests_per_model_means_and_holm_corrects_the_whole_table() -> None:
    runs = _runs({"coda": 6.0, "intra": 6.5, "dino": 7.0})
    specs = report.claim_specs(runs)
    rows = report.claims_table(runs, specs)[2:]
    assert len(rows) == len(specs) > 5
    # the naive reference: per-model means by hand, a paired t per claim, Holm over all rows
    ps = []
    for _, _, key, metric, a, b in specs:
        ma = {r.seed: np.mean(r.measures[key][metric]) for r in runs if r.arm == a}
        mb = {r.seed: np.mean(r.measures[key][metric]) for r in runs if r.arm == b}
        ps.append(st.paired_t([ma[s] - mb[s] for s in range(3)])[2])
    holm = st.holm(ps)
    first = rows[0].split(" | ")
    assert first[0] == "| both > L_inter only (Table 2)" and first[2] == "n = 3 pretraining runs"
    assert first[6] == st.pvalue(ps[0]) and first[7] == st.pvalue(holm[0])
    for row, p_adj in zip(rows, holm):
        expected = "supported (Holm p < 0.05)" if p_adj < 0.05 else "not shown (Holm p ≥ 0.05)"
        assert row.endswith(f"| {expected} |"), row


def test_no_verdict_for_an_arm_whose_intra_branch_is_not_learning_or_not_recorded() -> None:
    runs = _runs({"coda": 8.1, "intra": None, "dino": 6.0})
    rows = report.claims_table(runs, report.claim_specs(runs))[2:]
    coda_rows = [r for r in rows if "Coda" in r.split(" | ")[0] or "both" in r.split(" | ")[0]]
    assert coda_rows and all("8.10 of ln K = 8.32: not learning — no verdict" in r for r in coda_rows)
    intra_vs_inter = [r for r in rows if r.startswith("| L_intra only > L_inter only")]
    assert all(r.endswith("| teacher entropy not recorded — no verdict on the intra branch |") for r in intra_vs_inter)
    supcon = [r for r in rows if r.startswith("| (ours) SupCon > random init")]
    assert supcon and not any("no verdict" in r for r in supcon)    # no intra branch: nothing to gate
    gate = report.gate_table(runs, list(report.LABELS))
    assert any(line.startswith("| both (Coda) | n = 3 | teacher entropy 8.10") for line in gate)


def test_one_pretraining_run_gets_numbers_but_no_test_and_no_verdict() -> None:
    runs = _runs({"coda": 6.0, "intra": 6.0, "dino": 6.0}, seeds=1)
    rows = report.claims_table(runs, report.claim_specs(runs))[2:]
    assert rows and all("| n = 1 pretraining run | " in r and r.endswith("no test with n = 1 pretraining run — no verdict |")
                        for r in rows)
    table = report.measure_table(runs, ["coda"], [("AUC", "pneumonia|linear|100%", "auc")])
    assert table[2].startswith("| both (Coda) | n = 1 | ") and "±" not in table[2]   # no sd from one run


def _write_run(folder: Path, arm: str, seed: int, auc: list[float], entropy: float | None) -> None:
    scale = {"name": "cpu-1k", "backbone": "convnext_atto", "steps": 1000, "batch_size": 32, "global_size": 64,
             "local_size": 32, "num_local_views": 2, "lr": 5e-4, "momentum": 0.99, "hidden_dim": 512, "out_dim": 4096}
    record = {"arm": arm, "seed": seed, "scale": scale,
              "pretrain": None if arm == "random" else {"teacher_entropy": entropy, "out_dim": 4096},
              "evaluation": {"pneumoniamnist": {"rows": [{"protocol": "linear", "setting": "grid", "values": {"auc": auc}},
                                                         {"protocol": "fewshot-linear", "setting": "1%",
                                                          "values": {"auc": auc}}]}},
              "commands": [f"organfm pretrain --method {arm} trainer.seed={seed}",
                           "organfm evaluate --models x=y --task configs/tasks/pneumoniamnist.yaml seed=0"],
              "bench_command": f"python benchmarks/coda_ablation.py --scale cpu-1k --arms {arm} --seeds {seed}"}
    (folder / "runs").mkdir(parents=True, exist_ok=True)
    (folder / "runs" / f"{arm}-seed{seed}.json").write_text(json.dumps(record))


def test_page_aggregates_every_committed_run_and_rewrites_only_its_block(tmp_path: Path) -> None:
    folder, docs = tmp_path / "coda_ablation-cpu-1k", tmp_path / "docs" / "results.md"
    docs.parent.mkdir()
    docs.write_text("# Results\n\n## RaSD transfer\n\nkept\n")
    for s in range(2):
        _write_run(folder, "coda", s, [0.90 + 0.01 * s], 7.0)
        _write_run(folder, "random", s, [0.88], None)
        _write_run(folder, "dino", s + 5, [0.85 + 0.02 * s], 6.0)   # other seeds than Coda's: unpaired
    report.write_block(folder, docs)
    page = docs.read_text() + "\nHand-written discussion.\n"
    docs.write_text(page)
    _write_run(folder, "coda", 2, [0.92], 7.0)           # a later sitting adds a run: the row grows to n = 3
    report.write_block(folder, docs)
    again = docs.read_text()
    assert again.count("<!-- coda-ablation-cpu-1k:begin -->") == 1 and "Hand-written discussion." in again
    assert "## RaSD transfer\n\nkept" in again
    row = next(line for line in again.splitlines() if line.startswith("| both (Coda) | n = 3 | 9"))
    assert row.startswith("| both (Coda) | n = 3 | 91.00 ± 1.00 |")  # model means 0.90, 0.91, 0.92, in %
    claim = next(line for line in again.splitlines() if line.startswith("| Coda > DINO"))
    assert "| n = 3 vs 2 pretraining runs | +5.00 | – | Welch t |" in claim   # seeds differ: Welch, both n
    assert f"| {st.pvalue(st.welch_t([0.90, 0.91, 0.92], [0.85, 0.87])[2])} |" in claim
    assert "organfm pretrain --method coda" in again and "organfm evaluate" in again
    for line in again.splitlines():                        # n beside every mean ± sd and every p
        if line.startswith("| ") and not line.startswith(("| Claim |", "| Objective |")) and ("±" in line or "t |" in line):
            assert re.search(r"n = \d", line), line


def test_existing_legacy_results_regenerate_with_n_and_holm(tmp_path: Path) -> None:
    folder = report.REPO / "benchmarks" / "results" / "coda_ablation-cpu"
    if not (folder / "results.json").is_file():
        pytest.skip(f"{folder}/results.json not committed")
    _, text = report.block(folder, tmp_path / "results.md")
    # the one Table 2 claim once "reproduced" (fine-tune 50 %, p = 0.010 over 10 probe runs): p ≈ 0.23 over 3 models
    row = next(line for line in text.splitlines()
               if line.startswith("| both > L_intra only (Table 2) | Pneumonia AUC, fine-tune 50 %"))
    assert "| n = 3 pretraining runs |" in row and "| 0.234 |" in row and "supported" not in row
    assert "not recorded — no verdict on the intra branch" in row
