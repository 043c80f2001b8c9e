"""The one training loop: schedules → forward → backward → clip → step → EMA → log → checkpoint.

Lightning Fabric does devices, precision and distribution (CPU, one GPU, DDP/FSDP, many nodes); the loop
knows nothing about any particular method.
"""
from __future__ import annotations

import contextlib
import signal
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

import torch

from organfm.engine.optim import clip_grad_per_parameter, set_optimizer_values
from organfm.engine.schedules import Schedules
from organfm.methods.base import Method, StepState

__all__ = ["NonFiniteLossError", "StopRequest", "TrainResult", "default_check_finite_every", "ignore_stop_signals",
           "train"]


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


class _FiniteGuard:
    """Stops the run at a non-finite loss before any weight changes, syncing with the host only when told.

    Every ``every`` steps (1: each step) the loss is read on the host and a non-finite one raises before
    ``backward``. With ``every > 1`` nothing is read inside the step: a sticky on-device flag records the
    first non-finite loss and is handed to the fused AdamW kernel as ``found_inf`` (what ``GradScaler``
    uses), which then leaves parameters and moments untouched from that step on; the host reads the flag
    every ``every`` steps and before any checkpoint, and raises there, naming the step it went wrong.
    (An EMA teacher still follows the frozen student until then; it never sees a bad update.)
    """

    def __init__(self, optimizer: torch.optim.Optimizer, every: int, device: torch.device) -> None:
        self.inner = getattr(optimizer, "optimizer", optimizer)  # Fabric's wrapper forwards step() to it
        if every > 1 and not all(g.get("fused") for g in self.inner.param_groups):
            raise ValueError("checking the loss every > 1 steps needs a fused optimizer (build_optimizer(fused="
                             "True)), which skips updates on device; without one use 1")
        self.every = every
        self.bad = torch.zeros((), dtype=torch.bool, device=device)
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)

    def after_forward(self, loss: torch.Tensor, step: int, last_checkpoint) -> None:
        if self.every == 1:
            if not torch.isfinite(loss):
                self._raise(loss.item(), step, last_checkpoint)
            return
        finite = torch.isfinite(loss.detach())
        self.first_bad = torch.where(self.bad.logical_not() & finite.logical_not(), step, self.first_bad)
        self.bad = self.bad | finite.logical_not()
        found = self.bad.float()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # every rank skips together (a queued collective, not a host read): NaN gradients reach all ranks
            torch.distributed.all_reduce(found, op=torch.distributed.ReduceOp.MAX)
            self.bad = found > 0
        self.inner.found_inf = found  # the fused step skips its update while this is 1

    def check(self, last_checkpoint) -> None:
        """Host read of the flag (deferred mode): call at log and checkpoint steps."""
        if self.every > 1 and bool(self.bad):
            self._raise(float("nan"), int(self.first_bad), last_checkpoint)

    @staticmethod
    def _raise(value: float, step: int, last_checkpoint) -> None:
        raise NonFiniteLossError(
            f"loss is {value} at step {step}; the weights were not updated. "
            f"Last good checkpoint: {last_checkpoint or 'none yet'}. "
            "Lower optim.lr, check the data, or (with a teacher) raise teacher.warmup_temp_epochs.")


def default_check_finite_every(optimizer: torch.optim.Optimizer, device: torch.device, log_every: int) -> int:
    """1 where a host read is free (CPU) or the optimizer cannot skip on device; else ``log_every``."""
    inner = getattr(optimizer, "optimizer", optimizer)
    fused = all(g.get("fused") for g in inner.param_groups)
    return log_every if device.type != "cpu" and fused else 1


