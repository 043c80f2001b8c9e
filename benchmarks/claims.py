"""Statistics of the benchmark claims, with the pretraining run as the unit of replication.

A downstream (probe) seed re-draws the labelled subset and the probe's init; it does not re-draw the
pretrained model. Treating probe seeds of one model as independent replicates of the *objective* inflates
n and shrinks p. So every comparison here works on one number per pretrained model:

1. ``model_means``: average the probe seeds within each pretraining run (seed -> mean);
2. ``compare``: arm A against arm B across pretraining runs, paired by pretraining seed when both arms
   have the same seeds (a seed fixes the data order and the initialisation of both), else Welch's t;
3. ``holm``: Holm's step-down correction over the claims of one table;
4. ``health_gate``: no verdict for an arm any of whose pretraining runs did not reach the health verdict
   ``learning`` (the run's ``health.json``, the same verdict every run prints);
5. ``verdict``: the words written beside a claim, from the above.

For pre-registered designs (``benchmarks/preregistered/*.yaml``):

6. ``contrast``: a pre-registered linear contrast (A − B on one endpoint, or an interaction
   (A − B at 1 %) − (A − B at 100 %)) tested as a paired t on its per-seed values;
7. ``learning_seeds``: the health gate that excludes runs instead of blocking the arm: a run whose verdict is
   not ``learning`` is counted and left out, and an arm with fewer than ``MIN_LEARNING_RUNS`` left gets no verdict;
8. ``paired_power`` / ``mde``: power of the paired t and its minimum detectable effect at n and α;
9. ``preregistered_verdict``: "supported" / "not supported" (with "inconclusive" when underpowered) / "no verdict".
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

ALPHA = 0.05
LEARNING = "learning"  # organfm.monitor.verdict.LEARNING: the health verdict a run must reach to be read
MIN_LEARNING_RUNS = 3   # an arm with fewer learning runs gets no verdict on a pre-registered contrast
POWER = 0.8


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


def health_gate(verdicts: Sequence[str | None] | None, *, applies: bool = True) -> Gate:
    """Is every pretraining run of an arm ``learning`` by the run's own health verdict (``health.json``,
    ``organfm.monitor.verdict.judge``)? One definition of learning for runs and claims alike: a collapsed
    teacher (entropy near 0) blocks a verdict as a uniform one does.

    Args:
        verdicts: the health verdict of each pretraining run of the arm; None where the run recorded none
            (runs from before the monitor).
        applies: False for arms with no pretraining run (random init) — never blocks a verdict.
    """
    if not applies:
        return Gate(None, "no pretraining run")
    verdicts = list(verdicts or [])
    if not verdicts or any(v is None for v in verdicts):
        return Gate(False, "health verdict not recorded — no verdict")
    n, ok = len(verdicts), sum(v == LEARNING for v in verdicts)
    if ok == n:
        return Gate(True, f"health: learning in {n}/{n} runs")
    others = ", ".join(f"{verdicts.count(v)} {v}" for v in dict.fromkeys(verdicts) if v != LEARNING)
    return Gate(False, f"health: learning in {ok}/{n} runs ({others}) — no verdict")


def verdict(c: Comparison, p_holm: float, gates: Sequence[Gate] = ()) -> str:
    """The status of the directional claim "A > B".

    Args:
        c: the comparison A − B.
        p_holm: its Holm-adjusted p within the table's family.
        gates: the health gates of A and B; any blocking gate withholds the verdict.
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


def paired_power(effect: float, n: int, alpha: float) -> float:
    """Power of the two-sided paired t-test (one-sample t on n differences) for a true effect in sd units.

    With df = n − 1, t* = t_{1 − α/2, df} and the noncentrality λ = effect · √n, the power is
    P(T > t*) + P(T < −t*) for T ~ noncentral t(df, λ) (``scipy.stats.nct``).

    Args:
        effect: true mean of the paired differences over their sd (Cohen's d_z).
        n: pairs (pretraining seeds).
        alpha: two-sided level (already adjusted for the family).
    """
    from scipy import stats

    if n < 2:
        return math.nan
    df, lam = n - 1, effect * math.sqrt(n)
    t_crit = float(stats.t.ppf(1 - alpha / 2, df))
    lower = float(stats.nct.cdf(-t_crit, df, lam))
    # far in the wrong tail scipy returns nan for what is ~0
    return float(stats.nct.sf(t_crit, df, lam)) + (lower if math.isfinite(lower) else 0.0)


def mde(sd: float, n: int, alpha_adjusted: float, power: float = POWER) -> float:
    """Minimum detectable effect of a two-sided paired t-test: the smallest true mean paired difference δ
    that reaches ``power`` with n pairs at level ``alpha_adjusted``.

    Solves, for δ ≥ 0 (Brent's method),

        P(T > t*) + P(T < −t*) = power,   T ~ noncentral t(n − 1, δ √n / sd),   t* = t_{1 − α/2, n − 1}

    (``paired_power``). With ``sd = 1`` the result is in sd units of the paired differences (Cohen's d_z);
    for large n it tends to (z_{1 − α/2} + z_power) · sd / √n. Known values: n = 34 is the smallest n with
    power 0.8 for d_z = 0.5 at α = 0.05 (Cohen's tables), i.e. mde(1, 34, 0.05) < 0.5 < mde(1, 33, 0.05).

    Args:
        sd: sd of the paired differences (from a pilot), in the endpoint's units; 1 for sd units.
        n: pairs (pretraining seeds) the test will have.
        alpha_adjusted: two-sided level after the family correction (e.g. Bonferroni α/m).
        power: the target power.

    Returns:
        δ in the units of ``sd``; inf for n < 2 (no test), nan for a non-finite sd.
    """
    from scipy import optimize

    if not math.isfinite(sd):
        return math.nan
    if n < 2:
        return math.inf
    hi = 1.0
    while paired_power(hi, n, alpha_adjusted) < power:
        hi *= 2
    return sd * float(optimize.brentq(lambda d: paired_power(d, n, alpha_adjusted) - power, 0.0, hi, xtol=1e-10))


