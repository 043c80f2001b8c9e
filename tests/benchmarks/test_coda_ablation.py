"""The Coda ablation benchmark: arms differ only in their objective, budgets, effect tests, the results page."""
from __future__ import annotations

import csv
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import coda_ablation as bench  # noqa: E402
import coda_ablation_report as report  # noqa: E402

from organfm.config import load_config  # noqa: E402


def _configs(tmp_path: Path, scale: bench.Scale, seed: int = 1) -> dict:
    out = {}
    for arm in (*bench.ARMS, *bench.OPTIONAL_ARMS):
        method, overrides = bench.pretrain_overrides(arm, seed, scale, source=tmp_path / "MedNIST.tar.gz",
                                                     split_file=tmp_path / "split.csv", num_train=46810,
                                                     run=tmp_path / arm)
        out[arm] = load_config(method, None, overrides)
    return out


@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_arms_share_backbone_budget_augmentation_and_seed(tmp_path: Path, name: str) -> None:
    scale = bench.SCALES[name]
    cfgs = _configs(tmp_path, scale)
    for arm, cfg in cfgs.items():
        assert cfg.backbone.name == scale.backbone
        assert cfg.trainer.max_steps == scale.steps and cfg.trainer.batch_size == scale.batch_size
        assert cfg.trainer.seed == 1 and cfg.optim.lr == scale.lr
        slower = 1 - (1 - scale.momentum) / 10  # coda-ema: a 10x slower teacher
        assert cfg.teacher.momentum == pytest.approx(slower if arm == "coda-ema" else scale.momentum)
        assert cfg.data.split == "train" and cfg.data.split_file == str(tmp_path / "split.csv")
        # the schedules' horizon ends at the last step: epochs x steps per epoch == steps
        assert math.isclose(cfg.trainer.epochs * (46810 // scale.batch_size), scale.steps)
        views = cfg.views
        assert (views.global_size, views.local_size) == (scale.global_size, scale.local_size)
        assert views.global_scale == cfgs["coda"].views.global_scale
        assert views.brightness == cfgs["coda"].views.brightness
        assert views.num_local_views == (0 if arm == "supcon" else scale.num_local_views)
    assert (cfgs["coda"].method.use_inter, cfgs["coda"].method.use_intra) == (True, True)
    assert (cfgs["inter"].method.use_inter, cfgs["inter"].method.use_intra) == (True, False)
    assert (cfgs["intra"].method.use_inter, cfgs["intra"].method.use_intra) == (False, True)
    assert cfgs["dino"].method.out_dim == cfgs["coda"].method.out_dim == scale.out_dim
    assert cfgs["coda"].method.supcon_denominator == "all" and cfgs["coda-neg"].method.supcon_denominator == "negatives"
    assert cfgs["coda-ema"].teacher.momentum == pytest.approx({"cpu": 0.99, "gpu": 0.9996}[name])


def test_finetune_epochs_give_the_same_step_budget_per_fraction() -> None:
    s = bench.SCALES["cpu"]  # 12 steps of batch 64, 1..8 epochs
    assert bench.finetune_epochs(39, s) == 8           # 1 step per epoch, capped at 8 epochs
    assert bench.finetune_epochs(388, s) == 2          # 6 steps per epoch
    assert bench.finetune_epochs(776, s) == 1          # 12 steps per epoch
    assert bench.finetune_epochs(1941, s) == 1         # 30 steps per epoch: never less than one epoch
    g = bench.SCALES["gpu"]  # 600 steps of batch 32, at most 50 epochs
    assert bench.finetune_epochs(1941, g) == 10 and bench.finetune_epochs(39, g) == 50


def test_paired_effect_and_verdict() -> None:
    e = report.paired(np.array([0.9, 0.8, 0.7]), np.array([0.8, 0.8, 0.5]))
    assert e["n"] == 3 and e["wins"] == 2
    assert e["mean"] == pytest.approx(0.1) and e["sd"] == pytest.approx(0.1)
    # paired t: mean / (sd / sqrt(n)) = sqrt(3) with 2 dof -> two-sided p = 0.2254
    assert e["p"] == pytest.approx(0.2254, abs=1e-3)
    assert report.verdict(e) == "same direction, not significant"
    assert report.verdict({"mean": -0.01, "p": 0.01, "wins": 1, "n": 10}) == "**not reproduced: opposite, p < 0.05**"
    assert report.verdict({"mean": 0.02, "p": 0.01, "wins": 9, "n": 10}) == "reproduced (p < 0.05)"
    assert report.verdict({"mean": -0.01, "p": 0.3, "wins": 3, "n": 10}).startswith("**not reproduced** (opposite")
    # one bad run drags the mean below zero while 9 of 10 runs favour the claim: neither verdict, "mixed"
    mixed = report.paired(np.array([0.9] * 9 + [0.5]), np.array([0.89] * 9 + [0.7]))
    assert mixed["mean"] < 0 and mixed["wins"] == 9 and report.verdict(mixed).startswith("mixed")
    # one pretraining seed and a deterministic measure: ten equal differences, nothing to test
    flat = report.paired(np.full(10, 0.85), np.full(10, 0.9))
    assert not math.isfinite(flat["p"]) and report.pvalue(flat["p"]) == "–"
    assert report.verdict(flat) == "**not reproduced** (opposite sign), no run-to-run spread to test"
    assert report.fmt(np.array([0.9, 0.8])) == "85.00 ± 7.07"
    assert report.fmt(None) == "–"


def test_leak_check_refuses_test_images_seen_in_pretraining(tmp_path: Path) -> None:
    split = tmp_path / "split.csv"
    with open(split, "w", newline="") as f:
        csv.writer(f).writerows([["key", "group", "split"], ["a.jpeg", "g1", "train"], ["b.jpeg", "g2", "test"]])
    ok = SimpleNamespace(splits={"test": SimpleNamespace(records=[SimpleNamespace(key="b.jpeg")])})
    bench.check_no_leak(split, ok)
    leaky = SimpleNamespace(splits={"test": SimpleNamespace(records=[SimpleNamespace(key="a.jpeg")])})
    with pytest.raises(RuntimeError, match="1 MedNIST test images"):
        bench.check_no_leak(split, leaky)


def _fake_results(seed: int = 0, arms: tuple[str, ...] = bench.ALL_ARMS) -> dict:
    rng = np.random.default_rng(seed)
    cells = {}
    for i, arm in enumerate(arms):
        base = 0.7 + 0.02 * i
        run = lambda: list(base + 0.01 * rng.standard_normal(4))  # noqa: E731
        for s in ("1-shot", "5-shot", "1%", "10%"):
            cells[f"mednist|few-shot linear|{s}|{arm}"] = {"accuracy": run()}
        cells[f"pneumonia|linear|100%|{arm}"] = {"auc": run()}
        for f in report.FRACTIONS:
            cells[f"pneumonia|fine-tune|{f}|{arm}"] = {"auc": run()}
            cells[f"pneumonia|linear|{f}|{arm}"] = {"auc": run()}
        cells[f"ct-organs|clusters|crops|{arm}"] = {"knn_accuracy": run(), "nmi": run()}
        cells[f"ct-organs|U-Net segmentation|27 slices|{arm}"] = {"mean_dice": run()}
    scale = dict(vars(bench.SCALES["cpu"]), name="cpu", quick=False)
    seconds = {"pretrain coda-s0": 120.0, "evaluate coda": 60.0,
               "pretrain coda-neg-s0": 30.0, "evaluate coda-neg": 30.0}
    maps = {arm: rng.standard_normal((24, 2)).round(3).tolist() for arm in arms[:2]}
    return {"cells": cells, "scale": scale, "seconds": seconds, "mednist_split": {"sha256": "ab" * 32, "train": 46810},
            "tsne": maps, "tsne_labels": np.repeat(np.arange(3), 8).tolist(),
            "tsne_names": ["liver", "spleen", "colon"]}


def test_report_rewrites_only_its_block_and_meets_the_results_page_contract(tmp_path: Path) -> None:
    docs = tmp_path / "docs" / "results.md"
    docs.parent.mkdir()
    docs.write_text("# Results\n\n## RaSD transfer\n\nkept\n")
    (tmp_path / "coda_ablation-cpu").mkdir()
    args = dict(out=tmp_path / "coda_ablation-cpu", docs=docs, command="python benchmarks/coda_ablation.py --scale cpu")
    report.write_report(_fake_results(), **args)
    page = docs.read_text()
    page = page + "\nHand-written discussion.\n"
    docs.write_text(page)
    report.write_report(_fake_results(1), **args)
    again = docs.read_text()
    assert again.count("<!-- coda-ablation-cpu:begin -->") == 1 and "Hand-written discussion." in again
    assert "## RaSD transfer\n\nkept" in again and again != page
    for word in ("inter", "intra", "DINO", "SupCon", "random", "Pneumonia", "±", "benchmarks/coda_ablation.py"):
        assert word in again
    # the paper's Table 2 numbers sit beside ours, and every claim row carries a verdict
    assert "97.78 ± 0.77" in again and "84.85 ± 0.94" in again
    claims = [line for line in again.splitlines() if line.startswith("| both > L_inter")]
    assert len(claims) == 3 and all("reproduced" in line or "significant" in line for line in claims)
    for fig in ("coda_ablation-cpu_fewshot.png", "coda_ablation-cpu_tsne.png"):
        assert (docs.parent / "figures" / fig).stat().st_size > 1000


def test_mednist_split_is_saved_once_and_reused(mednist_archive: Path, tmp_path: Path) -> None:
    root = mednist_archive.parent.parent
    path, n_train = bench.save_mednist_split(root, tmp_path)
    first = path.read_text()
    rows = first.splitlines()[1:]
    assert n_train == sum(r.endswith(",train") for r in rows) and 0.79 < n_train / len(rows) < 0.81
    assert len(rows) == 58954 - 440  # MedNIST minus its exact duplicates
    assert bench.save_mednist_split(root, tmp_path) == (path, n_train) and path.read_text() == first


def test_report_lists_optional_variants_against_coda_and_times_them_apart(tmp_path: Path) -> None:
    data = _fake_results(arms=(*bench.ALL_ARMS, "coda-neg"))
    text = report.write_report(data, out=tmp_path, docs=None, command="python benchmarks/coda_ablation.py --scale cpu")
    rows = [line for line in text.splitlines() if line.startswith("| Coda, negatives-only denominator |")]
    assert len(rows) == 4 + 7  # Table 2, Table 1 (fine-tune, linear), MedNIST; seven measures in "Variants tried"
    rows = rows[4:]
    assert rows[0].startswith("| Coda, negatives-only denominator | both (Coda) | Pneumonia AUC, linear |")
    cells = data["cells"]
    e = report.paired(np.asarray(cells["pneumonia|linear|100%|coda-neg"]["auc"]),
                      np.asarray(cells["pneumonia|linear|100%|coda"]["auc"]))
    assert f"{100 * e['mean']:+.2f} ± {100 * e['sd']:.2f}" in rows[0]
    assert "pretraining 2.0 min, evaluation 1.0 min, total 3.0 min (+ 1.0 min for the optional arms)" in text


def test_the_page_names_every_recorded_command_and_a_call_records_its_own() -> None:
    args, scale = bench.parse_args(["--scale", "cpu", "--report-only"])
    assert bench.command_line(args) == "python benchmarks/coda_ablation.py --scale cpu"
    args, scale = bench.parse_args(["--scale", "cpu", "--arms", "coda-neg,coda-student", "--protocols",
                                    "pneumonia-linear,clusters", "--steps", "256", "--report-only"])
    assert scale.steps == 256 and scale.protocols == ("pneumonia-linear", "clusters")
    assert bench.command_line(args) == ("python benchmarks/coda_ablation.py --scale cpu --steps 256 "
                                        "--protocols pneumonia-linear,clusters --arms coda-neg,coda-student")
    # results written before calls were recorded: the scale's default call, with its protocol subset
    data = _fake_results()
    data["scale"] = dict(data["scale"], name="gpu-short", protocols=["pneumonia-linear"])
    assert bench.legacy_command(data) == ("python benchmarks/coda_ablation.py --scale gpu-short "
                                          "--protocols pneumonia-linear")
    with pytest.raises(SystemExit):
        bench.parse_args(["--scale", "cpu", "--arms", "coda,nonsense", "--report-only"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--scale", "cpu", "--data", "/nowhere"])  # no MedNIST there: refused before any work


def test_a_cached_run_of_another_recipe_is_refused_not_reused(tmp_path: Path) -> None:
    run = tmp_path / "coda-s0"
    run.mkdir()
    (run / "bench_recipe.json").write_text('{"method": "coda", "overrides": ["teacher.momentum=0.996"]}')
    with pytest.raises(RuntimeError, match="another recipe"):
        bench.pretrain_arm("coda", 0, bench.SCALES["cpu"], run=run, source=tmp_path / "MedNIST.tar.gz",
                           split_file=tmp_path / "split.csv", num_train=46810)


def test_report_only_rebuilds_the_page_from_results_json_alone(tmp_path: Path) -> None:
    import json

    out, docs = tmp_path / "coda_ablation-cpu", tmp_path / "docs" / "results.md"
    out.mkdir()
    data = dict(_fake_results(), commands=["python benchmarks/coda_ablation.py --scale cpu",
                                           "python benchmarks/coda_ablation.py --scale cpu --arms coda-neg"])
    (out / "results.json").write_text(json.dumps(data))
    # no data folder, no model: everything the page shows is in results.json
    assert bench.main(["--scale", "cpu", "--out", str(out), "--docs", str(docs), "--data", str(tmp_path / "none"),
                       "--report-only"]) == 0
    page = docs.read_text()
    assert "sha256 `abababababababab`" in page and "46,810 images" in page
    assert ("Regenerate: `python benchmarks/coda_ablation.py --scale cpu && "
            "python benchmarks/coda_ablation.py --scale cpu --arms coda-neg`") in page
    linear = [line for line in page.splitlines() if line.startswith("| both (Coda) | linear probe |")]
    cells = data["cells"]
    assert len(linear) == 1 and report.fmt(np.asarray(cells["pneumonia|linear|1%|coda"]["auc"])) in linear[0]
    assert (docs.parent / "figures" / "coda_ablation-cpu_tsne.png").stat().st_size > 1000
    # a run in another folder writes a block of its own and leaves this one alone
    other = tmp_path / "coda_ablation-cpu-256steps"
    other.mkdir()
    (other / "results.json").write_text(json.dumps(_fake_results(1)))
    assert bench.main(["--scale", "cpu", "--out", str(other), "--docs", str(docs), "--report-only"]) == 0
    both = docs.read_text()
    assert both.startswith(page.rstrip("\n")) and "<!-- coda-ablation-cpu-256steps:begin -->" in both
    assert "<!-- coda-ablation-cpu:begin -->" in both
    with pytest.raises(SystemExit):  # an empty output folder has nothing to report
        bench.main(["--scale", "cpu", "--out", str(tmp_path / "empty"), "--report-only"])


def test_short_gpu_scale_keeps_the_paper_model_and_runs_only_frozen_protocols() -> None:
    short, paper = bench.SCALES["gpu-short"], bench.SCALES["gpu"]
    for field in ("backbone", "batch_size", "global_size", "local_size", "num_local_views", "out_dim", "hidden_dim",
                  "lr"):
        assert getattr(short, field) == getattr(paper, field)
    assert set(short.protocols) == {"mednist-linear", "pneumonia-linear", "clusters"}
    assert bench.SCALES["cpu"].protocols == bench.PROTOCOLS == paper.protocols


def test_student_arm_evaluates_the_student_of_its_base_arms_runs(tmp_path: Path) -> None:
    import dataclasses

    import torch

    from tests.engine.test_pretrain import run

    scale = dataclasses.replace(bench.SCALES["cpu"], backbone="test_convnext", pretrain_seeds=1)
    run(tmp_path / "pretrain", "coda-s0", extra=["trainer.max_steps=2"])
    (teacher_make, teacher_c), = bench.encoders_of("coda", tmp_path, scale)
    (student_make, student_c), = bench.encoders_of("coda-student", tmp_path, scale)
    assert (tmp_path / "pretrain" / "coda-s0" / "export-student" / "backbone.json").is_file()
    assert student_c["network"] == "student" and teacher_c["network"] == "teacher"
    assert student_c["model_hash"] != teacher_c["model_hash"]
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(student_make().eval()(x), teacher_make().eval()(x))
    # a second call reuses the export rather than writing it again
    mtime = (tmp_path / "pretrain" / "coda-s0" / "export-student" / "backbone.safetensors").stat().st_mtime_ns
    bench.encoders_of("coda-student", tmp_path, scale)
    assert (tmp_path / "pretrain" / "coda-s0" / "export-student" / "backbone.safetensors").stat().st_mtime_ns == mtime


def test_evaluate_arm_runs_only_the_chosen_protocols_pairs_runs_with_encoders_and_scales_mednist_fractions(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    import torch

    labels = torch.arange(6).repeat(100)  # a pool of 600 MedNIST train images, 100 per class
    split = lambda n: SimpleNamespace(labels=labels[:n], images=torch.zeros(n, 1, 8, 8))  # noqa: E731
    data = {"mednist": SimpleNamespace(splits={"train": split(600), "val": split(60), "test": split(60)},
                                       class_names=[str(i) for i in range(6)]),
            "mednist_train_total": 6000}  # the pool is a tenth of the train split
    calls = []

    def fake_probe(feats, task, idx, seed, device="cpu", epochs=100):
        assert epochs == scale.probe_epochs
        calls.append((float(feats["train"][0, 0]), len(idx), seed))
        return {"accuracy": 0.5}

    monkeypatch.setattr(bench, "probe", fake_probe)
    # encoder p's features are all p: the probe sees which encoder a run used
    monkeypatch.setattr(bench, "extract_features", lambda enc, images, **kw: torch.full((len(images), 4), enc.p))
    encoders = [(lambda p=p: SimpleNamespace(p=float(p)), {"mean": [0.5], "std": [0.5]}) for p in range(3)]
    scale = dataclasses.replace(bench.SCALES["cpu"], protocols=("mednist-linear",), runs=4)
    results = bench.Results(tmp_path / "results.json")
    bench.evaluate_arm("coda", encoders, data, results, scale)
    settings = ("1-shot", "5-shot", "1%", "10%")
    assert sorted(results.cells) == sorted(f"mednist|few-shot linear|{s}|coda" for s in settings)
    by_setting = [calls[i:i + 4] for i in range(0, 16, 4)]
    assert [[c[0] for c in runs] for runs in by_setting] == [[0.0, 1.0, 2.0, 0.0]] * 4  # run d: encoder d mod 3
    assert [c[2] for c in calls[:4]] == [0, 1, 2, 3]                                     # and downstream seed d
    # 1-shot, 5-shot; 1 % of 6,000 = 60 images (10 a class), 10 % = 600: the whole pool
    assert [runs[0][1] for runs in by_setting] == [6, 30, 60, 600]
    bench.evaluate_arm("coda", encoders, data, results, scale)  # cached cells are not computed again
    assert len(calls) == 16
