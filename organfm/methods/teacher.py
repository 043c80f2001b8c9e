"""EMA teacher: an exact copy of the student that follows it by exponential moving average."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from organfm.methods.base import Method, StepState

__all__ = ["EMATeacherMethod", "build_ema_teacher", "ema_update", "prototype_health"]


@torch.no_grad()
def prototype_health(loss, teacher_logits: torch.Tensor, teacher_temp: float) -> dict[str, float]:
    """Per-sample and batch-mean entropy of a prototype teacher, against ln K (the monitor's prototype family).

    Args:
        loss: the ``DINOLoss`` (or ``MaskedTokenLoss``) whose centre the teacher's outputs are taken against.
        teacher_logits: (N, K) teacher head outputs.
        teacher_temp: the teacher temperature of this step.
    """
    out = teacher_logits.unsqueeze(0)
    return {"teacher_entropy": float(loss.entropy(out, teacher_temp=teacher_temp)),
            "teacher_batch_entropy": float(loss.batch_entropy(out, teacher_temp=teacher_temp)),
            "log_k": math.log(teacher_logits.shape[-1])}


def build_ema_teacher(student: nn.Module) -> nn.Module:
    """A frozen deep copy of ``student`` (DINO: the teacher starts equal to the student)."""
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """θ_t ← m·θ_t + (1 − m)·θ_s for every parameter; buffers are copied from the student.

    Args:
        teacher: module with the same structure as ``student``.
        student: the trained module.
        momentum: m in [0, 1]; 1 freezes the teacher.
    """
    t_params = list(teacher.parameters())
    s_params = [p.detach() for p in student.parameters()]
    if len(t_params) != len(s_params):
        raise ValueError("teacher and student differ in structure")
    torch._foreach_lerp_(t_params, s_params, 1.0 - momentum)
    for t_buf, s_buf in zip(teacher.buffers(), student.buffers()):
        t_buf.copy_(s_buf)


class EMATeacherMethod(Method):
    """A method whose ``teacher`` follows its ``student`` by EMA and whose targets use a teacher temperature.

    Declares the ``momentum`` and ``teacher_temp`` schedules (``teacher.*`` config keys) and applies the EMA
    step after every optimizer step; subclasses build ``self.student`` then ``self.teacher``.
    """

    schedules = ("momentum", "teacher_temp")

    def after_step(self, state: StepState) -> None:
        ema_update(self.teacher, self.student, state["momentum"])
