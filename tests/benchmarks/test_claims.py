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


def test_health_gate_needs_every_run_learning_by_its_own_verdict() -> None:
    ok = st.health_gate(["learning", "learning"])
    assert ok.learning is True and not ok.blocks and ok.text == "health: learning in 2/2 runs"
    # a collapsed teacher (entropy near 0) passed the old entropy gate; it blocks this one
    collapsed = st.health_gate(["learning", "collapsed"])
    assert collapsed.blocks and collapsed.text == "health: learning in 1/2 runs (1 collapsed) — no verdict"
    slow = st.health_gate(["not learning yet"] * 3)
    assert slow.blocks and "learning in 0/3 runs (3 not learning yet)" in slow.text
    missing = st.health_gate(["learning", None])
    assert missing.blocks and missing.text == "health verdict not recorded — no verdict"
    assert st.health_gate(None).blocks
    none = st.health_gate(None, applies=False)
    assert none.learning is None and not none.blocks


def test_verdict_needs_a_test_a_learning_intra_branch_and_holm() -> None:
    up, down = st.Comparison(0.02, 0.01, 3, 3, "paired t", 0.01, 3), st.Comparison(-0.02, 0.01, 3, 3, "paired t", 0.01, 0)
    learning, stuck = st.health_gate(["learning"]), st.health_gate(["collapsed"])
    assert st.verdict(up, 0.03, (learning,)) == "supported (Holm p < 0.05)"
    assert st.verdict(up, 0.06, (learning,)) == "not shown (Holm p ≥ 0.05)"       # raw p 0.01 does not count
    assert st.verdict(down, 0.03, ()) == "**contradicted** (opposite sign, Holm p < 0.05)"
    assert st.verdict(up, 0.03, (learning, stuck)) == stuck.text                  # any stuck arm withholds it
    one = st.Comparison(0.02, math.nan, 1, 1, "none", math.nan)
    assert st.verdict(one, math.nan, (learning,)) == "no test with n = 1 pretraining run — no verdict"
    assert st.pvalue(0.0004) == "< 0.001" and st.pvalue(0.0234) == "0.023" and st.pvalue(math.nan) == "–"


def test_mde_of_the_paired_t_against_known_answers_and_a_simulation() -> None:
    # Cohen's tables: a paired/one-sample t at alpha 0.05 needs n = 34 for d_z = 0.5 at power 0.8 (33 is short)
    assert st.mde(1.0, 34, 0.05) < 0.5 < st.mde(1.0, 33, 0.05)
    d10 = st.mde(1.0, 10, 0.05)
    assert d10 == pytest.approx(0.996, abs=2e-3)
    assert st.paired_power(d10, 10, 0.05) == pytest.approx(0.8, abs=1e-6)
    # simulation: n = 10 normal differences with mean d10 (sd 1) reject at alpha 0.05 in 80 % of draws
    from scipy import stats
    x = np.random.default_rng(0).standard_normal((40000, 10)) + d10
    t = x.mean(1) / (x.std(1, ddof=1) / math.sqrt(10))
    assert (np.abs(t) > stats.t.ppf(0.975, 9)).mean() == pytest.approx(0.8, abs=0.01)
    # large n: (z_{1-a/2} + z_power) / sqrt(n); units follow sd; no test below 2 pairs
    assert st.mde(1.0, 400, 0.05) == pytest.approx((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) / 20, rel=0.01)
    assert st.mde(0.02, 6, 0.05 / 9) == pytest.approx(0.02 * st.mde(1.0, 6, 0.05 / 9))
    assert st.mde(1.0, 1, 0.05) == math.inf and math.isnan(st.mde(math.nan, 6, 0.05))
    # the arithmetic: n = 3 in a 21-row family needs t_{1-0.05/42, 2} / sqrt 3 ~ 11.8 sd to be significant,
    # and an effect of 15 sd for power 0.8
    assert stats.t.ppf(1 - 0.05 / 42, 2) / math.sqrt(3) == pytest.approx(11.8, abs=0.05)
    assert st.mde(1.0, 3, 0.05 / 21) == pytest.approx(15.0, abs=0.1)


