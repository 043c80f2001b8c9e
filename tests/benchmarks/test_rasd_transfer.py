"""The RaSD transfer benchmark: recipe, own-init check, pre-registration and the report read from run files."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import rasd_transfer as bench  # noqa: E402


def fake_run(arm: str, seed: int, values: dict[str, list[float]], *, verdict: str | None = "learning",
             extra: dict[str, dict[str, list[float]]] | None = None) -> dict:
    """A run file as ``run_seed`` writes it, with the given endpoint values (probe seeds)."""
    evaluation: dict[str, dict] = {}
    for e, v in values.items():
        task, protocol, setting, metric, _ = bench.ENDPOINTS[e]
        row = {"protocol": protocol, "setting": setting or "all", "values": {metric: v, **(extra or {}).get(e, {})}}
        evaluation.setdefault(task, {"overrides": [], "seconds": 1.0, "rows": []})["rows"].append(row)
    return {"arm": arm, "seed": seed, "pilot": False,
            "pretrain": {"steps": 300} if arm == "rasd" else None,
            "health": {"verdict": verdict if arm == "rasd" else None, "knn_step0": 0.3, "knn_final": 0.6,
                       "knn_majority": 0.13, "distance": 0.2},
            "init_check": {"same_init": True, "max_abs_diff": 0.0},
            "evaluation": evaluation,
            "timings": {"pretrain_s": 90.0 if arm == "rasd" else 0.0, "evaluation_s_both_arms": 200.0,
                        "seed_total_s": 290.0}}


def design(rasd_gain: dict[str, list[float]], verdicts=("learning",) * 3) -> list[dict]:
    """Three seeds; scratch at 0.5 + seed noise, RaSD at scratch + the given per-seed gain."""
    runs = []
    for i, seed in enumerate((0, 1, 2)):
        base = {e: [0.5 + 0.01 * i, 0.52 + 0.01 * i] for e in bench.ENDPOINTS}
        runs.append(fake_run("scratch", seed, base))
        runs.append(fake_run("rasd", seed, {e: [x + rasd_gain[e][i] for x in v] for e, v in base.items()},
                             verdict=verdicts[i]))
    return runs


def test_recipe_is_the_small_rasd_config_with_seed_steps_and_folder(tmp_path: Path) -> None:
    from organfm.config import load_config

    cfg = load_config(None, REPO / bench.RECIPE, bench.pretrain_overrides(7, tmp_path / "r"))
    assert cfg.method_name == "rasd" and cfg.method.num_labels == 8 and cfg.backbone.name == bench.ARCH == "unet_small"
    assert cfg.trainer.seed == 7 and cfg.trainer.max_steps == bench.STEPS == 300
    assert cfg.trainer.out_dir == str(tmp_path / "r") and cfg.data.source == "synthetic"
    # every endpoint is evaluated at the pretraining seed (the scratch arm's init seed)
    for task in bench.TASKS:
        assert "seed=7" in bench.task_overrides(task, 7, data_root=tmp_path, out=tmp_path / task)


def test_init_check_tells_the_runs_own_init_from_another_seed(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from organfm.features.encoders import load_encoder

    make, _ = load_encoder(f"random:{bench.ARCH}", seed=3)
    params = [p.detach().contiguous() for p in make().parameters()]
    save_file({str(i): t for i, t in enumerate(params)}, str(tmp_path / "health-initial.safetensors"))
    same, other = bench.init_check(tmp_path, 3), bench.init_check(tmp_path, 4)
    assert same["same_init"] is True and same["max_abs_diff"] == 0.0
    assert other["same_init"] is False and other["max_abs_diff"] > 0
    assert bench.init_check(tmp_path / "none", 3)["same_init"] is None


def test_one_sided_paired_p_holm_and_verdicts_from_run_files() -> None:
    from scipy import stats

    gains = {"ct_dice": [0.10, 0.12, 0.11], "pneumonia_auc": [-0.02, -0.03, -0.01], "mednist_5shot": [0.05, -0.04, 0.01]}
    res = bench.analyse(design(gains))
    rows = {r["endpoint"]: r for r in res["rows"]}
    for e, g in gains.items():
        want = stats.ttest_1samp(g, 0.0, alternative="greater").pvalue
        assert rows[e]["p"] == pytest.approx(want, rel=1e-6)
        assert rows[e]["comparison"].n_a == 3 and rows[e]["comparison"].delta == pytest.approx(sum(g) / 3)
    ps = [rows[e]["p"] for e in gains]
    assert [rows[e]["p_holm"] for e in gains] == pytest.approx(bench.st.holm(ps))
    assert rows["ct_dice"]["verdict"] == "supported"
    assert rows["pneumonia_auc"]["verdict"].startswith("not supported")
    assert rows["pneumonia_auc"]["p"] > 0.9  # the wrong direction is not evidence for RaSD > scratch
    # the MDE is in sd units of the paired differences, and in the endpoint's units through their sd
    c = rows["mednist_5shot"]["comparison"]
    assert rows["mednist_5shot"]["mde"] == pytest.approx(rows["mednist_5shot"]["mde_sd"] * c.sd)
    assert rows["mednist_5shot"]["mde_sd"] > bench.one_sided_mde(1.0, 6, 0.05 / 3)  # fewer pairs, larger MDE


def test_a_run_that_is_not_learning_is_left_out_and_blocks_below_three() -> None:
    gains = {e: [0.1, 0.12, 0.11] for e in bench.ENDPOINTS}
    res = bench.analyse(design(gains, verdicts=("learning", "not learning yet", "learning")))
    assert res["gate"].kept == (0, 2) and res["gate"].excluded == ((1, "not learning yet"),)
    for row in res["rows"]:
        assert row["comparison"].n_a == 2 and row["verdict"].startswith("no verdict")


def test_report_states_n_pretraining_runs_and_balanced_accuracy_beside_accuracy(tmp_path: Path) -> None:
    gains = {e: [0.1, 0.12, 0.11] for e in bench.ENDPOINTS}
    extra = {"mednist_5shot": {"balanced_accuracy": [0.4, 0.41], "majority_accuracy": [0.17, 0.17]}}
    runs = design(gains)
    for r in runs:
        for task in r["evaluation"].values():
            for row in task["rows"]:
                if row["protocol"] == "fewshot-linear":
                    row["values"].update(extra["mednist_5shot"])
    md = bench.report(runs, prereg={"registered": "2026-12-01", "alpha": 0.05}, command="python x --report")
    assert "n = 3 pretraining runs" in md and "n = 1 pretraining run" not in md
    assert "0.405 ± 0.000" in md and "0.170 ± 0.000" in md  # balanced accuracy and majority rate, per arm
    assert "learning" in md and "yes (largest weight difference 0)" in md
    # the page keeps everything outside its markers
    page = tmp_path / "results.md"
    page.write_text(f"# Results\nbefore\n{bench.BEGIN}\nold, hand-edited\n{bench.END}\nafter\n")
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    import json
    for r in runs:
        (out / "runs" / f"{r['arm']}-seed{r['seed']}.json").write_text(json.dumps(r))
    bench.write_report(out, page, command="python x --report")
    text = page.read_text()
    assert "before" in text and "after" in text and "hand-edited" not in text and "n = 3 pretraining runs" in text
    assert (out / "results.md").read_text().strip() in text


def test_preregistration_written_once_and_required(tmp_path: Path) -> None:
    path = tmp_path / "rasd-small.yaml"
    with pytest.raises(RuntimeError, match="must exist"):
        bench.require_preregistration(path, committed=False)
    data = bench.build_preregistration([])
    assert data["family"]["m"] == len(bench.CONTRASTS) == 3 and data["planned_n"] == {"rasd": 3, "scratch": 3}
    assert all(c["hypothesis"] == "> 0" for c in data["contrasts"]) and "one-sided" in data["test"]
    assert data["mde"]["rasd-scratch:ct_dice"]["sd_units"] == pytest.approx(
        bench.one_sided_mde(1.0, 3, 0.05 / 3), abs=1e-3)
    bench.write_preregistration(path, data)
    bench.require_preregistration(path, committed=False)
    with pytest.raises(FileExistsError):
        bench.write_preregistration(path, data)
    assert math.isfinite(data["mde"]["rasd-scratch:ct_dice"]["critical_sd_units"])
