"""The training-health monitor of a pretraining run: signals on a fixed monitor batch, a verdict, run files.

Every ``trainer.monitor_every`` steps (and at the end, or at a stop) the monitor measures, on one fixed,
seeded batch of the run's own data, with the network in eval mode and no gradient:

- for every method: the spread (std of the L2-normalised embeddings, times sqrt(d)) and effective rank
  (RankMe) of the exported network's embeddings, and that network's relative distance from its weights at
  step 0;
- the method's own family signals (``Method.health_signals``: prototype entropies, alignment/uniformity,
  masked reconstruction against the per-volume mean, organ attention);
- a leave-one-out cosine kNN accuracy of the exported network whenever the monitor batch has labels
  (organ ids, or a subject/volume label), beside the same kNN at step 0.

It writes ``health.json`` (verdict, reason, next steps, the step-0 reference and every record) and
``health.png`` (curves) into the run folder after each measurement, and the scalars to the run's loggers
under ``health/``. It changes no state of the run: no RNG is drawn, no buffer moves, so a resumed run stays
bit-identical to an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from organfm.outputs.atomic import write_atomic
from organfm.monitor.signals import embedding_std, knn_accuracy, rankme, relative_distance
from organfm.monitor.verdict import THRESHOLDS, Verdict, judge

__all__ = ["HealthMonitor", "read_health"]

HEALTH_FILE = "health.json"
INITIAL_WEIGHTS = "health-initial.safetensors"


def read_health(run_dir: str | Path) -> dict[str, Any] | None:
    """The ``health.json`` of a run folder, or None when it has none."""
    path = Path(run_dir) / HEALTH_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


class HealthMonitor:
    """Measures a run's health on a fixed batch and keeps its verdict.

    Args:
        method: the (unwrapped) method: ``exported_backbone()``, ``monitor_embeddings(batch)`` and
            ``health_signals(batch, state)``.
        batch: the fixed monitor batch (``BatchSource.monitor``): a training-style batch plus
            ``monitor_input`` and, where labels exist, ``monitor_label`` (N,).
        every: steps between measurements.
        run_dir: where ``health.json`` / ``health.png`` go (None: nothing is written).
        knn_k: neighbours of the kNN monitor.
        write: write the files (rank 0); other ranks measure nothing.
        log: ``log(scalars, step)`` (the run's loggers).
    """

    def __init__(self, method, batch: dict, *, every: int, run_dir: str | Path | None, knn_k: int = 20,
                 write: bool = True, log: Callable[[dict[str, float], int], None] | None = None) -> None:
        self.method, self.every, self.knn_k = method, int(every), knn_k
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.write, self.log = write, log
        device = next(method.parameters()).device
        self.batch = _to_device(batch, device)
        self.records: list[dict[str, Any]] = []
        self.initial: list[torch.Tensor] | None = None
        self.seconds = 0.0
        self.verdict: Verdict | None = None

    # ------------------------------------------------------------------ lifecycle
    def _params(self) -> list[torch.Tensor]:
        return [p for p in self.method.exported_backbone().parameters()]

    def start(self, step: int, state) -> None:
        """Step 0: record the reference and keep the initial weights; on resume: reload both."""
        if not self.write:
            return
        if step == 0:
            self.initial = [p.detach().clone().cpu() for p in self._params()]
            if self.run_dir is not None:
                from safetensors.torch import save

                tensors = {str(i): t.contiguous() for i, t in enumerate(self.initial)}
                write_atomic(self.run_dir / INITIAL_WEIGHTS, save(tensors))
            self.measure(0, state)
            return
        old = read_health(self.run_dir) if self.run_dir is not None else None
        if old:
            self.records = [r for r in old.get("history", []) if r["step"] <= step]
        path = self.run_dir / INITIAL_WEIGHTS if self.run_dir is not None else None
        if path is not None and path.is_file():
            from safetensors.torch import load_file

            loaded = load_file(str(path))
            self.initial = [loaded[str(i)] for i in range(len(loaded))]

    def __call__(self, step: int, state, final: bool) -> None:
        """The loop's per-step hook: measure when due (every ``every`` steps, and at the last step)."""
        if self.write and (final or step % self.every == 0):
            if not self.records or self.records[-1]["step"] != step:
                self.measure(step, state)

    # ------------------------------------------------------------------ measuring
    @torch.no_grad()
    def signals(self, state) -> dict[str, float]:
        """Every signal of the network as it is now (eval mode, no gradient, no state change)."""
        m = self.method
        was_training = m.training
        m.eval()
        try:
            z = m.monitor_embeddings(self.batch).float()
            if not bool(torch.isfinite(z).all()):  # the loop's finiteness guard names the step; say it here too
                return {"non_finite": 1.0}
            spread = embedding_std(z)
            out: dict[str, float] = {"embed_std": spread, "embed_std_ratio": spread * math.sqrt(z.shape[1]),
                                     "rankme": rankme(z), "embed_dim": float(z.shape[1])}
            labels = self.batch.get("monitor_label")
            if labels is not None and int(labels.unique().numel()) >= 2:
                out["knn"] = knn_accuracy(z, labels.long(), k=self.knn_k)
                counts = torch.bincount(labels.long())
                out["knn_majority"] = float(counts.max()) / float(counts.sum())
            if self.initial is not None:
                out["distance"] = relative_distance(self._params(), self.initial)
            out.update({k: float(v) for k, v in m.health_signals(self.batch, state).items()})
        finally:
            m.train(was_training)
        return out

    def measure(self, step: int, state) -> dict[str, Any]:
        t0 = time.perf_counter()
        record = {"step": int(step), "time": round(time.time(), 3), **self.signals(state)}
        self.records.append(record)
        self.seconds += time.perf_counter() - t0
        self.verdict = self.judge()
        if self.log is not None:
            self.log({f"health/{k}": v for k, v in record.items() if k not in ("step", "time")}, step)
        self._write()
        return record

    def judge(self) -> Verdict:
        start = self.records[0] if self.records and self.records[0]["step"] == 0 else None
        return judge(self.records[-1], start)

    # ------------------------------------------------------------------ files
    def report(self) -> dict[str, Any]:
        verdict = self.verdict or self.judge()
        start = self.records[0] if self.records and self.records[0]["step"] == 0 else None
        return {"format": "organfm-health", "version": 1, **verdict.to_dict(),
                "step": self.records[-1]["step"] if self.records else 0,
                "signals": self.records[-1] if self.records else {}, "reference": start,
                "monitor_images": int(self.batch["monitor_input"].shape[0])
                if isinstance(self.batch.get("monitor_input"), torch.Tensor) else None,
                "monitor_seconds": round(self.seconds, 3), "thresholds": THRESHOLDS, "history": self.records}

    def _write(self) -> None:
        if self.run_dir is None or not self.write:
            return
        write_atomic(self.run_dir / HEALTH_FILE, json.dumps(self.report(), indent=2))
        from organfm.monitor.plot import plot_health

        png = plot_health(self.records, title=f"{(self.verdict or self.judge()).verdict}")
        if png is not None:
            write_atomic(self.run_dir / "health.png", png)
