"""A benchmark's pretraining run is started once, resumed when interrupted, and reused when finished."""
from __future__ import annotations

from benchmarks.runs import finished, pretrain_or_resume
from organfm.config import load_config

SMALL = ["backbone.name=test_convnext", "views.global_size=32", "views.num_local_views=0", "trainer.batch_size=4",
         "trainer.num_workers=0", "trainer.progress=false", "data.synthetic_organs=2",
         "data.synthetic_images_per_organ=4"]


def test_started_then_resumed_then_reused(tmp_path):
    run = tmp_path / "run"
    fresh = lambda: load_config("supcon", None, [*SMALL, "trainer.max_steps=1", f"trainer.out_dir={run}"])  # noqa: E731
    first = pretrain_or_resume(run, 1, fresh)
    assert first.result.start_step == 0 and first.result.step == 1 and finished(run, 1) and not finished(run, 2)
    resumed = pretrain_or_resume(run, 2, lambda: (_ for _ in ()).throw(AssertionError("not a fresh run")))
    assert resumed.result.start_step == 1 and resumed.result.step == 2 and finished(run, 2)
    assert pretrain_or_resume(run, 2, fresh) is None


def test_logged_reads_one_scalar_in_step_order_across_resumed_parts(tmp_path: Path) -> None:
    from benchmarks.runs import logged

    parts = (("from-step-0", "loss,step,lr\n0.9,0,\n,1,0.1\n0.7,2,\n"), ("from-step-2", "step,loss\n4,0.5\n3,0.6\n"))
    for part, text in parts:
        (tmp_path / "logs" / "csv" / part).mkdir(parents=True)
        (tmp_path / "logs" / "csv" / part / "metrics.csv").write_text(text)
    assert logged(tmp_path, "loss") == [(0, 0.9), (2, 0.7), (3, 0.6), (4, 0.5)]
    assert logged(tmp_path, "lr") == [(1, 0.1)] and logged(tmp_path / "none", "loss") == []
