"""benchmarks/triad_3d.py: the geometry, the designs and their pre-registrations, and the report from fake run
files (markers, n, balanced accuracy, the scratch-above-majority check, the health gate, one-sided paired t with
Holm, the segmentation endpoint of the second design)."""
from __future__ import annotations

import json
import math

import pytest

import benchmarks.triad_3d as tb

BEGIN, END = tb.V1.begin, tb.V1.end


def test_geometry_is_a_quarter_of_the_papers():
    assert tb.bottleneck() == 3  # 24^3 through strides 1, 2, 2, 2 (the paper: 96^3 at stride 32)
    for design in tb.DESIGNS.values():
        o = tb.recipe_overrides("triad_notext", 3, design=design, run=tb.REPO / "x", data_root=tb.REPO)
        assert "method.cube=24" in o and "method.mask_patch_size=4" in o and "method.text_weight=0.0" in o
        assert "method.encoder_strides=[1, 2, 2, 2]" in o and "trainer.seed=3" in o
        epochs = float(next(x for x in o if x.startswith("trainer.epochs=")).split("=")[1])
        assert abs(epochs * tb.steps_per_epoch() - design.steps) < 1  # the schedule ends at the last step
        assert f"trainer.max_steps={design.steps}" in o
        assert "method.text_weight=0.1" in tb.recipe_overrides("triad_text", 0, design=design, run=tb.REPO,
                                                               data_root=tb.REPO)


def test_the_second_design_bounds_the_reconstruction_and_weights_its_readouts():
    v1, v2 = tb.V1, tb.V2
    o1 = tb.recipe_overrides("triad_notext", 5, design=v1, run=tb.REPO, data_root=tb.REPO)
    o2 = tb.recipe_overrides("triad_notext", 5, design=v2, run=tb.REPO, data_root=tb.REPO)
    assert set(o2) - set(o1) == {"method.reconstruction_range=[0.0, 1.0]", "trainer.max_steps=1500",
                                 *(x for x in o2 if x.split("=")[0] in ("trainer.epochs", "optim.warmup_epochs",
                                                                        "trainer.monitor_every",
                                                                        "trainer.checkpoint_every",
                                                                        "trainer.log_every"))}
    assert not any("reconstruction_range" in x for x in o1)
    assert {"finetune3d.class_weight=balanced", "finetune3d.monitor=auc"} <= set(v2.readouts["linear"])
    assert {"finetune3d.class_weight=null", "finetune3d.monitor=accuracy"} <= set(v1.readouts["linear"])
    assert all("finetune3d.monitor=balanced_accuracy" in v2.readouts[r] for r in ("ft50", "ft200"))
    assert "segmentation_dice" in v2.endpoints and "segmentation_dice" not in v1.endpoints
    assert len(v2.secondary) == len(v1.secondary) + 2  # the Dice of each Triad arm against scratch
    assert not set(v1.seeds) & set(v2.seeds) and v2.out != v1.out and v2.begin != v1.begin
    assert v2.preregistration.name == "triad-small-v2.yaml" and v1.preregistration.name == "triad-small.yaml"


def _run(arm, seed, auc, bacc, verdict="learning"):
    readouts = {r: {"seconds": 10.0, "metrics": {"auc": auc + d, "balanced_accuracy": bacc, "accuracy": 0.7,
                                                 "majority_accuracy": 0.7685}}
                for r, d in (("linear", 0.0), ("ft50", -0.05), ("ft200", 0.02))}
    pre = None if arm == "scratch" else {"train_seconds": 120.0}
    return {"arm": arm, "seed": seed, "smoke": False, "pretrain": pre, "readouts": readouts,
            "health": {"verdict": None if arm == "scratch" else verdict}}


def _write(tmp_path, rows):
    (tmp_path / "runs").mkdir(exist_ok=True)
    for r in rows:
        (tmp_path / "runs" / f"{r['arm']}-seed{r['seed']}.json").write_text(json.dumps(r))


def _prereg(design=tb.V1):
    return tb.preregistration({a: list(design.seeds) for a in tb.ARMS}, design)


def test_report_reads_the_primary_contrast_with_n_and_balanced_accuracy(tmp_path):
    gains = [0.10, 0.12, 0.08, 0.11, 0.09]
    rows = [_run("scratch", s, 0.55, 0.56) for s in range(5)]
    rows += [_run("triad_notext", s, 0.55 + g, 0.6) for s, g in enumerate(gains)]
    _write(tmp_path, rows)
    docs = tmp_path / "docs.md"
    md = tb.report(tmp_path, design=tb.V1, docs=docs, prereg=_prereg())
    assert md.startswith(BEGIN) and md.rstrip().endswith(END) and BEGIN in docs.read_text()
    assert "## Triad" in md and "balanced accuracy" in md and "n = 5 pretraining runs" in md
    assert "binary shape masks" in md and "no real MRI cohort" in md and "0.7685" in md
    (primary,) = [line for line in md.splitlines() if line.startswith("| primary |")]
    assert "+0.100 (0.016)" in primary and "5/5" in primary and "| supported |" in primary
    assert "**Primary verdict: supported.**" in md
    # the text arm has no runs: its contrasts get no verdict, and Holm counts only the tested ones
    assert "n = 0 random" not in md and "triad_text | linear probe (frozen), 1,188 labels | – |" in md