class StopRequest:
    """SIGINT/SIGTERM set a flag that the loop honours at the next step boundary (a clean checkpoint);
    a second signal interrupts at once.

    Entered once per run, as early as the run starts (``organfm.engine.pretrain``), so a signal that lands
    while the data or the model is still being built also ends the run at its first step boundary. A
    cluster's preemption (SLURM's ``--signal``, ``timeout -s TERM``) signals the whole process group: the
    DataLoader workers ignore both signals (:func:`ignore_stop_signals`) and the main process ends them.
    """

    def __init__(self) -> None:
        self.requested = False
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopRequest":
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
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def ignore_stop_signals(worker_id: int | None = None) -> None:
    """A DataLoader ``worker_init_fn``: the worker ignores SIGINT/SIGTERM sent to its process group.

    Without it a group-wide SIGTERM (SLURM preemption, ``timeout``) kills the workers first and the main
    process dies with "DataLoader worker (pid ...) is killed by signal" before it can save the stop
    checkpoint; the main process ends its workers itself when it stops.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def train(fabric, method: Method, optimizer: torch.optim.Optimizer, batches: Iterable[dict],
          schedules: Schedules, *, start_step: int, max_steps: int, steps_per_epoch: int = 1,
          accumulate_grad_batches: int = 1, clip_grad: float | None = None, clip_mode: str = "global",
          freeze_last_layer_steps: int = 0,
          save: Callable[[int], Path], checkpoint_every: int = 200, log_every: int = 10,
          on_log: Callable[[int, dict[str, float]], None] | None = None,
          on_step: Callable[[int, StepState, bool], None] | None = None,
          check_finite_every: int | None = None, stop: StopRequest | None = None) -> TrainResult:
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
        on_step: called after every step with (steps done, the step's state, whether it is the last one: the
            end or a stop), before that step's checkpoint (the health monitor measures here).
        check_finite_every: steps between host reads of the loss's finiteness (None: 1 on CPU, where the
            read is free, ``log_every`` on an accelerator with a fused optimizer); a non-finite loss stops
            the run before the weights change either way (see ``_FiniteGuard``).
        stop: the run's :class:`StopRequest`, already entered (None: the loop installs its own).
    """
    raw = getattr(method, "module", method)  # the unwrapped method: teacher updates bypass DDP
    result = TrainResult(start_step=start_step, step=start_step, seconds=0.0)
    batch_iter = iter(batches)
    device = next(raw.parameters()).device
    guard = _FiniteGuard(optimizer, check_finite_every or default_check_finite_every(optimizer, device, log_every),
                         device)
    t0 = time.perf_counter()
    step = start_step
    with (contextlib.nullcontext(stop) if stop is not None else StopRequest()) as stop:
        while step < max_steps:
            values = schedules.at(step)
            state = StepState(step=step, epoch=step / max(1, steps_per_epoch), values=values,
                              rank=int(getattr(fabric, "global_rank", 0)))
            set_optimizer_values(optimizer, lr=values["lr"], weight_decay=values["weight_decay"])
            logs_sum: dict[str, torch.Tensor] = {}
            for micro in range(accumulate_grad_batches):
                batch = next(batch_iter)
                with fabric.no_backward_sync(method, enabled=micro < accumulate_grad_batches - 1):
                    out = method(batch, replace(state, micro_batch=micro) if micro else state)
                    guard.after_forward(out.loss, step, result.last_checkpoint)
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

            # one read of the flag per step: a signal that lands after it is honoured at the next step boundary,
            # so a stop always comes with the checkpoint of the step it stops at
            stopping = stop.requested
            is_ckpt = step % checkpoint_every == 0 or step == max_steps or stopping
            if step % guard.every == 0 or is_ckpt:
                guard.check(result.last_checkpoint)
            if step % log_every == 0 or step == max_steps or step == start_step + 1:
                scalars = {k: float(fabric.all_reduce(v.detach().float(), reduce_op="mean")) for k, v in logs_sum.items()}
                scalars.update(values)
                fabric.log_dict(scalars, step=step)
                result.first_logs = result.first_logs or scalars
                result.last_logs = scalars
                if on_log is not None:
                    on_log(step, scalars)
            if on_step is not None:
                on_step(step, state, step == max_steps or stopping)
            if is_ckpt:
                result.last_checkpoint = save(step)
            if stopping:
                result.interrupted = True
                break
    result.step = step
    result.seconds = time.perf_counter() - t0
    return result
