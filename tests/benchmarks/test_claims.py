"""Statistics of the benchmark claims: t-tests, Holm, the intra gate and verdicts, against hand-computed values."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import claims as st  # noqa: E402


def test_paired_t_on_three_known_differences() -> None:
    # d = 1, 2, 3: mean 2, sd 1, t = 2 / (1 / sqrt 3) = 2 sqrt 3, df 2; with 2 df the two-sided p is
    # 1 - |t| / sqrt(t^2 + 2) = 1 - sqrt(12 / 14)
    t, df, p = st.paired_t([1.0, 2.0, 3.0])
    assert t == pytest.approx(2 * math.sqrt(3)) and df == 2
    assert p == pytest.approx(1 - math.sqrt(12 / 14), rel=1e-9)
    assert st.paired_t([-1.0, -2.0, -3.0])[2] == pytest.approx(p)  # two-sided
    # no spread, or a single pair: nothing to test
    assert math.isnan(st.paired_t([0.5, 0.5, 0.5])[2]) and math.isnan(st.paired_t([0.5])[2])


def test_welch_t_by_hand() -> None:
    # a: mean 2, var 1 -> 1/3; b: mean 5, var 20/3 -> 5/3; t = -3 / sqrt 2;
    # df = 2^2 / ((1/3)^2 / 2 + (5/3)^2 / 3) = 4 / (1/18 + 25/27)
    t, df, p = st.welch_t([1, 2, 3], [2, 4, 6, 8])
    assert t == pytest.approx(-3 / math.sqrt(2))
    assert df == pytest.approx(4 / (1 / 18 + 25 / 27))
    from scipy import stats
    assert p == pytest.approx(stats.ttest_ind([1, 2, 3], [2, 4, 6, 8], equal_var=False).pvalue)
    assert math.isnan(st.welch_t([1.0], [2.0, 3.0])[2])


def test_holm_known_vector_step_down_order_and_cap() -> None:
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> raised to 0.06: monotone)
    assert st.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert st.holm([0.5, 0.6]) == [1.0, 1.0]                       # capped at 1
    adj = st.holm([0.01, math.nan, 0.04])                          # nan: no test, not in the family (m = 2)
    assert adj[0] == pytest.approx(0.02) and math.isnan(adj[1]) and adj[2] == pytest.approx(0.04)
    assert st.holm([]) == []


def test_holm_matches_a_naive_reference_and_is_monotone() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = rng.uniform(0, 0.2, size=rng.integers(1, 9))
        m = len(p)
        ranked = np.sort(p)
        # the definition: adjusted p_(i) = max over j <= i of min(1, (m - j) p_(j)), j from 0
        naive = {ranked[i]: max(min(1.0, (m - j) * ranked[j]) for j in range(i + 1)) for i in range(m)}
        adj = st.holm(p)
        assert adj == pytest.approx([naive[x] for x in p])
        order = np.argsort(p)
        assert all(np.diff(np.asarray(adj)[order]) >= 0) and all(np.asarray(adj) >= p)


def test_model_means_average_probe_seeds_within_each_model() -> None:
    assert st.model_means({0: [0.8, 0.9], 1: [0.5, math.nan, 0.7], 2: [math.nan]}) == pytest.approx({0: 0.85, 1: 0.6})


def test_compare_pairs_by_seed_when_seeds_match_else_welch() -> None:
    a, b = {0: 0.9, 1: 0.8, 2: 0.7}, {0: 0.8, 1: 0.8, 2: 0.5}
    c = st.compare(a, b)  # differences 0.1, 0.0, 0.2
    assert c.test == "paired t" and c.wins == 2 and c.delta == pytest.approx(0.1) and c.sd == pytest.approx(0.1)
    assert c.p == pytest.approx(st.paired_t([0.1, 0.0, 0.2])[2]) and c.n == "n = 3 pretraining runs"
    w = st.compare(a, {1: 0.8, 2: 0.5, 3: 0.6})  # other seeds: unpaired
    assert w.test == "Welch t" and w.wins == -1
    assert w.p == pytest.approx(st.welch_t([0.9, 0.8, 0.7], [0.8, 0.5, 0.6])[2])
    one = st.compare({0: 0.9}, {0: 0.8})
    assert one.test == "none" and math.isnan(one.p) and one.n == "n = 1 pretraining run"
    assert st.compare(a, {0: 0.8, 1: 0.7}).n == "n = 3 vs 2 pretraining runs"


def test_intra_gate_compares_final_teacher_entropy_with_ln_k() -> None:
    ln_k = math.log(4096)  # 8.318; the threshold 0.9 ln K = 7.486
    ok = st.intra_gate([7.0, 7.4], 4096)
    assert ok.learning is True and not ok.blocks and ok.text == f"teacher entropy 7.00–7.40 of ln K = {ln_k:.2f}: learning"
    slow = st.intra_gate([7.0, 8.03], 4096)  # one run still near uniform: the arm is not learning
    assert slow.blocks and slow.text == "teacher entropy 7.00–8.03 of ln K = 8.32: not learning — no verdict"
    assert st.intra_gate([7.49], 4096).blocks and not st.intra_gate([7.48], 4096).blocks
    missing = st.intra_gate([7.0, None], 4096)
    assert missing.blocks and missing.text == "teacher entropy not recorded — no verdict on the intra branch"
    assert st.intra_gate(None, None).blocks
    none = st.intra_gate(None, None, has_intra=False)
    assert none.learning is None and not none.blocks


def test_verdict_needs_a_test_a_learning_intra_branch_and_holm() -> None:
    up, down = st.Comparison(0.02, 0.01, 3, 3, "paired t", 0.01, 3), st.Comparison(-0.02, 0.01, 3, 3, "paired t", 0.01, 0)
    learning, stuck = st.intra_gate([5.0], 4096), st.intra_gate([8.1], 4096)
    assert st.verdict(up, 0.03, (learning,)) == "supported (Holm p < 0.05)"
    assert st.verdict(up, 0.06, (learning,)) == "not shown (Holm p ≥ 0.05)"       # raw p 0.01 does not count
    assert st.verdict(down, 0.03, ()) == "**contradicted** (opposite sign, Holm p < 0.05)"
    assert st.verdict(up, 0.03, (learning, stuck)) == stuck.text                  # any stuck arm withholds it
    one = st.Comparison(0.02, math.nan, 1, 1, "none", math.nan)
    assert st.verdict(one, math.nan, (learning,)) == "no test with n = 1 pretraining run — no verdict"
    assert st.pvalue(0.0004) == "< 0.001" and st.pvalue(0.0234) == "0.023" and st.pvalue(math.nan) == "–"
