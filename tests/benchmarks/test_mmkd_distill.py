"""The MMKD benchmark's table and claim statistics on hand-made scores, and its results-page markers."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import mmkd_distill as bench  # noqa: E402

ZS, T2I = list(bench.TEXT_TASKS)
IMAGE = bench.Arm("student (mmkd)", ("student-s0", "student-s1", "student-s2"), ("coda", "supcon", "dino"))
TEXT = bench.Arm("student+text", ("text-s0", "text-s1", "text-s2"), ("coda", "supcon", "dino", "clip"), "clip")


def _scores():
    """Flat scores per model: coda best on every task but the last (supcon), clip best of all on the first."""
    cols = list(bench.TASKS)
    teachers = {"coda": 0.8, "supcon": 0.7, "dino": 0.6, "clip": 0.65}
    scores = {t: {c: v for c in cols} for t, v in teachers.items()}
    scores["coda"][cols[-1]] = 0.5  # supcon is best on the last column
    scores["clip"][cols[0]] = 0.9  # clip is best on the first column, but not among the image arm's teachers
    scores["clip"] |= {ZS: 0.5, T2I: 0.4}
    for s, v in (("student-s0", 0.81), ("student-s1", 0.79), ("student-s2", 0.84)):
        scores[s] = {c: v for c in cols}
    for s, v, zs in (("text-s0", 0.7, 0.55), ("text-s1", 0.72, 0.45), ("text-s2", 0.74, 0.47)):
        scores[s] = {c: v for c in cols} | {ZS: zs, T2I: 0.4}
    return scores, list(teachers)


def test_each_arm_is_compared_with_the_best_of_its_own_teachers_per_column():
    scores, teachers = _scores()
    md, claims = bench.table(scores, teachers, [IMAGE, TEXT])
    first, last = list(bench.TASKS)[0], list(bench.TASKS)[-1]
    image, text = claims[IMAGE.label], claims[TEXT.label]
    # clip is best on the first column, but the image arm was not distilled from it
    assert image[first]["reference"] == "coda" and text[first]["reference"] == "clip"
    assert image[last]["reference"] == "supcon" and text[last]["reference"] == "supcon"
    assert image[first]["diff_mean"] == pytest.approx((0.01 - 0.01 + 0.04) / 3)
    assert image[first]["runs_at_or_above"] == 2 and image[first]["n"] == 3
    p = stats.ttest_1samp([0.01, -0.01, 0.04], 0.0, alternative="less").pvalue
    assert image[first]["p_below"] == pytest.approx(p)
    assert text[first]["diff_mean"] == pytest.approx(0.72 - 0.9)
    # mean over tasks: the teachers' means, each run's mean of its own five columns (not the text columns)
    assert scores["coda"][bench.MEAN] == pytest.approx((0.8 * 4 + 0.5) / 5)
    assert scores["text-s0"][bench.MEAN] == pytest.approx(0.7)
    assert image[bench.MEAN]["reference"] == "coda"  # 0.74 beats clip's (0.9 + 4 * 0.65) / 5 = 0.70
    assert "| **student (mmkd)** | 3 |" in md and "| **student+text** | 3 |" in md and "(Holm)" in md


def test_the_text_arm_is_compared_with_clip_on_the_text_columns():
    scores, teachers = _scores()
    md, claims = bench.table(scores, teachers, [IMAGE, TEXT])
    zs = claims[TEXT.label][ZS]
    assert zs["reference"] == "clip" and zs["reference_value"] == 0.5
    assert zs["diff_mean"] == pytest.approx((0.05 - 0.05 - 0.03) / 3) and zs["runs_at_or_above"] == 1
    assert zs["p_below"] == pytest.approx(stats.ttest_1samp([0.05, -0.05, -0.03], 0.0, alternative="less").pvalue)
    assert "p_below_holm" not in zs  # the headline text claim is tested on its own
    # every run equals clip on retrieval: no spread, no p-value, all runs "at or above"
    t2i = claims[TEXT.label][T2I]
    assert np.isnan(t2i["p_below"]) and t2i["runs_at_or_above"] == 3 and "n/a (no spread)" in md
    assert ZS not in claims[IMAGE.label]  # no text claim without a text reference


def test_models_without_a_text_tower_show_na_in_the_text_columns():
    scores, teachers = _scores()
    md, _ = bench.table(scores, teachers, [IMAGE, TEXT])
    score_table = md.split("\n\n")[0]  # the comparisons table follows after a blank line
    rows = {line.split(" | ")[0].strip("| *"): line.split(" | ") for line in score_table.splitlines()}
    assert rows["teacher coda"][-2:] == ["n/a", "n/a |"]
    assert rows["student (mmkd)"][-2:] == ["n/a", "n/a |"]
    assert rows["teacher clip"][-2:] == ["0.500", "0.400 |"]
    sd = np.std([0.55, 0.45, 0.47], ddof=1)
    assert rows["student+text"][-2] == f"{np.mean([0.55, 0.45, 0.47]):.3f} ± {sd:.3f}"


def test_an_arm_whose_runs_disagree_on_having_text_is_an_error():
    scores, teachers = _scores()
    del scores["text-s1"][ZS]
    with pytest.raises(ValueError, match="text-s1"):
        bench.table(scores, teachers, [IMAGE, TEXT])


def test_an_arm_naming_an_unknown_teacher_is_an_error():
    scores, teachers = _scores()
    arm = bench.Arm("x", IMAGE.runs, ("coda", "biomedclip"))
    with pytest.raises(ValueError, match="biomedclip"):
        bench.table(scores, teachers, [arm])


def test_holm_by_hand():
    adjusted = bench.holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": float("nan")})
    # sorted 0.01, 0.03, 0.04 over a family of 3: 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04)
    assert adjusted == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})
    assert bench.holm({"a": 0.6, "b": 0.5}) == pytest.approx({"b": 1.0, "a": 1.0})  # capped at 1


def test_compare_one_run_has_no_p_value():
    k = bench.compare(np.array([0.7]), 0.6)
    assert k["diff_mean"] == pytest.approx(0.1) and k["n"] == 1 and k["runs_at_or_above"] == 1
    assert np.isnan(k["p_below"])



def test_contrasts_pair_runs_by_seed_with_a_two_sided_t_and_holm_over_the_tasks():
    scores, teachers = _scores()
    bench.table(scores, teachers, [IMAGE, TEXT])  # adds the mean over tasks
    cols = list(bench.TASKS)
    scores["text-s1"][cols[1]] = 0.80  # one column of one run differs, so its diffs differ from the others
    contrast = bench.Contrast("texts", TEXT, IMAGE)
    res = bench.paired(contrast, scores, [*cols, bench.MEAN])
    diffs = [0.7 - 0.81, 0.72 - 0.79, 0.74 - 0.84]  # paired by position (seed), not sorted
    assert res[cols[0]]["diff_mean"] == pytest.approx(np.mean(diffs))
    assert res[cols[0]]["diff_sd"] == pytest.approx(np.std(diffs, ddof=1))
    assert res[cols[0]]["p"] == pytest.approx(stats.ttest_1samp(diffs, 0.0).pvalue)
    assert res[cols[0]]["positive"] == 0 and res[cols[0]]["n"] == 3
    # Holm over the five tasks only; the mean keeps its own p
    ps = sorted(res[c]["p"] for c in cols)
    assert min(res[c]["p_holm"] for c in cols) == pytest.approx(min(1.0, 5 * ps[0]))
    assert "p_holm" not in res[bench.MEAN]
    md, _ = bench.contrast_table([contrast], scores)
    assert md.count("| texts |") == 6
    with pytest.raises(ValueError, match="pair by seed"):
        bench.paired(bench.Contrast("x", TEXT, bench.Arm("short", ("student-s0",), ("coda",))), scores, cols)


def test_contrast_means_are_holm_corrected_across_contrasts():
    scores, teachers = _scores()
    bench.table(scores, teachers, [IMAGE, TEXT])
    scores["text-s1"][list(bench.TASKS)[1]] = 0.80
    a, b = bench.Contrast("a", TEXT, IMAGE), bench.Contrast("b", IMAGE, TEXT)
    _, res = bench.contrast_table([a, b], scores)
    p = res["a"][bench.MEAN]["p"]
    assert res["b"][bench.MEAN]["p"] == pytest.approx(p)  # the same differences, negated
    assert res["a"][bench.MEAN]["p_holm"] == pytest.approx(min(1.0, 2 * p))
    assert "Holm" in bench.contrast_sentence(res["a"][bench.MEAN])
