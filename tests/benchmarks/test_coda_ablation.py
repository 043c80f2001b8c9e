"""The Coda-ablation runner: arms differ only in their objective; runs go through `organfm pretrain`/`evaluate`."""
from __future__ import annotations

import dataclasses
import json
import math
import shlex
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import coda_ablation as bench  # noqa: E402
import coda_ablation_report as report  # noqa: E402

from organfm.config import load_config  # noqa: E402


@pytest.mark.parametrize("name", ["cpu-1k", "paper"])
def test_arms_share_backbone_budget_augmentation_and_seed(tmp_path: Path, name: str) -> None:
    scale = bench.SCALES[name]
    cfgs = {}
    for arm in bench.ARMS:
        method, file, overrides = bench.pretrain_overrides(arm, 1, scale, source=tmp_path / "MedNIST.tar.gz",
                                                           split_file=tmp_path / "split.csv", num_train=46810,
                                                           run=tmp_path / arm)
        assert file is None
        cfgs[arm] = load_config(method, None, overrides)
    for arm, cfg in cfgs.items():
        assert cfg.backbone.name == scale.backbone and cfg.trainer.seed == 1 and cfg.optim.lr == scale.lr
        assert cfg.trainer.max_steps == scale.steps and cfg.trainer.batch_size == scale.batch_size
        slower = 1 - (1 - scale.momentum) / 10
        assert cfg.teacher.momentum == pytest.approx(slower if arm == "coda-ema" else scale.momentum)
        assert cfg.data.split == "train" and cfg.data.split_file == str(tmp_path / "split.csv")
        assert math.isclose(cfg.trainer.epochs * (46810 // scale.batch_size), scale.steps)  # schedules end at the end
        assert (cfg.views.global_size, cfg.views.local_size) == (scale.global_size, scale.local_size)
        assert cfg.views.num_local_views == (0 if arm == "supcon" else scale.num_local_views)
    assert (cfgs["inter"].method.use_inter, cfgs["inter"].method.use_intra) == (True, False)
    assert (cfgs["intra"].method.use_inter, cfgs["intra"].method.use_intra) == (False, True)
    assert cfgs["dino"].method.out_dim == cfgs["coda"].method.out_dim == scale.out_dim


def test_small_scale_is_literally_the_small_recipe_for_every_arm(tmp_path: Path) -> None:
    scale = bench.SCALES["small"]
    for arm in bench.PREREGISTERED_ARMS[:-1]:
        method, file, overrides = bench.pretrain_overrides(arm, 4, scale, source=tmp_path / "MedNIST.tar.gz",
                                                           split_file=tmp_path / "split.csv", num_train=46810,
                                                           run=tmp_path / arm)
        assert file == f"configs/small/{method}.yaml"
        # the overrides touch the data, the seed and the run folder only (max_steps restates the recipe's horizon)
        assert {o.split("=")[0] for o in overrides} - {"method.use_intra", "method.use_inter"} == {
            "data.source", "data.split", "data.split_file", "trainer.max_steps", "trainer.seed", "trainer.out_dir",
            "trainer.progress", "trainer.checkpoint_every"}
        cfg, recipe = bench.load_arm_config(method, file, overrides), load_config(method, REPO / file, [])
        for section in ("backbone", "views", "optim", "teacher", "method"):
            if section != "method" or arm in ("coda", "dino", "supcon"):
                assert getattr(cfg, section) == getattr(recipe, section), (arm, section)
        assert cfg.trainer.max_steps == scale.steps == recipe.trainer.epochs * recipe.trainer.steps_per_epoch
        assert (cfg.trainer.batch_size, cfg.trainer.steps_per_epoch, cfg.trainer.seed) == (scale.batch_size, 30, 4)
        assert (cfg.backbone.name, cfg.views.global_size) == (scale.backbone, scale.global_size)
        assert cfg.views.num_local_views == (0 if arm == "supcon" else scale.num_local_views)
        if method != "supcon":
            assert (cfg.method.out_dim, cfg.teacher.momentum, cfg.optim.lr) == (scale.out_dim, scale.momentum, scale.lr)
    inter = bench.load_arm_config(*bench.pretrain_overrides("inter", 0, scale, source=tmp_path, split_file=tmp_path,
                                                             num_train=1, run=tmp_path)).method
    assert (inter.use_inter, inter.use_intra) == (True, False)


def test_small_scale_plans_six_seeds_for_the_ablation_arms_and_three_for_the_rest() -> None:
    args, scale = bench.parse_args(["--scale", "small"])
    assert args.arms == ["coda", "inter", "intra", "dino", "supcon", "random"] and args.seeds is None
    plan = bench.schedule(args, scale)
    assert len(plan) == 4 * 6 + 2 * 3 and plan[:6] == [(a, 0) for a in args.arms]   # seed-major: pairs first
    assert [s for a, s in plan if a == "intra"] == [0, 1, 2, 3, 4, 5] and [s for a, s in plan if a == "dino"] == [0, 1, 2, 3, 4, 5]
    assert [t for t, _ in scale.tasks] == ["pneumoniamnist", "totalseg_ct_organs"]          # no MedNIST
    tasks = dict(scale.tasks)
    assert "fewshot.fractions=[0.01]" in tasks["pneumoniamnist"] and "clusters.embeddings=[]" in tasks["totalseg_ct_organs"]
    pilot, _ = bench.parse_args(["--scale", "small", "--pilot"])
    assert pilot.arms == list(bench.PILOT_ARMS) and pilot.seeds == list(bench.PILOT_SEEDS)
    assert bench.command_line(pilot, scale) == ("python benchmarks/coda_ablation.py --scale small "
                                                "--arms coda,inter,intra,dino --seeds 100,101 --pilot")
    # a pilot model is never a tested one; a scale without a pre-registration has no pilot
    for bad in (["--scale", "small", "--pilot", "--seeds", "0,1"], ["--scale", "cpu-1k", "--pilot"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_small_scale_evaluation_tasks_resolve(data_root: Path) -> None:
    from organfm.evaluation import load_task

    scale = bench.SCALES["small"]
    for name, _ in scale.tasks:
        o = bench.task_overrides(name, scale, 3, data_root=data_root, split_file=data_root / "x.csv", out=data_root)
        task = load_task(REPO / "configs" / "tasks" / f"{name}.yaml", o)
        assert task.seed == 3 and task.data.image_size == 64 and task.report.scatter_points == 0
    assert task.clusters.embeddings == []


def _fake_pretraining(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    calls: list[tuple[str, int]] = []

    def pretrain_run(arm, seed, scale, *, run, **kwargs):
        calls.append((arm, seed))
        return {"method": bench.ARMS[arm][0], "config": f"configs/small/{bench.ARMS[arm][0]}.yaml", "overrides": [],
                "health": "learning", "health_reason": "every signal moved"}

    def evaluate_run(spec, model, name, overrides):
        return {"overrides": overrides, "seconds": 0.0,
                "rows": [{"protocol": "linear", "setting": "grid", "values": {"auc": [0.9]}}]}

    monkeypatch.setattr(bench, "pretrain_run", pretrain_run)
    monkeypatch.setattr(bench, "evaluate_run", evaluate_run)
    return calls


def test_run_one_refuses_a_run_file_before_the_preregistration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "PREREGISTERED", tmp_path / "preregistered")
    calls = _fake_pretraining(monkeypatch)
    scale, out = bench.SCALES["small"], tmp_path / "coda_ablation-small"
    kwargs = dict(out=out, data_root=tmp_path, split_file=tmp_path / "split.csv", num_train=0,
                  tasks=["pneumoniamnist"], command="x")
    with pytest.raises(RuntimeError, match="pre-registered.*coda-small.yaml must exist"):
        bench.run_one("coda", 0, scale, **kwargs)
    assert calls == [] and not (out / "runs").exists()               # refused before any pretraining
    # a pilot goes to pilot/, never runs/, and needs no pre-registration
    pilot = bench.run_one("coda", 100, scale, pilot=True, **kwargs)
    assert pilot == out / "pilot" / "coda-seed100.json" and not (out / "runs").exists()
    (tmp_path / "preregistered").mkdir()
    (tmp_path / "preregistered" / "coda-small.yaml").write_text("name: coda-small\n")
    path = bench.run_one("inter", 0, scale, **kwargs)
    record = json.loads(path.read_text())
    assert path == out / "runs" / "inter-seed0.json" and record["pretrain"]["health"] == "learning"
    assert record["pilot"] is False and record["commands"][0].startswith("organfm pretrain --method coda --config "
                                                                         "configs/small/coda.yaml")
    # legacy scales have no pre-registration to wait for
    assert bench.run_one("coda", 0, bench.SCALES["cpu-1k"], **dict(kwargs, out=tmp_path / "legacy")).is_file()


def test_main_refuses_before_pretraining_without_the_preregistration(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "PREREGISTERED", tmp_path / "preregistered")
    (tmp_path / "mednist").mkdir()
    (tmp_path / "mednist" / "MedNIST.tar.gz").write_bytes(b"")
    monkeypatch.setattr(bench, "save_mednist_split", lambda *a: pytest.fail("indexed MedNIST before refusing"))
    with pytest.raises(RuntimeError, match="must exist"):
        bench.main(["--scale", "small", "--arms", "coda", "--seeds", "0", "--data", str(tmp_path), "--docs", ""])


def test_expected_minutes_come_from_the_gpu_throughput_figures(tmp_path: Path) -> None:
    scale = bench.SCALES["paper"]
    folder = tmp_path / "gpu_throughput-paper-cuda"
    folder.mkdir()
    cases = [{"method": "coda", "batch": 64, "step_s": 0.48}, {"method": "coda", "batch": 64, "step_s": 0.40},
             {"method": "dino", "batch": 32, "step_s": 0.1}, {"method": "supcon", "batch": 64, "step_s": 0.17}]
    (folder / "gpu_throughput.json").write_text(json.dumps({"cases": cases}))
    minutes = bench.expected_minutes(scale, list(bench.PREREGISTERED_ARMS), results=tmp_path)
    assert minutes == pytest.approx({"coda": 5000 * 0.40 / 60, "inter": 5000 * 0.40 / 60, "intra": 5000 * 0.40 / 60,
                                     "supcon": 5000 * 0.17 / 60})   # the fastest case at the scale's batch; no dino
    assert bench.expected_minutes(scale, ["coda"], results=tmp_path / "none") == {}


def test_cpu_1k_scale_is_the_cpu_recipe_with_two_local_crops_for_1000_steps() -> None:
    s = bench.SCALES["cpu-1k"]
    assert (s.backbone, s.steps, s.batch_size, s.num_local_views, s.local_size) == ("convnext_atto", 1000, 32, 2, 32)
    args, scale = bench.parse_args([])
    assert scale is s and args.arms == ["coda", "dino", "supcon", "random"] and args.seeds is None
    assert [x for _, x in bench.schedule(args, scale)] == [0] * 4 + [1] * 4 + [2] * 4
    args, _ = bench.parse_args(["--arms", "coda", "--seeds", "0,3", "--tasks", "pneumoniamnist"])
    assert args.arms == ["coda"] and args.seeds == [0, 3] and args.tasks == ["pneumoniamnist"]
    assert bench.command_line(args, s) == "python benchmarks/coda_ablation.py --scale cpu-1k --arms coda --seeds 0,3"
    for bad in (["--arms", "coda,nonsense"], ["--seeds", "a"], ["--tasks", "nope"], ["--data", "/nowhere"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_final_logs_take_the_last_logged_value_across_resumed_parts(tmp_path: Path) -> None:
    for part, rows in (("from-step-0", "step,loss,teacher_entropy\n1,9.0,8.3\n500,7.0,7.9\n"),
                       ("from-step-500", "step,loss,teacher_entropy,lr\n750,6.5,,0.1\n1000,6.0,7.1,0.0\n")):
        (tmp_path / "logs" / "csv" / part).mkdir(parents=True)
        (tmp_path / "logs" / "csv" / part / "metrics.csv").write_text(rows)
    assert bench.final_logs(tmp_path) == {"loss": 6.0, "teacher_entropy": 7.1, "lr": 0.0}
    assert bench.final_logs(tmp_path / "none") == {}


def test_a_real_run_logs_the_teacher_entropy_the_gate_reads(tmp_path: Path) -> None:
    from tests.engine.test_pretrain import run

    run(tmp_path, "coda", extra=["trainer.max_steps=2"])
    logs = bench.final_logs(tmp_path / "coda")
    assert 0 < logs["teacher_entropy"] <= math.log(64) + 1e-4  # K = 64 prototypes in the tiny head
    rows = (tmp_path / "coda").glob("logs/csv/*/metrics.csv")
    lines = [line for p in rows for line in p.read_text().splitlines()]
    assert any(f"{logs['teacher_entropy']}"[:6] in line for line in lines)   # monitor rows may come after it


def test_a_cached_run_of_another_recipe_is_refused_not_reused(tmp_path: Path) -> None:
    run = tmp_path / "coda-s0"
    run.mkdir()
    (run / "bench_recipe.json").write_text('{"method": "coda", "overrides": ["teacher.momentum=0.996"]}')
    with pytest.raises(RuntimeError, match="another recipe"):
        bench.pretrain_run("coda", 0, bench.SCALES["cpu-1k"], run=run, source=tmp_path / "MedNIST.tar.gz",
                           split_file=tmp_path / "split.csv", num_train=46810)


def test_every_number_of_a_run_file_is_reproduced_by_its_organfm_evaluate_command(data_root: Path,
                                                                                  tmp_path: Path) -> None:
    if not (data_root / "pneumoniamnist-unofficial" / "pneumoniamnist.npz").is_file():
        pytest.skip("PneumoniaMNIST npz not found")
    from organfm.cli.main import main as organfm

    tiny = ("protocols=[linear,fewshot]", "fewshot.fractions=[0.1]", "fewshot.shots=[]", "fewshot.seeds=2",
            "data.max_train=120", "data.max_val=40", "data.max_test=80", "linear.epochs=5", "linear.lrs=[0.01]",
            "linear.weight_decays=[0.0]", "report.scatter_points=0")
    scale = dataclasses.replace(bench.SCALES["cpu-1k"], backbone="test_convnext", tasks=(("pneumoniamnist", tiny),))
    out = tmp_path / "coda_ablation-tiny"
    path = bench.run_one("random", 1, scale, out=out, data_root=data_root, split_file=tmp_path / "split.csv",
                         num_train=0, tasks=["pneumoniamnist"], command="python benchmarks/coda_ablation.py")
    record = json.loads(path.read_text())
    assert path.name == "random-seed1.json" and record["pretrain"] is None
    rows = {(r["protocol"], r["setting"]): r["values"] for r in record["evaluation"]["pneumoniamnist"]["rows"]}
    assert set(rows) == {("linear", "grid"), ("fewshot-linear", "10%")} and len(rows["fewshot-linear", "10%"]["auc"]) == 2
    # the recorded product command, run as a user would (its own output folder), gives the same numbers
    words = shlex.split(record["commands"][0])
    assert words[:2] == ["organfm", "evaluate"] and "seed=1" in words
    words = [w if not w.startswith("out_dir=") else f"out_dir={tmp_path / 'cli'}" for w in words[1:]]
    assert organfm(words) == 0
    cli = json.loads((tmp_path / "cli" / "results.json").read_text())["rows"]
    for r in cli:
        assert rows[r["protocol"], r["setting"]]["auc"] == pytest.approx(r["values"]["auc"], abs=1e-6)
    # a second call keeps the finished run file; the report aggregates it
    assert bench.run_one("random", 1, scale, out=out, data_root=data_root, split_file=tmp_path / "split.csv",
                         num_train=0, tasks=["pneumoniamnist"], command="x").read_text() == path.read_text()
    _, text = report.block(out, None)
    assert "random init n = 1" in text and "no verdict" in text


def test_a_run_file_carries_its_runs_health_verdict_and_a_random_arm_says_it_has_none(tmp_path: Path) -> None:
    (tmp_path / "health.json").write_text(json.dumps({
        "verdict": "stuck", "reason": "kNN did not rise", "step": 300, "signals": {"knn": 0.61, "knn_majority": 0.2},
        "reference": {"knn": 0.6}}))
    assert bench.health_record(tmp_path) == {"verdict": "stuck", "reason": "kNN did not rise", "step": 300,
                                             "knn_step0": 0.6, "knn_final": 0.61, "knn_majority": 0.2}
    assert bench.health_record(tmp_path / "missing")["verdict"] is None  # no health.json: no verdict, not "learning"
    none = bench.health_record(None)
    assert none["verdict"] is None and "random init" in none["reason"]