def test_one_sided_p_is_half_the_two_sided_in_the_claimed_direction():
    up = tb.st.contrast([(1, {0: 1.0, 1: 2.0, 2: 2.5}), (-1, {0: 0.0, 1: 0.5, 2: 1.5})])
    down = tb.st.contrast([(-1, {0: 1.0, 1: 2.0, 2: 2.5}), (1, {0: 0.0, 1: 0.5, 2: 1.5})])
    assert math.isclose(tb.one_sided(up), up.p / 2) and math.isclose(tb.one_sided(down), 1 - down.p / 2)
    assert tb.one_sided_mde(5, 0.05) < tb.st.mde(1.0, 5, 0.05)  # one-sided tests detect smaller effects


def test_scratch_at_the_majority_rate_withholds_every_verdict_of_that_readout(tmp_path):
    rows = [_run("scratch", s, 0.55, 0.5) for s in range(5)]  # balanced accuracy 0.5: the majority class
    rows += [_run("triad_notext", s, 0.7 + 0.01 * s, 0.6) for s in range(5)]
    _write(tmp_path, rows)
    md = tb.report(tmp_path, design=tb.V1, docs=None, prereg=_prereg())
    (primary,) = [line for line in md.splitlines() if line.startswith("| primary |")]
    assert "no verdict (scratch at the majority rate on this readout)" in primary
    assert "**no**: its contrasts are not read" in md


def test_runs_that_are_not_learning_are_excluded_and_named(tmp_path):
    rows = [_run("scratch", s, 0.55, 0.56) for s in range(5)]
    rows += [_run("triad_notext", s, 0.7, 0.6, "learning" if s < 2 else "collapsed") for s in range(5)]
    _write(tmp_path, rows)
    md = tb.report(tmp_path, design=tb.V1, docs=None, prereg=_prereg())
    assert "2 learning, 3 excluded (seed 2: collapsed" in md
    (primary,) = [line for line in md.splitlines() if line.startswith("| primary |")]
    assert "no verdict" in primary
    # every run, gate aside, is shown as exploratory (never as the pre-registered verdict)
    (line,) = [x for x in md.splitlines() if x.startswith("Exploratory, not the pre-registered test")]
    assert "Δ +0.150" in line and "5/5 seeds positive" in line and "n = 5 pretraining runs" in line


def test_preregistration_is_written_once(tmp_path):
    path = tb.write_preregistration(tmp_path / "p.yaml", _prereg(), tb.V1)
    import yaml
    data = yaml.safe_load(path.read_text())
    assert data["primary"]["a"] == "triad_notext" and data["primary"]["endpoint"] == "linear_auc"
    assert data["primary"]["planned_n"] == 5 and data["secondary"]["family"]["m"] == len(tb.V1.secondary)
    with pytest.raises(FileExistsError):
        tb.write_preregistration(tmp_path / "p.yaml", _prereg(), tb.V1)
    v2 = yaml.safe_load(tb.write_preregistration(tmp_path / "v2.yaml", _prereg(tb.V2), tb.V2).read_text())
    assert v2["name"] == "triad-small-v2" and v2["recipe"]["steps"] == 1500 and v2["arms"]["scratch"]["seeds"] == [
        5, 6, 7, 8, 9] and "segmentation_dice" in v2["endpoints"] and v2["secondary"]["family"]["m"] == 13
    assert "triad_3d_v2" in v2["rule"] and "seen" in v2 and "amended" not in v2


def test_health_record_rejudges_the_runs_own_signals(tmp_path):
    signals = {"step": 300, "embed_std_ratio": 0.023, "rankme": 1.5, "distance": 0.4, "masked_loss": 0.044,
               "mean_baseline_loss": 0.043, "median_baseline_loss": 0.029}
    reference = {"step": 0, "embed_std_ratio": 0.051, "rankme": 5.7, "distance": 0.0, "masked_loss": 0.5,
                 "mean_baseline_loss": 0.043, "median_baseline_loss": 0.029}
    (tmp_path / "health.json").write_text(json.dumps({"format": "organfm-health", "verdict": "collapsed",
                                                      "signals": signals, "reference": reference}))
    h = tb.health_record(tmp_path)
    assert h["recorded_verdict"] == "collapsed" and h["verdict"] == "not learning yet" and "median" in h["reason"]
    assert h["signals"]["median_baseline_loss"] == 0.029 and tb.health_record(None)["verdict"] is None


