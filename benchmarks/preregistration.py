"""The pre-registered design of the Coda claims: arms, primary endpoints, contrasts, test, α, family, n, MDE.

One design for every pre-registered scale (``small``, ``paper``); each scale writes it once to
``benchmarks/preregistered/coda-<scale>.yaml``, before its first run file, from a pilot's sd:

- primary endpoints on data no arm saw labels of: PneumoniaMNIST linear AUC on frozen features with 100 % and
  1 % of the labels, and zero-shot organ kNN accuracy and NMI on the TotalSegmentator CT organ crops
  (MedNIST is not one: L_inter, Coda and SupCon see its organ labels in pretraining);
- contrasts: Coda − L_inter and Coda − L_intra on each primary endpoint (Table 2: the claim holds on an
  endpoint only if both are positive and survive Holm), and the few-shot claim (Table 1) as the interaction
  (Coda − DINO at 1 %) − (Coda − DINO at 100 %) on PneumoniaMNIST AUC;
- the test: a two-sided paired t by pretraining seed on each contrast's per-seed value, at α = 0.05, Holm over
  all the contrasts as one family; a run whose health verdict is not ``learning`` is excluded, an arm with
  fewer than 3 learning runs gets no verdict;
- the minimum detectable effect at the planned n at Bonferroni α/m (power 0.8), in sd units and, with the
  pilot's sd of each contrast, in the endpoint's units.

The report (``coda_ablation_report.py``) reads the contrasts from the file, so what it tests is what was
registered; ``write`` refuses to overwrite an existing file.
"""
from __future__ import annotations

import datetime
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import claims as st

REPO = Path(__file__).resolve().parents[1]

__all__ = ["CONTRASTS", "ENDPOINTS", "build", "load", "write"]

CLUSTERS = "ct-organs|clusters|crops"  # coda_ablation_report.canonical's key of the clusters row
# endpoint id -> (measure key the report reads, metric, label)
ENDPOINTS: dict[str, tuple[str, str, str]] = {
    "pneumonia_auc_100": ("pneumonia|linear|100%", "auc", "PneumoniaMNIST linear AUC, 100 % labels"),
    "pneumonia_auc_1": ("pneumonia|linear|1%", "auc", "PneumoniaMNIST linear AUC, 1 % labels"),
    "organ_knn": (CLUSTERS, "knn_accuracy", "CT organ crops, kNN accuracy (zero-shot)"),
    "organ_nmi": (CLUSTERS, "nmi", "CT organ crops, k-means NMI (zero-shot)"),
}


def _contrasts() -> list[dict[str, Any]]:
    out = []
    for other, claim in (("inter", "Coda > L_inter only (Table 2)"), ("intra", "Coda > L_intra only (Table 2)")):
        for e in ENDPOINTS:
            out.append({"id": f"coda-{other}:{e}", "claim": claim, "endpoint": e,
                        "terms": [[1, "coda", e], [-1, other, e]]})
    out.append({"id": "fewshot-interaction", "endpoint": "pneumonia_auc_1 − pneumonia_auc_100",
                "claim": "Coda's advantage over DINO is larger with 1 % of labels than with 100 % (Table 1)",
                "terms": [[1, "coda", "pneumonia_auc_1"], [-1, "dino", "pneumonia_auc_1"],
                          [-1, "coda", "pneumonia_auc_100"], [1, "dino", "pneumonia_auc_100"]]})
    return out


CONTRASTS = _contrasts()


def arms_of(contrast: Mapping[str, Any]) -> list[str]:
    """The arms a contrast reads, in order of appearance."""
    return list(dict.fromkeys(arm for _, arm, _ in contrast["terms"]))


def planned_n(contrast: Mapping[str, Any], seeds: Mapping[str, Sequence[int]]) -> int:
    """The pairs a contrast will have: the pretraining seeds every arm of it shares."""
    return len(set.intersection(*(set(seeds[a]) for a in arms_of(contrast))))


