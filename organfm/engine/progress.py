"""Console progress: a rich bar on a terminal, one plain line per log step elsewhere (CI, SLURM logs).

Besides the loss, each line says how fast the run goes and whether the data keeps up: seconds per step, the
data-wait share (the fraction of the time since the last line spent waiting for the next batch; near 1 the
loader, not the network, sets the pace), the ETA of the whole run and of the current epoch.
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["ProgressReporter", "RunClock", "TimedBatches", "format_duration"]

_SHOWN = ("loss", "loss_inter", "loss_intra", "teacher_entropy", "lr")


class TimedBatches:
    """An iterator over ``batches`` that adds the time spent waiting in each ``next()`` to ``seconds``.

    The loop draws every batch through it unchanged (same objects, same order); ``close()`` closes the
    wrapped generator, which ends a DataLoader's workers.

    Args:
        batches: the run's batches.
        clock: seconds as a float (``time.perf_counter``; a fake in tests).
    """

    def __init__(self, batches: Iterable[Any], clock: Callable[[], float] = time.perf_counter) -> None:
        self._source = batches
        self._it: Iterator[Any] | None = None
        self.clock = clock
        self.seconds = 0.0

    def __iter__(self) -> "TimedBatches":
        return self

    def __next__(self) -> Any:
        t = self.clock()
        try:
            if self._it is None:
                self._it = iter(self._source)
            return next(self._it)
        finally:
            self.seconds += self.clock() - t

    def close(self) -> None:
        close = getattr(self._it if self._it is not None else self._source, "close", None)
        if close is not None:
            close()


class RunClock:
    """Step rate, data-wait share and ETAs from a clock read at each log step (pure arithmetic).

    The rate is measured from the first reading on, so the first step (warm-up, compilation, the first
    batch's workers starting) does not inflate the ETA once a second reading exists.

    Args:
        total: the step the run stops at (``trainer.max_steps``, or the epochs' total).
        start: steps already done (resume).
        steps_per_epoch: for the epoch's ETA.
        clock: seconds as a float.
        data_seconds: the cumulative seconds spent waiting for batches (``TimedBatches.seconds``); None: unknown.
    """

    def __init__(self, *, total: int, start: int = 0, steps_per_epoch: int = 1,
                 clock: Callable[[], float] = time.perf_counter,
                 data_seconds: Callable[[], float] | None = None) -> None:
        self.total, self.start, self.steps_per_epoch = total, start, max(1, steps_per_epoch)
        self.clock, self.data_seconds = clock, data_seconds
        self._origin = (clock(), start)  # (time, step) the rate is measured from
        self._first: tuple[float, int] | None = None
        self._last = (self._origin[0], start, self._data())
        self.seconds_per_step: float | None = None
        self.data_share: float | None = None

    def _data(self) -> float:
        return float(self.data_seconds()) if self.data_seconds is not None else 0.0

    def record(self, step: int) -> None:
        """Read the clock at ``step`` steps done."""
        now, data = self.clock(), self._data()
        if self._first is None:
            self._first = (now, step)
            since, from_step = self._origin
        else:
            since, from_step = self._first
        if step > from_step:
            self.seconds_per_step = (now - since) / (step - from_step)
        last_t, _, last_data = self._last
        if self.data_seconds is not None and now > last_t:
            self.data_share = min(1.0, max(0.0, (data - last_data) / (now - last_t)))
        self._last = (now, step, data)

    def eta(self, step: int) -> float | None:
        """Seconds until ``total`` steps are done, or None before the rate is known."""
        if self.seconds_per_step is None:
            return None
        return max(0, self.total - step) * self.seconds_per_step

    def epoch_eta(self, step: int) -> float | None:
        """Seconds until the epoch that the next step belongs to ends (never past ``total``)."""
        if self.seconds_per_step is None:
            return None
        end = min(self.total, (step // self.steps_per_epoch + 1) * self.steps_per_epoch)
        return max(0, end - step) * self.seconds_per_step

    def text(self, step: int) -> str:
        """``0.52 s/step, data 12%, eta 41s (epoch 5s)``; empty before the first rate."""
        eta = self.eta(step)
        if eta is None:
            return ""
        data = f", data {self.data_share:.0%}" if self.data_share is not None else ""
        return (f"{self.seconds_per_step:.3g} s/step{data}, eta {format_duration(eta)} "
                f"(epoch {format_duration(self.epoch_eta(step) or 0.0)})")


def format_duration(seconds: float) -> str:
    """``41s``, ``3m20s``, ``2h05m``, ``3d04h``."""
    s = int(math.ceil(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


class ProgressReporter:
    """Context manager; ``update(step, scalars)`` is the loop's ``on_log`` callback.

    Args:
        total: the step the run stops at.
        start: steps already done (resume).
        enabled: False: silent (other ranks, ``trainer.progress=false``).
        steps_per_epoch: for the epoch shown and its ETA.
        clock: seconds as a float.
        data_seconds: cumulative seconds spent waiting for batches (``TimedBatches.seconds``); None: not shown.
    """

    def __init__(self, *, total: int, start: int = 0, enabled: bool = True, steps_per_epoch: int = 1,
                 clock: Callable[[], float] = time.perf_counter,
                 data_seconds: Callable[[], float] | None = None) -> None:
        self.total, self.start, self.enabled = total, start, enabled
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.clock, self.data_seconds = clock, data_seconds
        self.interactive = enabled and sys.stdout.isatty()
        self._progress = None
        self.run_clock = self._new_clock()

    def _new_clock(self) -> RunClock:
        return RunClock(total=self.total, start=self.start, steps_per_epoch=self.steps_per_epoch, clock=self.clock,
                        data_seconds=self.data_seconds)

    def __enter__(self) -> "ProgressReporter":
        # the clock (re)starts here, just before the loop: building the data and the model is no step's time
        self.run_clock = self._new_clock()
        if self.interactive:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(TextColumn("[bold]pretrain"), BarColumn(), MofNCompleteColumn(),
                                      TimeRemainingColumn(), TextColumn("{task.description}"))
            self._progress.start()
            self._task = self._progress.add_task("", total=self.total, completed=self.start)
        return self

    def line(self, step: int, scalars: dict[str, float]) -> str:
        """What ``update`` shows after the step counter: epoch, scalars, then rate, data share and ETAs."""
        clock = self.run_clock
        clock.record(step)
        epochs = self.total / self.steps_per_epoch
        parts = [f"epoch {step / self.steps_per_epoch:.3g}/{epochs:.3g}"]
        parts += [f"{k} {scalars[k]:.4g}" for k in _SHOWN if k in scalars]
        timing = clock.text(step)
        return " ".join(parts) + (f" | {timing}" if timing else "")

    def update(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        text = self.line(step, scalars)
        if self._progress is not None:
            self._progress.update(self._task, completed=step, description=text)
        else:
            print(f"step {step}/{self.total} {text}", flush=True)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
