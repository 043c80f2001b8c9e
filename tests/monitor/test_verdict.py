"""One definition of learning: each rule fires on its signal and names it."""
from __future__ import annotations

import math

from organfm.monitor.verdict import COLLAPSED, LEARNING, NOT_LEARNING, judge

LOG_K = math.log(256)
HEALTHY = {"embed_std_ratio": 0.9, "rankme": 40.0, "distance": 0.05, "teacher_entropy": 0.6 * LOG_K,
           "teacher_batch_entropy": 0.95 * LOG_K, "log_k": LOG_K, "knn": 0.9}
START = {"embed_std_ratio": 0.95, "rankme": 50.0, "distance": 0.0, "teacher_entropy": 0.5 * LOG_K,
         "teacher_batch_entropy": 0.9 * LOG_K, "log_k": LOG_K, "knn": 0.7}


def test_a_run_that_moved_on_every_signal_is_learning():
    v = judge(HEALTHY, START)
    assert v.verdict == LEARNING and v.next == []
    assert all(c["ok"] for c in v.checks.values())


def test_weights_at_their_start_are_not_learning_even_with_good_other_signals():
    v = judge({**HEALTHY, "distance": 0.0}, START)
    assert v.verdict == NOT_LEARNING and "initial weights" in v.reason
    assert any("--network student" in n for n in v.next)


def test_a_uniform_teacher_is_not_learning():
    v = judge({**HEALTHY, "teacher_entropy": 0.97 * LOG_K, "teacher_batch_entropy": 0.99 * LOG_K}, START)
    assert v.verdict == NOT_LEARNING and "teacher entropy" in v.reason
    assert any("fewer prototypes" in n for n in v.next)


def test_one_prototype_collapse_is_collapsed_not_learning():
    # both entropies near 0: the old gate (entropy < 0.9 ln K) called this learning
    v = judge({**HEALTHY, "teacher_entropy": 0.01, "teacher_batch_entropy": 0.02}, START)
    assert v.verdict == COLLAPSED and "prototypes" in v.reason


def test_collapsed_embeddings_are_collapsed():
    assert judge({**HEALTHY, "embed_std_ratio": 0.01}, START).verdict == COLLAPSED
    assert judge({**HEALTHY, "rankme": 1.2}, START).verdict == COLLAPSED


def test_a_spread_that_was_already_low_at_step_zero_is_not_a_collapse():
    # a fresh U-Net's pooled ReLU features: spread 0.03 at init, 0.05 later, kNN up
    low = {**HEALTHY, "embed_std_ratio": 0.05}
    assert judge(low, {**START, "embed_std_ratio": 0.03}).verdict == LEARNING
    assert judge({**HEALTHY, "embed_std_ratio": 0.01}, {**START, "embed_std_ratio": 0.03}).verdict == COLLAPSED


def test_knn_must_rise_above_step_zero():
    v = judge({**HEALTHY, "knn": 0.71}, START)
    assert v.verdict == NOT_LEARNING and "kNN" in v.reason
    assert judge({**HEALTHY, "knn": 0.72}, START).verdict == LEARNING  # the 2-point bar


def test_masked_reconstruction_must_beat_the_mean():
    base = {"embed_std_ratio": 0.9, "rankme": 10.0, "distance": 0.1}
    assert judge({**base, "masked_loss": 0.1, "mean_baseline_loss": 0.2}, base).verdict == LEARNING
    v = judge({**base, "masked_loss": 0.198, "mean_baseline_loss": 0.2}, base)
    assert v.verdict == NOT_LEARNING and "mean" in v.reason