def test_contrast_tests_the_interaction_on_the_same_models() -> None:
    coda_1, dino_1 = {0: 0.80, 1: 0.82, 2: 0.78, 3: 0.90}, {0: 0.70, 1: 0.75, 2: 0.74}
    coda_100, dino_100 = {0: 0.95, 1: 0.96, 2: 0.94}, {0: 0.93, 1: 0.95, 2: 0.94}
    c = st.contrast([(1, coda_1), (-1, dino_1), (-1, coda_100), (1, dino_100)])
    by_hand = [(0.80 - 0.70) - (0.95 - 0.93), (0.82 - 0.75) - (0.96 - 0.95), (0.78 - 0.74) - (0.94 - 0.94)]
    assert c.n_a == c.n_b == 3 and c.test == "paired t" and c.wins == 3   # seed 3 has no DINO run: left out
    assert c.delta == pytest.approx(np.mean(by_hand)) and c.sd == pytest.approx(np.std(by_hand, ddof=1))
    assert c.p == pytest.approx(st.paired_t(by_hand)[2])
    # A - B is the two-term contrast, the same paired t as compare
    assert st.contrast([(1, coda_100), (-1, dino_100)]).p == pytest.approx(st.compare(coda_100, dino_100).p)
    one = st.contrast([(1, {0: 0.9}), (-1, {0: 0.8})])
    assert one.test == "none" and math.isnan(one.p) and one.n == "n = 1 pretraining run"


def test_learning_seeds_exclude_runs_that_are_not_learning_and_count_them() -> None:
    g = st.learning_seeds({0: "learning", 1: "collapsed", 2: "learning", 3: None, 4: "learning"})
    assert g.kept == (0, 2, 4) and g.excluded == ((1, "collapsed"), (3, "not recorded")) and not g.blocks
    assert g.text == "3 learning, 2 excluded (seed 1: collapsed, seed 3: not recorded)"
    few = st.learning_seeds({0: "learning", 1: "learning", 2: "not learning yet"})
    assert few.blocks and few.text.endswith("— fewer than 3: no verdict")
    random = st.learning_seeds({0: None, 1: None, 2: None}, applies=False)
    assert random.kept == (0, 1, 2) and not random.blocks


def test_preregistered_verdict_says_inconclusive_not_no_effect() -> None:
    mde6 = st.mde(1.0, 6, 0.05 / 9)
    weak = st.Comparison(0.004, 0.01, 6, 6, "paired t", 0.40, 4)                     # 0.4 sd, far below the MDE
    v = st.preregistered_verdict(weak, 1.0, mde6)
    assert v == f"not supported — inconclusive (MDE {mde6:.2f} sd > observed 0.40 sd)" and "no effect" not in v
    strong = st.Comparison(0.03, 0.01, 6, 6, "paired t", 0.0004, 6)
    assert st.preregistered_verdict(strong, 0.003, mde6) == "supported"
    assert st.preregistered_verdict(dataclass_replace(strong, delta=-0.03), 0.003, mde6).startswith("not supported (opposite")
    ok, few = st.learning_seeds({s: "learning" for s in range(6)}), st.learning_seeds({0: "learning", 1: "collapsed"})
    assert st.preregistered_verdict(strong, 0.003, mde6, gates=(ok, few)).startswith("no verdict")
    two = st.Comparison(0.03, 0.01, 2, 2, "paired t", 0.1, 2)
    assert st.preregistered_verdict(two, 0.2, st.mde(1.0, 2, 0.05)) == "no verdict (n = 2 paired runs)"


def dataclass_replace(c: st.Comparison, **kw: float) -> st.Comparison:
    import dataclasses
    return dataclasses.replace(c, **kw)
