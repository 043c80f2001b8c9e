"""The one training loop: schedules → forward → backward → clip → step → EMA → log → checkpoint.

Lightning Fabric does devices, precision and distribution (CPU, one GPU, DDP/FSDP, many nodes); the loop
knows nothing about any particular method.
"""
from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch

from organfm.engine.optim import clip_grad_per_parameter, set_optimizer_values
from organfm.engine.schedules import Schedules
from organfm.methods.base import Method, StepState

__all__ = ["NonFiniteLossError", "TrainResult", "train"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


@dataclass
class TrainResult:
    start_step: int
    step: int
    seconds: float
    interrupted: bool = False
    first_logs: dict[str, float] = field(default_factory=dict)
    last_logs: dict[str, float] = field(default_factory=dict)
    last_checkpoint: Path | None = None


class _StopRequest:
    """SIGINT/SIGTERM set a flag that the loop honours at the next step boundary (a clean checkpoint);
    a second signal interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "_StopRequest":
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def train(fabric, method: Method, optimizer: torch.optim.Optimizer, batches: Iterable[dict],
          schedules: Schedules, *, start_step: int, max_steps: int, steps_per_epoch: int = 1,
          accumulate_grad_batches: int = 1, clip_grad: float | None = None, clip_mode: str = "global",
          freeze_last_layer_steps: int = 0,
          save: Callable[[int], Path], checkpoint_every: int = 200, log_every: int = 10,
          on_log: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Run optimisation steps ``start_step .. max_steps - 1``.

    Args:
        fabric: a launched ``lightning.fabric.Fabric``.
        method: the Fabric-wrapped method; ``forward(batch, state)`` returns a ``StepOutput``.
        optimizer: the Fabric-wrapped optimizer.
        batches: an endless iterable of batches (already on the device).
        schedules: per-step values (lr, weight decay and what the method declared); all reach the method
            through ``StepState.values``.
        start_step: steps already done (resume).
        max_steps: stop when this many steps are done.
        steps_per_epoch: for ``StepState.epoch``.
        accumulate_grad_batches: micro-batches per optimisation step.
        clip_grad: max gradient norm, or None.
        clip_mode: ``"global"`` (one norm over all parameters) or ``"per_param"`` (DINO: each parameter's
            gradient clipped to its own norm).
        freeze_last_layer_steps: the prototype layer gets no update before this step (its gradient is
            dropped after clipping, as DINO).
        save: ``save(step) -> path`` writes a checkpoint of the state after ``step`` steps.
        checkpoint_every: steps between checkpoints.
        log_every: steps between logged scalars.
        on_log: called with (step, scalars) on every log step.
    """
    raw = getattr(method, "module", method)  # the unwrapped method: teacher updates bypass DDP
    result = TrainResult(start_step=start_step, step=start_step, seconds=0.0)
    batch_iter = iter(batches)
    t0 = time.perf_counter()
    step = start_step
    with _StopRequest() as stop:
        while step < max_steps:
            values = schedules.at(step)
            state = StepState(step=step, epoch=step / max(1, steps_per_epoch), values=values)
            set_optimizer_values(optimizer, lr=values["lr"], weight_decay=values["weight_decay"])
            logs_sum: dict[str, torch.Tensor] = {}
            for micro in range(accumulate_grad_batches):
                batch = next(batch_iter)
                with fabric.no_backward_sync(method, enabled=micro < accumulate_grad_batches - 1):
                    out = method(batch, state)
                    if not torch.isfinite(out.loss):
                        raise NonFiniteLossError(
                            f"loss is {out.loss.item()} at step {step}; the weights were not updated. "
                            f"Last good checkpoint: {result.last_checkpoint or 'none yet'}. "
                            "Lower optim.lr, check the data, or (with a teacher) raise teacher.warmup_temp_epochs.")
                    fabric.backward(out.loss / accumulate_grad_batches)
                for k, v in out.logs.items():
                    logs_sum[k] = logs_sum.get(k, 0.0) + v / accumulate_grad_batches
            if clip_grad and clip_mode == "per_param":
                clip_grad_per_parameter(raw.parameters(), clip_grad)
            elif clip_grad:
                fabric.clip_gradients(method, optimizer, max_norm=clip_grad, error_if_nonfinite=False)
            if step < freeze_last_layer_steps:
                for p in raw.last_layer_parameters():
                    p.grad = None
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            raw.after_step(state)
            step += 1

            if step % log_every == 0 or step == max_steps or step == start_step + 1:
                scalars = {k: float(fabric.all_reduce(v.detach().float(), reduce_op="mean")) for k, v in logs_sum.items()}
                scalars.update(values)
                fabric.log_dict(scalars, step=step)
                result.first_logs = result.first_logs or scalars
                result.last_logs = scalars
                if on_log is not None:
                    on_log(step, scalars)
            if step % checkpoint_every == 0 or step == max_steps or stop.requested:
                result.last_checkpoint = save(step)
            if stop.requested:
                result.interrupted = True
                break
    result.step = step
    result.seconds = time.perf_counter() - t0
    return result
