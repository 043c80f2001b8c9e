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


@pytest.mark.parametrize("name", ["cpu-1k", "gpu"])
def test_arms_share_backbone_budget_augmentation_and_seed(tmp_path: Path, name: str) -> None:
    scale = bench.SCALES[name]
    cfgs = {}
    for arm in bench.ARMS:
        method, overrides = bench.pretrain_overrides(arm, 1, scale, source=tmp_path / "MedNIST.tar.gz",
                                                     split_file=tmp_path / "split.csv", num_train=46810,
                                                     run=tmp_path / arm)
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


def test_cpu_1k_scale_is_the_cpu_recipe_with_two_local_crops_for_1000_steps() -> None:
    s = bench.SCALES["cpu-1k"]
    assert (s.backbone, s.steps, s.batch_size, s.num_local_views, s.local_size) == ("convnext_atto", 1000, 32, 2, 32)
    args, scale = bench.parse_args([])
    assert scale is s and args.arms == ["coda", "dino", "supcon", "random"] and args.seeds == [0, 1, 2]
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
    last = [line for p in rows for line in p.read_text().splitlines()][-1]
    assert f"{logs['teacher_entropy']}"[:6] in last


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
    assert "| random init | n = 1 |" in text and "organfm evaluate --models random-seed1=random:test_convnext" in text