def contrast(terms: Sequence[tuple[float, Mapping[int, float]]]) -> Comparison:
    """A pre-registered linear contrast Σ w_i · x_i, tested as a paired t over the seeds every term has.

    A − B on one endpoint is ``[(+1, a), (−1, b)]``; the interaction (A − B at 1 %) − (A − B at 100 %) is
    ``[(+1, a_1), (−1, b_1), (−1, a_100), (+1, b_100)]``: its per-seed value is the difference of the two gaps
    on the same pretrained models, so one paired t tests whether the gap at 1 % is larger.

    Args:
        terms: (weight, pretraining seed -> model mean) per term; only seeds present in every term count.

    Returns:
        A ``Comparison`` with n_a = n_b = the seeds used, ``"paired t"`` (``"none"`` below 2 seeds), delta and
        sd of the per-seed values, and wins = seeds with a positive value.
    """
    if not terms:
        raise ValueError("a contrast needs at least one term")
    seeds = sorted(set.intersection(*(set(x) for _, x in terms)))
    d = np.array([sum(w * x[s] for w, x in terms) for s in seeds], dtype=float)
    n = len(d)
    if n < 2:
        return Comparison(float(d.mean()) if n else math.nan, math.nan, n, n, "none", math.nan, int((d > 0).sum()))
    return Comparison(float(d.mean()), float(d.std(ddof=1)), n, n, "paired t", paired_t(d)[2], int((d > 0).sum()))


@dataclasses.dataclass(frozen=True)
class LearningRuns:
    """The runs of an arm that a pre-registered contrast reads, by their health verdicts.

    Attributes:
        kept: pretraining seeds whose verdict is ``learning`` (every seed where the gate does not apply).
        excluded: (seed, verdict) of every other run; verdict "not recorded" where the run wrote none.
        applies: False for arms without a pretraining run (random init).
        min_runs: learning runs below which the arm gets no verdict.
    """

    kept: tuple[int, ...]
    excluded: tuple[tuple[int, str], ...]
    applies: bool = True
    min_runs: int = MIN_LEARNING_RUNS

    @property
    def blocks(self) -> bool:
        return len(self.kept) < self.min_runs

    @property
    def text(self) -> str:
        """"6 learning, 1 excluded (seed 3: collapsed)", ending in "— no verdict" below ``min_runs``."""
        if not self.applies:
            head = f"{len(self.kept)} runs (no pretraining: not gated)"
        else:
            head = f"{len(self.kept)} learning"
            if self.excluded:
                head += f", {len(self.excluded)} excluded (" + ", ".join(f"seed {s}: {v}" for s, v in self.excluded) + ")"
        return head + (f" — fewer than {self.min_runs}: no verdict" if self.blocks else "")


def learning_seeds(verdicts: Mapping[int, str | None], *, applies: bool = True,
                   min_runs: int = MIN_LEARNING_RUNS) -> LearningRuns:
    """Keep the runs whose health verdict is ``learning``; count and name the rest.

    Args:
        verdicts: pretraining seed -> the run's health verdict (None: not recorded, excluded).
        applies: False for an arm with no pretraining run (random init): every run is kept.
        min_runs: learning runs an arm needs for a verdict.
    """
    seeds = sorted(verdicts)
    if not applies:
        return LearningRuns(tuple(seeds), (), False, min_runs)
    kept = tuple(s for s in seeds if verdicts[s] == LEARNING)
    excluded = tuple((s, verdicts[s] or "not recorded") for s in seeds if verdicts[s] != LEARNING)
    return LearningRuns(kept, excluded, True, min_runs)


def preregistered_verdict(c: Comparison, p_holm: float, mde_sd: float, *, alpha: float = ALPHA,
                          gates: Sequence[LearningRuns] = ()) -> str:
    """The words beside a pre-registered directional contrast (> 0): supported, not supported, or no verdict.

    Args:
        c: the contrast's comparison (``contrast``).
        p_holm: its Holm-adjusted p over the whole pre-registered family.
        mde_sd: minimum detectable effect at the achieved n, in sd units of the per-seed values.
        alpha: the pre-registered level.
        gates: the ``LearningRuns`` of every arm in the contrast; any arm below its minimum withholds a verdict.
    """
    blocked = [g for g in gates if g.blocks]
    if blocked:
        return f"no verdict (fewer than {blocked[0].min_runs} learning runs in an arm)"
    if c.test == "none" or c.n_a < MIN_LEARNING_RUNS:
        return f"no verdict (n = {c.n_a} paired runs)"
    if not math.isfinite(p_holm):
        return "no verdict (no spread between runs to test)"
    if p_holm < alpha:
        return "supported" if c.delta > 0 else "not supported (opposite sign, Holm p < α)"
    observed = abs(c.delta) / c.sd if c.sd > 0 else math.inf
    if not observed >= mde_sd:
        return f"not supported — inconclusive (MDE {mde_sd:.2f} sd > observed {observed:.2f} sd)"
    return f"not supported (MDE {mde_sd:.2f} sd ≤ observed {observed:.2f} sd)"
