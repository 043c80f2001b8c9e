"""The progress line's arithmetic (rate, data-wait share, ETAs) on a fake clock: no sleeps."""
from __future__ import annotations

import pytest

from organfm.engine.progress import ProgressReporter, RunClock, TimedBatches, format_duration


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_eta_and_epoch_eta_follow_the_steps():
    clock = FakeClock()
    run = RunClock(total=100, start=0, steps_per_epoch=30, clock=clock)
    assert run.eta(0) is None and run.text(0) == ""
    clock.now += 5.0  # the first step: warm-up
    run.record(1)
    assert run.seconds_per_step == pytest.approx(5.0)
    clock.now += 9 * 0.5  # then 0.5 s a step: the rate is measured from the first reading on
    run.record(10)
    assert run.seconds_per_step == pytest.approx(0.5)
    assert run.eta(10) == pytest.approx(90 * 0.5)  # the whole run, not the epoch
    assert run.epoch_eta(10) == pytest.approx(20 * 0.5)  # to step 30
    assert run.epoch_eta(30) == pytest.approx(30 * 0.5)  # at a boundary: the next epoch
    assert run.epoch_eta(95) == pytest.approx(5 * 0.5)  # never past the run's end
    assert run.text(10) == "0.5 s/step, eta 45s (epoch 10s)"


def test_resumed_run_counts_only_the_steps_left():
    clock = FakeClock()
    run = RunClock(total=1000, start=900, clock=clock)
    clock.now += 20.0
    run.record(910)
    assert run.seconds_per_step == pytest.approx(2.0) and run.eta(910) == pytest.approx(180.0)


def test_data_wait_share_is_measured_between_log_lines():
    clock = FakeClock()
    waited = {"s": 0.0}
    run = RunClock(total=10, clock=clock, data_seconds=lambda: waited["s"])
    clock.now += 4.0
    waited["s"] += 1.0
    run.record(2)
    assert run.data_share == pytest.approx(0.25)
    clock.now += 2.0
    waited["s"] += 1.5
    run.record(4)
    assert run.data_share == pytest.approx(0.75)  # this window's share, not the run's average
    assert "data 75%" in run.text(4)


def test_timed_batches_add_the_wait_and_pass_batches_and_close_through():
    clock = FakeClock()
    closed = []

    def batches():
        try:
            for i in range(3):
                clock.now += 0.25 * (i + 1)  # the loader takes 0.25, 0.5, 0.75 s
                yield i
        finally:
            closed.append(True)

    timed = TimedBatches(batches(), clock=clock)
    assert [next(timed), next(timed)] == [0, 1] and timed.seconds == pytest.approx(0.75)
    timed.close()
    assert closed == [True]


def test_the_plain_line_shows_epoch_rate_share_and_eta(capsys):
    clock = FakeClock()
    waited = {"s": 0.0}
    with ProgressReporter(total=40, steps_per_epoch=10, enabled=True, clock=clock,
                          data_seconds=lambda: waited["s"]) as progress:
        progress.interactive = False
        clock.now += 2.0
        waited["s"] = 0.2
        progress.update(4, {"loss": 1.5, "lr": 1e-3})
    out = capsys.readouterr().out.strip()
    assert out == "step 4/40 epoch 0.4/4 loss 1.5 lr 0.001 | 0.5 s/step, data 10%, eta 18s (epoch 3s)"


def test_durations():
    assert [format_duration(s) for s in (0, 41.2, 200, 7500, 3 * 86400 + 4 * 3600)] == \
        ["0s", "42s", "3m20s", "2h05m", "3d04h"]
