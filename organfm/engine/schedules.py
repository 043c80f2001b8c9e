"""Schedules as per-step arrays, pure functions of the global step (DINO's ``cosine_scheduler``).

Every method gets ``lr`` and ``weight_decay``; a method lists the others it reads in ``Method.schedules``
(an EMA teacher: ``momentum`` and ``teacher_temp``). A method that needs a new one registers it with
``register_schedule(name)`` in its own module.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from organfm.registry import Registry

__all__ = ["ScheduleContext", "Schedules", "build_schedules", "cosine_schedule", "register_schedule",
           "warmup_constant_schedule"]


def cosine_schedule(base: float, final: float, total_steps: int, warmup_steps: int = 0,
                    warmup_start: float = 0.0) -> np.ndarray:
    """Linear warmup from ``warmup_start`` to ``base``, then cosine from ``base`` to ``final``.

    Returns:
        (total_steps,) float64: value at step i is ``final + (base - final) * (1 + cos(pi * t)) / 2`` with
        t going from 0 at the end of warmup to 1 at the last step.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    warmup_steps = min(max(0, warmup_steps), total_steps)
    warmup = np.linspace(warmup_start, base, warmup_steps, endpoint=False) if warmup_steps else np.zeros(0)
    n = total_steps - warmup_steps
    t = np.arange(n) / max(1, n - 1)
    cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * t))
    return np.concatenate([warmup, cosine])


def warmup_constant_schedule(start: float, end: float, warmup_steps: int, total_steps: int) -> np.ndarray:
    """Linear from ``start`` to ``end`` over ``warmup_steps``, then constant (DINO's teacher temperature)."""
    warmup_steps = min(max(0, warmup_steps), total_steps)
    return np.concatenate([np.linspace(start, end, warmup_steps), np.full(total_steps - warmup_steps, end)])


@dataclass
class ScheduleContext:
    """What a schedule builder may read: the horizon and the config sections that hold schedule settings.

    Attributes:
        total_steps: the schedules' horizon (``trainer.epochs`` x ``steps_per_epoch``).
        steps_per_epoch: optimisation steps per epoch (epochs in the config become steps here).
        optim: the ``optim.*`` section.
        teacher: the ``teacher.*`` section.
        method: the method's ``method.*`` config (for schedules a method adds).
    """

    total_steps: int
    steps_per_epoch: int
    optim: Any
    teacher: Any
    method: Any = None


_SCHEDULES: Registry[Callable[[ScheduleContext], np.ndarray]] = Registry("schedule")
register_schedule = _SCHEDULES.register
ALWAYS = ("lr", "weight_decay")  # every method is optimised with scheduled lr and weight decay


@register_schedule("lr")
def _lr(ctx: ScheduleContext) -> np.ndarray:
    o = ctx.optim
    return cosine_schedule(o.lr, o.min_lr, ctx.total_steps, warmup_steps=math.ceil(o.warmup_epochs * ctx.steps_per_epoch))


@register_schedule("weight_decay")
def _weight_decay(ctx: ScheduleContext) -> np.ndarray:
    return cosine_schedule(ctx.optim.weight_decay, ctx.optim.weight_decay_end, ctx.total_steps)


@register_schedule("momentum")
def _momentum(ctx: ScheduleContext) -> np.ndarray:
    """EMA momentum of a teacher: cosine from ``teacher.momentum`` to ``teacher.momentum_end``."""
    return cosine_schedule(ctx.teacher.momentum, ctx.teacher.momentum_end, ctx.total_steps)


@register_schedule("teacher_temp")
def _teacher_temp(ctx: ScheduleContext) -> np.ndarray:
    """Teacher temperature: linear warmup from ``teacher.warmup_temp`` to ``teacher.temp``, then constant."""
    t = ctx.teacher
    return warmup_constant_schedule(t.warmup_temp, t.temp, math.ceil(t.warmup_temp_epochs * ctx.steps_per_epoch),
                                    ctx.total_steps)


@dataclass
class Schedules:
    """Per-step values by name; a step past the horizon keeps the last value (training may outrun its schedule)."""

    values: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.values.values())))

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def at(self, step: int) -> dict[str, float]:
        i = min(step, len(self) - 1)
        return {name: float(v[i]) for name, v in self.values.items()}


def build_schedules(names: tuple[str, ...] | list[str], ctx: ScheduleContext) -> Schedules:
    """The schedules ``lr``, ``weight_decay`` and ``names`` over ``ctx.total_steps`` (epochs become steps here)."""
    return Schedules({name: _SCHEDULES.get(name)(ctx) for name in dict.fromkeys([*ALWAYS, *names])})
