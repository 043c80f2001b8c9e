"""One definition of "learning": the verdict of a run from its monitor records at step 0 and now.

Three outcomes, checked in this order (the first rule that fires gives the reason):

- ``collapsed``: the representation or the teacher's prototypes fell to a point;
- ``not learning yet``: the network is still where it started (weights, teacher output, kNN, attention,
  reconstruction no better than a constant);
- ``learning``: every applicable signal moved the right way.

Every benchmark gate (``benchmarks/claims.py``) and the run's ``health.json`` use :func:`judge`, so a run
is called learning in one way everywhere.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["LEARNING", "COLLAPSED", "NOT_LEARNING", "THRESHOLDS", "Verdict", "judge"]

LEARNING, NOT_LEARNING, COLLAPSED = "learning", "not learning yet", "collapsed"
_LONGER = "train longer (trainer.max_steps) or raise optim.lr"

# Why these numbers: a network that trained has moved more than 0.1 % from its initial weights (a 20-step EMA
# teacher at momentum 0.996 moves 0.16 % and is not yet a trained network); healthy normalised embeddings have
# std ~ 1/sqrt(d) (ratio ~1), a collapsed one < 0.1 of that; a prototype teacher whose per-sample entropy stays
# above 0.9 ln K is near-uniform (centering wins), one whose batch-mean entropy is below 0.2 ln K sends every
# image to a few prototypes (sharpening wins); a kNN gain under 2 points on a few hundred images is noise.
THRESHOLDS: dict[str, float] = {
    "min_distance": 1e-3,
    "collapse_std_ratio": 0.1,
    "collapse_rank_fraction": 0.05,
    "uniform_entropy_fraction": 0.9,
    "collapse_batch_entropy_fraction": 0.2,
    "min_knn_gain": 0.02,
    "max_masked_loss_ratio": 0.95,
    "max_attention_entropy_ratio": 0.98,
    "masked_collapse_fraction": 0.1,
}
# Masked-reconstruction encoders (Triad's plainconv3d: instance norm -> LeakyReLU -> global mean pool) give a
# near-constant pooled vector by construction: spread 0.05 at init, 0.01-0.02 after training, while a standardised
# linear probe on the same features gets better. For these methods (masked-reconstruction signals, no teacher) a
# low pooled spread is a collapse only under ``masked_collapse_fraction`` of its step-0 value (every volume sent
# to one point); above it, the reconstruction check (masked loss against the better of each volume's visible
# mean and median) decides between learning and not learning yet.


@dataclass
class Verdict:
    """The health verdict of a run.

    Attributes:
        verdict: ``learning``, ``not learning yet`` or ``collapsed``.
        reason: why, with the numbers.
        next: what to try next (empty when learning).
        checks: every rule applied: name -> (passed, one-line text).
    """

    verdict: str
    reason: str
    next: list[str] = field(default_factory=list)
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def judge(now: dict[str, float], start: dict[str, float] | None, *,
          thresholds: dict[str, float] | None = None) -> Verdict:
    """The verdict from the signals ``now`` and those of the same network at step 0 (``start``).

    Signals read (each only where present): ``embed_std_ratio`` (std · sqrt(d)), ``rankme``, ``distance``,
    ``teacher_entropy`` / ``teacher_batch_entropy`` / ``log_k`` (prototype heads), ``knn``,
    ``masked_loss`` / ``mean_baseline_loss`` / ``median_baseline_loss`` (masked reconstruction: the better of the
    two constants is the bar), ``organ_entropy`` (organ-set attention).

    Args:
        now: the latest monitor record's signals.
        start: the step-0 record's signals (None: not recorded, e.g. a run resumed from an older organfm).
        thresholds: overrides of :data:`THRESHOLDS`.
    """
    t = {**THRESHOLDS, **(thresholds or {})}
    start = start or {}
    checks: dict[str, dict[str, Any]] = {}
    collapsed: list[tuple[str, list[str]]] = []
    stuck: list[tuple[str, list[str]]] = []

    def check(name: str, ok: bool, text: str, bucket: list, advice: list[str]) -> None:
        checks[name] = {"ok": bool(ok), "text": text}
        if not ok:
            bucket.append((text, advice))

    # --- collapse -----------------------------------------------------------------------------------------
    if now.get("non_finite"):
        return Verdict(COLLAPSED, "the exported network's embeddings of the monitor images are NaN or infinite",
                       ["lower optim.lr", "check the data and views.mean/views.std"],
                       {"finite": {"ok": False, "text": "non-finite embeddings"}})
    log_k, h_batch = now.get("log_k"), now.get("teacher_batch_entropy")
    rec, base = now.get("masked_loss"), now.get("mean_baseline_loss")
    median = now.get("median_baseline_loss")  # the L1-optimal constant; beats the mean on sparse volumes
    constant = "mean"
    if _finite(median) and _finite(base) and median < base:
        base, constant = median, "median"
    masked = _finite(rec) and _finite(base) and base > 0  # a masked-reconstruction method
    if masked and not _finite(log_k):  # advice for the method at hand, not for a teacher it does not have
        collapse_advice = ["lower optim.lr", "a smaller method.mask_ratio",
                           "a smaller method.text_weight (Triad's log-ratio term pulls on the pooled features)"]
    else:
        collapse_advice = ["lower optim.lr", "raise teacher.warmup_temp_epochs (a longer teacher-temperature warm-up)"]
    ratio, ratio0 = now.get("embed_std_ratio"), start.get("embed_std_ratio")
    if _finite(ratio):
        # pooled ReLU features of a fresh network already point one way (spread ~0.05): collapse is a fall
        # below the bar *and* to under half the spread the same network had at step 0
        fell = not _finite(ratio0) or ratio < 0.5 * ratio0
        low = ratio < t["collapse_std_ratio"] and fell
        text = (f"normalised-embedding std is {ratio:.3f} x 1/sqrt(d)"
                + (f", {ratio0:.3f} at step 0" if _finite(ratio0) else "")
                + f" (collapse: below {t['collapse_std_ratio']} and under half of step 0)")
        if low and masked and not _finite(log_k) and _finite(ratio0) and ratio >= t["masked_collapse_fraction"] * ratio0:
            low = False
            text += ("; not a collapse for this masked-reconstruction encoder: instance norm and a global mean pool "
                     f"make its pooled vectors near-constant, so only a fall under {t['masked_collapse_fraction']} of "
                     "step 0 is one, and the reconstruction check decides whether it learns")
        check("embedding_spread", not low, text, collapsed, collapse_advice)
    rank, rank0 = now.get("rankme"), start.get("rankme")
    if _finite(rank) and _finite(rank0) and rank0 > 2:
        check("effective_rank", rank >= t["collapse_rank_fraction"] * rank0,
              f"effective rank (RankMe) {rank:.1f}, {rank0:.1f} at step 0", collapsed,
              collapse_advice if masked and not _finite(log_k) else ["lower optim.lr", "raise teacher.warmup_temp_epochs"])
    if _finite(log_k) and _finite(h_batch) and log_k > 0:
        check("prototype_spread", h_batch >= t["collapse_batch_entropy_fraction"] * log_k,
              f"batch-mean teacher entropy {h_batch:.2f} of ln K = {log_k:.2f}: "
              f"{'a few prototypes take every image' if h_batch < t['collapse_batch_entropy_fraction'] * log_k else 'prototypes in use'}",
              collapsed, ["raise teacher.warmup_temp_epochs or teacher.warmup_temp (less sharpening early)",
                          "fewer prototypes (method.out_dim)", "lower optim.lr"])

    # --- still at the start ---------------------------------------------------------------------------------
    dist = now.get("distance")
    if _finite(dist):
        check("weights_moved", dist >= t["min_distance"],
              f"the exported network is {100 * dist:.3g} % away from its initial weights "
              f"(at least {100 * t['min_distance']:.2g} % expected)", stuck,
              [_LONGER,
               "for a short run of an EMA-teacher method: export --network student, or lower teacher.momentum"])
    h = now.get("teacher_entropy")
    if _finite(log_k) and _finite(h) and log_k > 0:
        check("teacher_not_uniform", h < t["uniform_entropy_fraction"] * log_k,
              f"per-sample teacher entropy {h:.2f} of ln K = {log_k:.2f} ({h / log_k:.2f} ln K; uniform above "
              f"{t['uniform_entropy_fraction']})", stuck,
              ["fewer prototypes (method.out_dim)", "a longer teacher-temperature warm-up "
               "(teacher.warmup_temp_epochs) ending at a lower teacher.temp", _LONGER])
    knn, knn0 = now.get("knn"), start.get("knn")
    if _finite(knn) and _finite(knn0):
        check("knn_above_start", knn >= knn0 + t["min_knn_gain"],
              f"monitor kNN accuracy {knn:.3f}, {knn0:.3f} at step 0 (at least +{t['min_knn_gain']:.2f} expected)",
              stuck, [_LONGER, "check that the labels of the monitor images mean "
                      "something the method can learn"])
    if masked:
        check("reconstruction_beats_mean", rec <= t["max_masked_loss_ratio"] * base,
              f"masked-voxel loss {rec:.4f} vs {base:.4f} for predicting each volume's {constant} "
              f"({rec / base:.2f}x; at most {t['max_masked_loss_ratio']} expected)", stuck,
              [_LONGER, "a smaller method.mask_ratio"])
    att, att0 = now.get("organ_entropy"), start.get("organ_entropy")
    if _finite(att) and _finite(att0) and att0 > 0:
        moved = att <= t["max_attention_entropy_ratio"] * att0
        text = f"organ-attention entropy {att:.4f}, {att0:.4f} for the network at step 0"
        # attention spread evenly over the organs is not by itself a sign of no learning: an encoder can read an
        # organ-wide signal through an even average (seen in the Pan-FM gate run, kNN 0.86 -> 0.95); it blocks
        # the verdict only where the monitor kNN does not show learning either
        learned = _finite(knn) and _finite(knn0) and knn >= knn0 + t["min_knn_gain"]
        if not moved and learned:
            moved, text = True, text + " (still spread evenly over the organs; the kNN gain shows learning)"
        check("attention_moved", moved, text, stuck,
              ["hold the teacher momentum below 1 (teacher.momentum_end=0.99)", "train longer"])

    if collapsed:
        return Verdict(COLLAPSED, collapsed[0][0], _unique(a for _, adv in collapsed for a in adv), checks)
    if stuck:
        return Verdict(NOT_LEARNING, "; ".join(s for s, _ in stuck),
                       _unique(a for _, adv in stuck for a in adv), checks)
    if not checks:
        return Verdict(NOT_LEARNING, "no signal was measured", ["set trainer.monitor_every > 0"], checks)
    return Verdict(LEARNING, "; ".join(c["text"] for c in checks.values()), [], checks)


def _unique(items) -> list[str]:
    out: list[str] = []
    for item in items:
        if item not in out:
            out.append(item)
    return out
