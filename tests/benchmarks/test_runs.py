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
