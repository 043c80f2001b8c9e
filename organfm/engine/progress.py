"""Console progress: a rich bar on a terminal, one plain line per log step elsewhere (CI, SLURM logs)."""
from __future__ import annotations

import sys

__all__ = ["ProgressReporter"]

_SHOWN = ("loss", "loss_inter", "loss_intra", "teacher_entropy", "lr")


class ProgressReporter:
    """Context manager; ``update(step, scalars)`` is the loop's ``on_log`` callback."""

    def __init__(self, *, total: int, start: int = 0, enabled: bool = True) -> None:
        self.total, self.start, self.enabled = total, start, enabled
        self.interactive = enabled and sys.stdout.isatty()
        self._progress = None

    def __enter__(self) -> "ProgressReporter":
        if self.interactive:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(TextColumn("[bold]pretrain"), BarColumn(), MofNCompleteColumn(),
                                      TimeRemainingColumn(), TextColumn("{task.description}"))
            self._progress.start()
            self._task = self._progress.add_task("", total=self.total, completed=self.start)
        return self

    def update(self, step: int, scalars: dict[str, float]) -> None:
        text = " ".join(f"{k} {scalars[k]:.4g}" for k in _SHOWN if k in scalars)
        if self._progress is not None:
            self._progress.update(self._task, completed=step, description=text)
        elif self.enabled:
            print(f"step {step}/{self.total} {text}", flush=True)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
