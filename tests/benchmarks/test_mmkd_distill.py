"""The MMKD benchmark's table and claim statistics on hand-made scores, and its results-page markers."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import mmkd_distill as bench  # noqa: E402


def _scores():
    cols = list(bench.TASKS)
    teachers = {"coda": 0.8, "supcon": 0.7, "dino": 0.6}
    scores = {t: {c: v for c in cols} for t, v in teachers.items()}
    scores["coda"][cols[-1]] = 0.5  # supcon is best on the last column
    for s, v in (("student-s0", 0.81), ("student-s1", 0.79), ("student-s2", 0.84)):
        scores[s] = {c: v for c in cols}
    return scores, list(teachers), ["student-s0", "student-s1", "student-s2"]


def test_claims_compare_each_run_with_the_best_teacher_per_column():
    scores, teachers, students = _scores()
    md, claims = bench.table(scores, teachers, students)
    first, last = list(bench.TASKS)[0], list(bench.TASKS)[-1]
    assert claims[first]["best_teacher"] == "coda" and claims[last]["best_teacher"] == "supcon"
    assert claims[first]["diff_mean"] == pytest.approx((0.01 - 0.01 + 0.04) / 3)
    assert claims[first]["runs_at_or_above"] == 2 and claims[first]["n"] == 3
    p = stats.ttest_1samp([0.01, -0.01, 0.04], 0.0, alternative="less").pvalue
    assert claims[first]["p_below"] == pytest.approx(p)
    # mean over tasks: teachers' means, student's means of its own columns
    assert scores["coda"]["mean over tasks"] == pytest.approx((0.8 * 4 + 0.5) / 5)
    assert "| **student (mmkd)** | 3 |" in md and "(Holm)" in md


def test_docs_section_is_replaced_between_markers(tmp_path):
    docs = tmp_path / "results.md"
    docs.write_text("# Results\n\nintro\n")
    bench.write_docs("table one", docs)
    bench.write_docs("table two", docs)
    text = docs.read_text()
    assert text.count(bench.BEGIN) == 1 and "table two" in text and "table one" not in text and "intro" in text