def test_segmentation_of_held_out_subjects_is_reported_paired_by_seed_and_says_if_pretraining_was_reproduced(
        tmp_path):
    rows = [_run("scratch", s, 0.55, 0.56) for s in range(3)]
    rows += [_run("triad_notext", s, 0.6, 0.6, "not learning yet") for s in range(3)]
    for r in rows:  # triad beats scratch by 0.05, 0.06, 0.07 Dice
        gain = 0.05 + 0.01 * r["seed"] if r["arm"] == "triad_notext" else 0.0
        r["segmentation"] = {"setting": "4/4/16 synthetic subjects, 4 labels, 24^3, patch 24^3",
                             "metrics": {"mean_dice": 0.7 + gain}, "best_iteration": [150 if r["seed"] else 100],
                             "pretraining_reproduced": None if r["arm"] == "scratch" else r["seed"] != 2}
    _write(tmp_path, rows)
    md = tb.report(tmp_path, design=tb.V1, docs=None, prereg=_prereg())
    assert "**3D segmentation of held-out synthetic subjects**" in md and "4/4/16 synthetic subjects" in md
    (arm,) = [line for line in md.splitlines() if line.startswith("| triad_notext |") and "first loss" in line]
    assert "0.760 ± 0.010" in arm and "n = 3 pretraining runs" in arm
    assert "2 of 3 (first loss equal, last within 1 %); 1 differing" in arm
    (paired,) = [line for line in md.splitlines() if line.startswith("Paired by seed over every run")]
    assert "triad_notext − scratch +0.060 (sd 0.010), 3/3 seeds higher" in paired and "of which 0 learning" in paired
    assert "The best validation check was the last one in 4 of 6 fits" in md  # seed 0's fits peaked at 100 of 150
    assert "Left out: 3D segmentation" not in md


def test_a_rerun_pretraining_counts_as_reproduced_only_when_its_losses_match(tmp_path):
    recorded = {"first_loss": 0.41381, "last_loss": 0.01869}
    assert tb.same_pretraining(recorded, {"first_loss": 0.413806, "last_loss": 0.018651}) is True  # float drift
    assert tb.same_pretraining(recorded, {"first_loss": 0.41381, "last_loss": 0.0189}) is False  # 1.1 % off
    assert tb.same_pretraining(recorded, {"first_loss": 0.40, "last_loss": 0.01869}) is False  # other data or init
    assert tb.same_pretraining(recorded, None) is None and tb.same_pretraining(None, recorded) is None
    log = tmp_path / "logs" / "csv" / "from-step-0"
    log.mkdir(parents=True)
    (log / "metrics.csv").write_text("loss,step,lr\n0.5,0,\n,1,0.1\n0.25,2,\n")
    assert tb.folder_losses(tmp_path) == {"first_loss": 0.5, "last_loss": 0.25}
    assert tb.folder_losses(tmp_path / "nothing") is None


def test_the_second_design_tests_the_segmentation_dice_and_needs_it_for_a_complete_run(tmp_path):
    rows = [_run("scratch", s, 0.55, 0.56) for s in range(5, 10)]
    rows += [_run("triad_notext", s, 0.65 + 0.01 * s, 0.6) for s in range(5, 10)]
    for r in rows:  # triad above scratch by 0.02 .. 0.06 Dice; scratch seed 9 has no segmentation yet
        gain = 0.01 * (r["seed"] - 3) if r["arm"] == "triad_notext" else 0.0
        if (r["arm"], r["seed"]) != ("scratch", 9):
            r["segmentation"] = {"setting": "4/4/16 synthetic subjects", "metrics": {"mean_dice": 0.7 + gain},
                                 "best_iteration": [150], "pretraining_reproduced": None}
    _write(tmp_path, rows)
    docs = tmp_path / "docs.md"
    md = tb.report(tmp_path, design=tb.V2, docs=docs, prereg=_prereg(tb.V2))
    assert md.startswith("<!-- BEGIN triad-v2 -->") and "## Triad, second design" in md and "Why a second design" in md
    assert "1,500 steps" in md and "`method.reconstruction_range`" in md and "triad-small-v2.yaml" in md
    assert "| scratch | linear probe (frozen, class-weighted), 1,188 labels |" in md
    assert "n = 4 random inits" in md  # scratch seed 9 is incomplete without its segmentation
    (seg,) = [line for line in md.splitlines() if line.startswith("| secondary | triad_notext > scratch | segmentation_dice")]
    assert "+0.035 (0.013)" in seg and "4/4" in seg and "| supported |" in seg
    assert "a pre-registered secondary endpoint, tested above" in md and "Holm over the 13 of them" in md
    assert "benchmarks/results/triad_3d_v2/runs/*.json" in md and "<!-- BEGIN triad-v2 -->" in docs.read_text()


def test_a_pilot_never_writes_into_the_committed_results(tmp_path):
    assert tb.parse_args([]).design is tb.V2 and tb.parse_args([]).seeds == [5, 6, 7, 8, 9]
    assert tb.parse_args(["--design", "v1"]).seeds == [0, 1, 2, 3, 4]
    for argv in (["--pilot"], ["--pilot", "--out", str(tb.REPO / "benchmarks" / "results" / "x")]):
        with pytest.raises(SystemExit):
            tb.parse_args(argv)
    assert tb.parse_args(["--pilot", "--out", str(tmp_path), "--seeds", "100"]).seeds == [100]