def test_organ_attention_must_leave_its_fresh_init_value():
    base = {"embed_std_ratio": 0.9, "rankme": 10.0, "distance": 0.1}
    assert judge({**base, "organ_entropy": 1.2987}, {**base, "organ_entropy": 1.2987}).verdict == NOT_LEARNING
    assert judge({**base, "organ_entropy": 1.0}, {**base, "organ_entropy": 1.2987}).verdict == LEARNING
    # even attention with a kNN gain is learning (an organ-wide signal read through an even average) ...
    v = judge({**base, "organ_entropy": 1.2987, "knn": 0.95}, {**base, "organ_entropy": 1.2987, "knn": 0.86})
    assert v.verdict == LEARNING and "spread evenly" in v.checks["attention_moved"]["text"]
    # ... but not without one
    v = judge({**base, "organ_entropy": 1.2987, "knn": 0.87}, {**base, "organ_entropy": 1.2987, "knn": 0.86})
    assert v.verdict == NOT_LEARNING and "organ-attention entropy" in v.reason


def test_nothing_measured_is_not_called_learning():
    assert judge({}, None).verdict == NOT_LEARNING


def test_non_finite_embeddings_are_collapsed():
    v = judge({"non_finite": 1.0}, START)
    assert v.verdict == COLLAPSED and "NaN" in v.reason


# Triad's plainconv3d (instance norm -> LeakyReLU -> global mean pool): pooled spread 0.05 at init, ~0.01 trained
MASKED_START = {"embed_std_ratio": 0.05, "rankme": 5.6, "distance": 0.0, "masked_loss": 0.54,
                "mean_baseline_loss": 0.043}


def test_a_masked_encoder_with_low_pooled_spread_that_reconstructs_is_learning():
    v = judge({"embed_std_ratio": 0.009, "rankme": 3.5, "distance": 0.2, "masked_loss": 0.02,
               "mean_baseline_loss": 0.043}, MASKED_START)
    assert v.verdict == LEARNING and "not a collapse for this masked-reconstruction encoder" in v.reason


def test_a_masked_encoder_that_does_not_reconstruct_yet_is_not_learning_rather_than_collapsed():
    v = judge({"embed_std_ratio": 0.023, "rankme": 1.5, "distance": 0.4, "masked_loss": 0.044,
               "mean_baseline_loss": 0.043, "median_baseline_loss": 0.029}, MASKED_START)
    assert v.verdict == NOT_LEARNING and "median" in v.reason and v.checks["embedding_spread"]["ok"]
    assert not any("teacher" in n for n in v.next)


def test_a_truly_collapsed_masked_encoder_is_still_collapsed():
    # one point for every volume: the pooled spread falls to a tenth of step 0 or below
    for rec in (0.05, 0.02):  # whether or not the reconstruction beats the mean
        v = judge({"embed_std_ratio": 0.004, "rankme": 1.0, "distance": 0.2, "masked_loss": rec,
                   "mean_baseline_loss": 0.043}, MASKED_START)
        assert v.verdict == COLLAPSED and "normalised-embedding std" in v.reason
        assert not any("teacher" in n for n in v.next) and any("mask_ratio" in n for n in v.next)


def test_the_masked_exemption_does_not_reach_methods_without_reconstruction():
    # the same spreads without masked-reconstruction signals (DINO, Coda, ...): collapsed as before, teacher advice
    v = judge({**HEALTHY, "embed_std_ratio": 0.009}, {**START, "embed_std_ratio": 0.05})
    assert v.verdict == COLLAPSED and any("teacher" in n for n in v.next)
    contrastive = {"embed_std_ratio": 0.009, "rankme": 30.0, "distance": 0.1, "knn": 0.9}  # no teacher, no mask
    assert judge(contrastive, {**contrastive, "embed_std_ratio": 0.05, "knn": 0.7}).verdict == COLLAPSED


def test_on_sparse_volumes_the_reconstruction_must_beat_the_median_too():
    # binary masks: predicting 0 (the median) scores 0.02 against 0.043 for the mean; 0.03 beats only the mean
    base = {"embed_std_ratio": 0.9, "rankme": 10.0, "distance": 0.1}
    v = judge({**base, "masked_loss": 0.03, "mean_baseline_loss": 0.043, "median_baseline_loss": 0.02}, base)
    assert v.verdict == NOT_LEARNING and "median" in v.reason
    assert judge({**base, "masked_loss": 0.015, "mean_baseline_loss": 0.043,
                  "median_baseline_loss": 0.02}, base).verdict == LEARNING
