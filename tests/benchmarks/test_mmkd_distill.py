"""The MMKD benchmark's design, statistics and report on hand-made run files (no pretraining here)."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import claims as st  # noqa: E402
import mmkd_distill as bench  # noqa: E402


def _run(model: str, seed: int, value: float, *, verdict: str = "learning", ct: float | None = None,
         xr: float | None = None, alignment: float | None = None) -> dict:
    """A run file whose endpoints are all ``value`` (or ``ct`` / ``xr`` on that domain's two endpoints)."""
    evaluation: dict = {}
    for e, (ev, protocol, setting, metric, domain, _) in bench.ENDPOINTS.items():
        v = {"ct": ct, "xr": xr}[domain]
        v = value if v is None else v
        values = {metric: [v, v]}
        if metric in ("accuracy", "auc"):
            values |= {"accuracy": [v], "balanced_accuracy": [v - 0.01], "auc": [v], "majority_accuracy": [0.5]}
        evaluation.setdefault(ev, {"rows": []})["rows"].append({"protocol": protocol, "setting": setting,
                                                                 "values": values})
    run = {"model": model, "seed": seed, "health": {"verdict": verdict}, "evaluation": evaluation,
           "timings": {"pretrain_s": 60.0, "evaluation_s": 30.0}}
    if alignment is not None:
        run["alignment"] = {"same_image": alignment, "shuffled": 0.1}
    return run


def _runs(student_shift: float = 0.1) -> list[dict]:
    runs = [_run("ct", s, 0.6 + 0.01 * s, ct=0.9 + 0.01 * s) for s in (0, 1)]
    runs += [_run("xr", s, 0.55 + 0.01 * s, xr=0.85 - 0.01 * s) for s in (0, 1)]
    runs += [_run("all", s, 0.8 + 0.02 * s) for s in (0, 1)]  # best on the mean over domains: 0.81
    for arm in bench.ARMS:
        runs += [_run(arm, s, 0.81 + student_shift + 0.005 * s, alignment=0.3) for s in range(5)]
    return runs


def test_teachers_differ_in_architecture_and_specialists_cover_disjoint_domains():
    archs = {t.arch for t in bench.TEACHERS.values()}
    assert len(archs) == len(bench.TEACHERS)
    specialists = {t.specialist_of: t for t in bench.TEACHERS.values() if t.specialist_of}
    assert set(specialists) == set(bench.DOMAINS)
    assert all(t.domains == (d,) for d, t in specialists.items())
    classes = [set(v[1]) for v in bench.DOMAINS.values()]
    assert not set.intersection(*classes)
    assert all(sum(spec[4] == d for spec in bench.ENDPOINTS.values()) == 2 for d in bench.DOMAINS)


def test_student_recipe_distils_every_teacher_of_its_teacher_seed_by_domain(tmp_path):
    manifests = {n: tmp_path / f"{n}.csv" for n in ("ct", "xr", "union")}
    config, overrides = bench.recipe("student_ntxent", 3, out=tmp_path, manifests=manifests)
    assert config == bench.STUDENT_RECIPE and "method.projector_contrastive=1.0" in overrides
    teachers = next(o for o in overrides if o.startswith("method.teachers="))
    for t in bench.TEACHERS:
        assert f"{t}={tmp_path / 'pretrain' / f'teacher-{t}-s1'}" in teachers  # seed 3 -> teachers of seed 1
    assert f"data={manifests['union']}" in overrides and "trainer.seed=3" in overrides
    config, overrides = bench.recipe("xr", 1, out=tmp_path, manifests=manifests)
    assert config == bench.TEACHER_RECIPE and f"data={manifests['xr']}" in overrides
    assert "backbone.name=test_resnet" in overrides
    _, overrides = bench.recipe("all", 0, out=tmp_path, manifests=manifests)
    assert f"data={manifests['union']}" in overrides
    yaml = __import__("yaml").safe_load((bench.REPO / bench.STUDENT_RECIPE).read_text())
    assert yaml["method"]["fd_scale"] == "sum" and yaml["method"]["teacher_filter"] == "column"
    assert yaml["backbone"]["name"] == bench.STUDENT_ARCH


def test_domain_scores_and_the_mean_over_domains():
    s = bench.scores(_run("ct", 0, 0.5, ct=0.9))
    assert s["ct"] == pytest.approx(0.9) and s["xr"] == pytest.approx(0.5)
    assert s[bench.MEAN] == pytest.approx(0.7)


def test_reference_is_the_best_teacher_on_the_mean_over_domains_and_welch_holm():
    res = bench.analyse(_runs())
    assert res["reference"] == "all"
    assert [r["arm"] for r in res["table1"]] == list(bench.ARMS)
    row = res["table1"][0]
    a = [0.91 + 0.005 * s for s in range(5)]
    b = [0.8, 0.82]
    assert row["delta"] == pytest.approx(np.mean(a) - np.mean(b))
    assert row["p"] == pytest.approx(st.welch_t(a, b)[2])
    assert row["p_holm"] == pytest.approx(st.holm([r["p"] for r in res["table1"]])[0])
    assert row["n_a"] == 5 and row["n_b"] == 2
    assert math.isfinite(row["mde_sd"]) and row["mde_sd"] > 0
    # table 2: each arm against each specialist on its own domain (4 rows, one Holm family)
    assert [(r["arm"], r["teacher"], r["column"]) for r in res["table2"]] == [
        (arm, t, t) for arm in bench.ARMS for t in ("ct", "xr")]
    ct_row = res["table2"][0]
    assert ct_row["b"][0] == pytest.approx(0.905)


def test_a_teacher_that_is_not_learning_is_left_out_and_cannot_be_the_reference():
    runs = _runs()
    runs = [dict(r, health={"verdict": "stalled"}) if r["model"] == "all" and r["seed"] == 1 else r for r in runs]
    res = bench.analyse(runs)
    assert res["gates"]["all"].blocks and res["reference"] == "ct"  # ct: (0.905 + 0.605) / 2 > xr's 0.6975


def test_welch_mde_shrinks_with_n_and_matches_its_power():
    from scipy import stats

    small, large = bench.welch_mde(5, 2, 0.05), bench.welch_mde(20, 20, 0.05)
    assert large < small and math.isinf(bench.welch_mde(5, 1, 0.05))
    # at n = 20 vs 20 the Welch df is 38 and the MDE is near (z + z_power) * sqrt(2 / 20)
    assert large == pytest.approx((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * math.sqrt(0.1), rel=0.05)


def test_verdicts():
    gate = st.learning_seeds({0: "learning", 1: "learning", 2: "learning"})
    assert bench.welch_verdict(0.1, 0.01, 2.0, 0.01, alpha=0.05, gates=[gate]) == "supported"
    assert "opposite sign" in bench.welch_verdict(-0.1, 0.01, 2.0, 0.01, alpha=0.05, gates=[gate])
    assert "inconclusive" in bench.welch_verdict(0.01, 0.5, 2.0, 0.01, alpha=0.05, gates=[gate])
    short = st.learning_seeds({0: "learning"}, min_runs=2)
    assert bench.welch_verdict(0.1, 0.01, 2.0, 0.01, alpha=0.05, gates=[short]).startswith("no verdict")


def test_code_alignment_tells_aligned_codes_from_shuffled(tmp_path):
    import torch

    from organfm.batches.features import FIT_FILE

    rng = np.random.default_rng(0)
    shared = rng.normal(size=(200, 8))
    codes = [shared + 0.1 * rng.normal(size=shared.shape), shared + 0.1 * rng.normal(size=shared.shape)]
    for k, c in enumerate(codes):
        np.save(tmp_path / f"teacher-{k}.npy", (c / np.linalg.norm(c, axis=1, keepdims=True)).astype(np.float32))
    torch.save({"names": ["a", "b"]}, tmp_path / FIT_FILE)
    al = bench.code_alignment(tmp_path)
    assert al["same_image"] > 0.9 and abs(al["shuffled"]) < 0.2 and set(al["pairs"]) == {"a-b"}


def test_report_names_the_preregistered_reference_and_n_for_teachers_and_students():
    runs = [r for r in _runs() if not (r["model"] == "student_ntxent" and r["seed"] >= 3)]
    md = bench.report(runs, prereg={"registered": "2026-12-01", "alpha": 0.05}, command="python x")
    low = md.lower()
    assert md.startswith("## MMKD") and "pre-registered reference: teacher `all`" in low
    assert __import__("re").search(r"teacher[^\n]*n = [2-9]", low)  # what ../shared/acceptance/mmkd-caches greps
    assert "`student_ntxent` n = 3" in md and "partial" in low
    assert "balanced accuracy" in low and "majority rate" in low and "| 0.300 ± 0.000 |" in md
    # with fewer than 2 runs of every teacher, the acceptance's pattern must not match (students' n is elsewhere)
    md = bench.report([r for r in runs if r["model"] not in bench.TEACHERS or r["seed"] == 0], prereg=None,
                      command="python x")
    assert not __import__("re").search(r"teacher[^\n]*n = [2-9]", md.lower())


def test_preregistration_is_written_once_and_required(tmp_path):
    path = tmp_path / "p.yaml"
    data = bench.build_preregistration()
    assert data["planned_n"] == {"teachers": 2, "students": 5}
    assert data["primary"]["family"]["m"] == 2 and data["secondary"]["family"]["m"] == 4
    bench.write_preregistration(path, data)
    with pytest.raises(FileExistsError):
        bench.write_preregistration(path, data)
    with pytest.raises(RuntimeError):
        bench.require_preregistration(tmp_path / "missing.yaml")


def test_report_sets_every_model_beside_its_architecture_at_random_init():
    inits = [{**_run(name, s, 0.4 + 0.1 * s), "kind": "init"} for name in bench.init_architectures() for s in (0, 1)]
    md = bench.report(_runs(), prereg=None, command="python x", inits=inits)
    floor = [line for line in md.splitlines() if line.startswith("| teacher `all`") and line.count("|") == 12]
    # `all` trained: 0.80, 0.82 -> 0.810; its init: 0.40, 0.50 -> 0.450; the difference +0.360
    assert len(floor) == 1 and "| 0.810 ± 0.014 |" in floor[0] and "| 0.450 ± 0.071 |" in floor[0]
    assert floor[0].rstrip().endswith("| +0.360 |")
    students = [line for line in md.splitlines() if line.startswith("| student (NT-Xent") and line.count("|") == 12]
    assert len(students) == 1 and f"`{bench.STUDENT_ARCH}`" in students[0]
    assert "at or below" not in md  # every trained model is above its floor here
    below = bench.report(_runs(), prereg=None, command="python x",
                         inits=[{**_run(name, s, 0.95), "kind": "init"} for name in bench.init_architectures() for s in (0, 1)])
    assert "**`ct`, `xr`, `all`, `student`, `student_ntxent` end at or below their own architecture" in below
    assert "no `random:` evaluation yet" in bench.report(_runs(), prereg=None, command="python x")


def test_init_runs_evaluate_the_random_architecture_once(tmp_path, monkeypatch):
    calls = []

    def evaluate(spec, name, **kw):
        calls.append((spec, name, kw["seed"]))
        return {"mednist_ct": {"task": "t", "overrides": ["a=1"], "seconds": 1.0, "rows": []}}

    monkeypatch.setattr(bench, "evaluate", evaluate)
    path = bench.run_init("xr", 1, out=tmp_path, data_root=tmp_path)
    assert calls == [(f"random:{bench.TEACHERS['xr'].arch}", "xr", 1)]
    record = json.loads(path.read_text())
    assert record["kind"] == "init" and record["seed"] == 1 and path == bench.init_file(tmp_path, "xr", 1)
    bench.run_init("xr", 1, out=tmp_path, data_root=tmp_path)  # kept: not evaluated again
    assert len(calls) == 1
