"""benchmarks/panfm_sgm.py: the claims table (paired by pretraining seed, Holm) and the docs markers."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import panfm_sgm  # noqa: E402


def _run(entropy: float, dom: float) -> dict:
    return {"entropy": entropy, "training_entropy": entropy, "auroc_mean": 0.8,
            "curves": {"dominant": [0.8, dom], "random": [0.8, 0.7, 0.6], "mnar": [0.8, 0.7]},
            "loo_drop": {"heart": 0.1, "brain": 0.0}}


def test_table_reports_n_and_tests_sgm_against_random_paired_by_seed():
    results = {"sgm": {s: _run(1.2 + 0.01 * s, 0.75) for s in range(3)},
               "random": {s: _run(1.0 + 0.012 * s, 0.70 + 0.001 * s) for s in range(3)},
               "none": {s: _run(0.9, 0.6) for s in range(3)}}
    md = panfm_sgm.table("synthetic", results)
    assert "| SGM | n = 3 | 1.210 ± 0.010" in md
    entropy_row = next(line for line in md.splitlines() if line.startswith("| SGM raises"))
    assert "+0.198 (n = 3 pretraining runs)" in entropy_row and "3/3" in entropy_row and "paired t" in entropy_row
    assert "supported" in entropy_row  # a consistent +0.2 with tiny spread
    assert "no spread" in next(line for line in md.splitlines() if "all organs (no claim" in line)
