"""Statistics of the benchmark claims, with the pretraining run as the unit of replication.

A downstream (probe) seed re-draws the labelled subset and the probe's init; it does not re-draw the
pretrained model. Treating probe seeds of one model as independent replicates of the *objective* inflates
n and shrinks p. So every comparison here works on one number per pretrained model:

1. ``model_means``: average the probe seeds within each pretraining run (seed -> mean);
2. ``compare``: arm A against arm B across pretraining runs, paired by pretraining seed when both arms
   have the same seeds (a seed fixes the data order and the initialisation of both), else Welch's t;
3. ``holm``: Holm's step-down correction over the claims of one table;
4. ``intra_gate``: no verdict for an arm whose intra-organ (DINO) branch has not started learning, read
   from the teacher entropy the run logged against ln K (K = the head's prototypes);
5. ``verdict``: the words written beside a claim, from the above.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

ALPHA = 0.05
# "started learning": the final teacher entropy fell below this share of ln K (the entropy of a uniform
# teacher, which is where a random DINO head starts). Chosen, not derived: it is far outside the drift a
# random head shows (GPU short run: DINO loss 11.03 against ln 65,536 = 11.09) yet far from collapse.
LEARNING_RATIO = 0.9


def model_means(per_seed: Mapping[int, Sequence[float]]) -> dict[int, float]:
    """One number per pretrained model: the mean of its probe-seed values.

    Args:
        per_seed: pretraining seed -> the values of every probe seed evaluated on that model.

    Returns:
        pretraining seed -> mean over its probe seeds (models without any finite value are dropped).
    """
    out = {}
    for seed, values in per_seed.items():
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        if len(v):
            out[int(seed)] = float(v.mean())
    return out


def mean_sd(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample sd (nan for n < 2), n) of ``values``."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()) if len(v) else math.nan, float(v.std(ddof=1)) if len(v) > 1 else math.nan, len(v)


def paired_t(diffs: Sequence[float]) -> tuple[float, int, float]:
    """Two-sided one-sample t-test of the paired differences against 0.

    Args:
        diffs: (n,) differences a_i - b_i, one per pretraining seed.

    Returns:
        (t, degrees of freedom n - 1, p); t and p are nan when n < 2 or every difference is equal
        (no spread to test against).
    """
    from scipy import stats

    d = np.asarray(diffs, dtype=float)
    n = len(d)
    if n < 2 or float(d.std(ddof=1)) == 0.0:
        return math.nan, n - 1, math.nan
    t = float(d.mean() / (d.std(ddof=1) / math.sqrt(n)))
    return t, n - 1, float(2 * stats.t.sf(abs(t), n - 1))


def welch_t(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """Two-sided Welch t-test of mean(a) - mean(b) (unequal variances, Welch–Satterthwaite df).

    Returns:
        (t, df, p); nan when either side has fewer than 2 values or both have zero variance.
    """
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return math.nan, math.nan, math.nan
    t = float((a.mean() - b.mean()) / math.sqrt(va + vb))
    df = float((va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)))
    return t, df, float(2 * stats.t.sf(abs(t), df))


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Arm A against arm B over pretraining runs.

    Attributes:
        delta: mean of the paired differences (paired) or difference of the arm means (Welch, or no test).
        sd: sd of the paired differences (paired only; nan otherwise).
        n_a, n_b: pretraining runs of each arm.
        test: ``"paired t"``, ``"Welch t"`` or ``"none"`` (fewer than 2 runs on a side).
        p: two-sided p (nan without a test).
        wins: pretraining seeds where A > B (paired only; -1 otherwise).
    """

    delta: float
    sd: float
    n_a: int
    n_b: int
    test: str
    p: float
    wins: int = -1

    @property
    def n(self) -> str:
        """"n = 3 pretraining runs" (paired or equal sizes), else "n = 3 vs 2 pretraining runs"."""
        k = f"{self.n_a}" if self.n_a == self.n_b else f"{self.n_a} vs {self.n_b}"
        return f"n = {k} pretraining run{'s' if self.n_a + self.n_b > 2 else ''}"


