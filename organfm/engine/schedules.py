"""Schedules as per-step arrays, pure functions of the global step (DINO's ``cosine_scheduler``)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Schedules", "build_schedules", "cosine_schedule", "warmup_constant_schedule"]


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
class Schedules:
    """Per-step values; a step past the horizon keeps the last value (training may outrun its schedule)."""

    lr: np.ndarray
    weight_decay: np.ndarray
    momentum: np.ndarray
    teacher_temp: np.ndarray

    def __len__(self) -> int:
        return len(self.lr)

    def at(self, step: int) -> dict[str, float]:
        i = min(step, len(self.lr) - 1)
        return {"lr": float(self.lr[i]), "weight_decay": float(self.weight_decay[i]),
                "momentum": float(self.momentum[i]), "teacher_temp": float(self.teacher_temp[i])}


def build_schedules(*, total_steps: int, steps_per_epoch: int, lr: float, min_lr: float, warmup_epochs: float,
                    weight_decay: float, weight_decay_end: float, momentum: float, momentum_end: float,
                    teacher_temp: float, warmup_teacher_temp: float, warmup_teacher_temp_epochs: float) -> Schedules:
    """The four DINO schedules over ``total_steps``, epochs converted to steps here and only here."""
    return Schedules(
        lr=cosine_schedule(lr, min_lr, total_steps, warmup_steps=math.ceil(warmup_epochs * steps_per_epoch)),
        weight_decay=cosine_schedule(weight_decay, weight_decay_end, total_steps),
        momentum=cosine_schedule(momentum, momentum_end, total_steps),
        teacher_temp=warmup_constant_schedule(warmup_teacher_temp, teacher_temp,
                                              math.ceil(warmup_teacher_temp_epochs * steps_per_epoch), total_steps),
    )
