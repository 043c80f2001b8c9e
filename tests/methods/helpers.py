"""Tiny batches and backbones for method tests."""
from __future__ import annotations

import torch

from organfm.backbones import create_backbone
from organfm.methods import StepState


def tiny_backbone():
    return create_backbone("test_convnext", in_chans=1)


def state(teacher_temp: float = 0.04, momentum: float = 0.996, step: int = 0) -> StepState:
    """A step state carrying the schedules a teacher-student method reads."""
    return StepState(step=step, values={"lr": 1e-3, "weight_decay": 0.04, "momentum": momentum,
                                        "teacher_temp": teacher_temp})


def batch(b: int = 6, num_global: int = 2, num_local: int = 3, size: int = 32, local: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return {"global": [torch.randn(b, 1, size, size, generator=g) for _ in range(num_global)],
            "local": [torch.randn(b, 1, local, local, generator=g) for _ in range(num_local)],
            "organ": torch.tensor([0, 0, 1, 1, 2, -1][:b])}


def grads_reach_exactly_the_student(method, out) -> None:
    out.loss.backward()
    for name, p in method.named_parameters():
        if name.startswith("teacher."):
            assert p.grad is None, f"teacher parameter {name} got a gradient"
        elif p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"student parameter {name} got no gradient"