def compare(a: Mapping[int, float], b: Mapping[int, float]) -> Comparison:
    """Compare two arms' per-model means (``model_means``): paired by seed if the seeds match, else Welch.

    Args:
        a: pretraining seed -> model mean of arm A.
        b: the same for arm B.
    """
    if not a or not b:
        raise ValueError("compare needs at least one pretraining run per arm")
    if set(a) == set(b) and len(a) >= 2:
        seeds = sorted(a)
        d = np.array([a[s] - b[s] for s in seeds])
        _, _, p = paired_t(d)
        return Comparison(float(d.mean()), float(d.std(ddof=1)), len(a), len(b), "paired t", p, int((d > 0).sum()))
    va, vb = np.array(list(a.values())), np.array(list(b.values()))
    delta = float(va.mean() - vb.mean())
    if len(va) < 2 or len(vb) < 2:
        return Comparison(delta, math.nan, len(va), len(vb), "none", math.nan)
    return Comparison(delta, math.nan, len(va), len(vb), "Welch t", welch_t(va, vb)[2])


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error), in the input order.

    The i-th smallest of the m finite p-values is multiplied by (m - i) (i from 0), a running maximum keeps
    the adjusted values monotone in the raw ones, and each is capped at 1. A nan (a comparison with no test)
    is not part of the family: it stays nan and does not count in m.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(len(p), math.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m, running = len(order), 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[idx]))
        out[idx] = running
    return out.tolist()


@dataclasses.dataclass(frozen=True)
class Gate:
    """Whether an arm's intra branch has started learning, and the words that say so."""

    learning: bool | None   # None: not applicable (no intra branch) — never blocks a verdict
    text: str

    @property
    def blocks(self) -> bool:
        return self.learning is False


def intra_gate(entropies: Sequence[float | None] | None, out_dim: int | None, *,
               has_intra: bool = True, ratio: float = LEARNING_RATIO) -> Gate:
    """Has the intra branch of an arm started learning in *every* run? (final teacher entropy < ratio·ln K)

    Args:
        entropies: final teacher entropy (nats) of each pretraining run of the arm; None where not recorded.
        out_dim: K, the DINO head's prototypes.
        has_intra: False for arms without an intra branch (L_inter only, SupCon, random init).
        ratio: the share of ln K below which the branch counts as learning.
    """
    if not has_intra:
        return Gate(None, "no intra branch")
    known = [e for e in (entropies or []) if e is not None and math.isfinite(e)]
    if not known or out_dim is None or len(known) < len(entropies or []):
        return Gate(False, "teacher entropy not recorded — no verdict on the intra branch")
    ln_k, worst = math.log(out_dim), max(known)
    span = f"{worst:.2f}" if f"{min(known):.2f}" == f"{worst:.2f}" else f"{min(known):.2f}–{worst:.2f}"
    if worst < ratio * ln_k:
        return Gate(True, f"teacher entropy {span} of ln K = {ln_k:.2f}: learning")
    return Gate(False, f"teacher entropy {span} of ln K = {ln_k:.2f}: not learning — no verdict")


def verdict(c: Comparison, p_holm: float, gates: Sequence[Gate] = ()) -> str:
    """The status of the directional claim "A > B".

    Args:
        c: the comparison A − B.
        p_holm: its Holm-adjusted p within the table's family.
        gates: the intra gates of A and B; any blocking gate withholds the verdict.
    """
    if c.test == "none":
        return f"no test with {c.n} — no verdict"
    blocked = [g.text for g in gates if g.blocks]
    if blocked:  # each gate's text already ends in "no verdict ..."
        return "; ".join(dict.fromkeys(blocked))
    if not math.isfinite(p_holm):
        return "no spread between runs to test — no verdict"
    if p_holm < ALPHA:
        return "supported (Holm p < 0.05)" if c.delta > 0 else "**contradicted** (opposite sign, Holm p < 0.05)"
    return "not shown (Holm p ≥ 0.05)"


def pvalue(p: float) -> str:
    """A p-value for a table cell ("–" when there is none)."""
    if not math.isfinite(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"