def build(scale: str, arms: Mapping[str, Mapping[str, Any]], pilot_sd: Mapping[str, float | None], *,
          pilot: Mapping[str, Any], alpha: float = st.ALPHA, power: float = st.POWER) -> dict[str, Any]:
    """The pre-registration of one scale as plain data (what ``write`` saves).

    Args:
        scale: the scale's name (``small``, ``paper``).
        arms: arm -> ``{"method", "overrides", "seeds"}``, the planned pretraining seeds included.
        pilot_sd: contrast id -> sd of its per-seed values over the pilot's learning runs (None: no pilot).
        pilot: where the pilot lives, its seeds and health (recorded as given).
        alpha: the two-sided level; power: the power the MDE is stated at.
    """
    m = len(CONTRASTS)
    seeds = {a: list(spec["seeds"]) for a, spec in arms.items()}
    mde = {}
    for c in CONTRASTS:
        n = planned_n(c, seeds)
        sd = pilot_sd.get(c["id"])
        in_sd = st.mde(1.0, n, alpha / m, power)
        mde[c["id"]] = {"n": n, "sd_units": round(in_sd, 3),
                        "absolute": None if sd is None else float(f"{in_sd * sd:.4g}"),
                        "critical_sd_units": round(_critical(n, alpha / m), 3)}
    return {
        "name": f"coda-{scale}",
        "scale": scale,
        "registered": datetime.date.today().isoformat(),
        "rule": f"commit this file before the first run file under benchmarks/results/coda_ablation-{scale}/runs/",
        "arms": {a: dict(spec) for a, spec in arms.items()},
        "endpoints": {e: {"measure": k, "metric": metric, "label": label} for e, (k, metric, label) in ENDPOINTS.items()},
        "contrasts": [dict(c, hypothesis="> 0") for c in CONTRASTS],
        "test": "two-sided paired t by pretraining seed on each contrast's per-seed value (probe seeds averaged "
                "within a model first)",
        "alpha": alpha,
        "family": {"correction": "holm", "members": "all contrasts above, one family", "m": m},
        "gate": {"rule": "a run whose health verdict (health.json) is not 'learning' is shown, counted and excluded; "
                         f"an arm with fewer than {st.MIN_LEARNING_RUNS} learning runs gets no verdict",
                 "min_learning_runs": st.MIN_LEARNING_RUNS},
        "verdicts": "supported (Holm p < alpha, positive); not supported (with 'inconclusive' where the MDE at the "
                    "achieved n exceeds the observed effect); no verdict (gate, or fewer than 3 pairs). "
                    "Table 2 holds on an endpoint only if both its Coda - L_inter and Coda - L_intra are supported.",
        "planned_n": {a: len(s) for a, s in seeds.items()},
        "power": {"target": power, "alpha_adjusted": f"Bonferroni alpha/m = {alpha}/{m} = {alpha / m:.5f} "
                                                     "(Holm's first step; conservative for the later ranks)"},
        "pilot": dict(pilot, sd={c["id"]: (None if pilot_sd.get(c["id"]) is None else float(f"{pilot_sd[c['id']]:.4g}"))
                                 for c in CONTRASTS}),
        "mde": mde,
    }


def _critical(n: int, alpha: float) -> float:
    """The observed effect (sd units) a paired t with n pairs must exceed to be significant at ``alpha``."""
    from scipy import stats

    return math.inf if n < 2 else float(stats.t.ppf(1 - alpha / 2, n - 1) / math.sqrt(n))


HEADER = """# Pre-registration of the Coda claims at scale {scale} (benchmarks/preregistration.py writes it, once).
# Written before any run file of benchmarks/results/coda_ablation-{scale}/runs/; the report tests exactly the
# contrasts below. Do not edit after the first run file is committed: a change is a new pre-registration.
"""


def write(path: Path, data: Mapping[str, Any]) -> Path:
    """The Coda ablation's pre-registration (``write_once`` with its header)."""
    return write_once(path, data, HEADER.format(scale=data["scale"]))


def header(claim: str, script: str, runs: str) -> str:
    """The comment block every pre-registration file starts with."""
    return (f"# Pre-registration of {claim} ({script} --preregister writes it, once).\n"
            f"# Written before any run file of {runs}; the report tests exactly the contrasts below.\n"
            "# Do not edit after the first run file is committed: a change is a new pre-registration.\n")


def write_once(path: Path, data: Mapping[str, Any], head: str) -> Path:
    """Save ``head`` + ``data`` as YAML at ``path``; an existing file is never overwritten (``FileExistsError``)."""
    import yaml

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists: a pre-registration is written once (delete it only if no run file "
                              "was committed after it, and say why in the commit)")
    path.parent.mkdir(parents=True, exist_ok=True)
    text = head + yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True, width=110)
    with open(path, "x") as f:  # "x": fails rather than overwrite, even in a race
        f.write(text)
    return path


def require_committed(path: Path, *, committed: bool = True, how: str = "--preregister, commit it") -> None:
    """Refuse confirmatory run files before the pre-registration at ``path`` exists (and, with ``committed``, is
    tracked by git with no uncommitted change).

    Raises:
        RuntimeError: naming the file and what to do.
    """
    import subprocess

    path = Path(path)
    shown = os.path.relpath(path, REPO) if path.is_absolute() else str(path)
    if not path.is_file():
        raise RuntimeError(f"{shown} must exist and be committed before the first run file: run {how}, then the runs")
    if committed:
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", str(path)], cwd=REPO, capture_output=True)
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", str(path)], cwd=REPO, capture_output=True)
        if tracked.returncode != 0 or dirty.returncode != 0:
            raise RuntimeError(f"{shown} is not committed (or has uncommitted changes): commit it before the first "
                               "run file")


def load(path: Path) -> dict[str, Any] | None:
    """The pre-registration at ``path``, or None when there is none."""
    import yaml

    path = Path(path)
    return yaml.safe_load(path.read_text()) if path.is_file() else None
