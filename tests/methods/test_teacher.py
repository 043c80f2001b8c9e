"""The EMA teacher: a frozen copy that follows the student by θ_t ← m·θ_t + (1 − m)·θ_s, checked by hand;
it never receives a gradient; and the prototype teacher's health signals on closed-form outputs."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from organfm.losses import DINOLoss
from organfm.methods import create_method
from organfm.methods.teacher import EMATeacherMethod, build_ema_teacher, ema_update, prototype_health
from tests.methods.helpers import batch, grads_reach_exactly_the_student, state, tiny_backbone


def _net() -> nn.Module:
    """A linear layer with known weights and a BatchNorm whose running statistics are buffers."""
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        net[0].bias.copy_(torch.tensor([0.5, -0.5]))
    return net


def test_the_teacher_starts_as_a_frozen_independent_copy():
    student = _net()
    teacher = build_ema_teacher(student)
    for (name, s), t in zip(student.named_parameters(), teacher.parameters()):
        assert torch.equal(s, t) and s.data_ptr() != t.data_ptr(), name
        assert s.requires_grad and not t.requires_grad, name
    with torch.no_grad():
        student[0].weight.add_(1.0)
    assert teacher[0].weight.tolist() == [[1.0, 2.0], [3.0, 4.0]]  # the copy does not follow by reference


def test_ema_update_by_hand_and_buffers_are_copied():
    student, teacher = _net(), _net()
    with torch.no_grad():
        teacher[0].weight.zero_()
        teacher[0].bias.fill_(1.0)
    student.train()(torch.tensor([[1.0, 0.0], [3.0, 2.0]]))  # moves the student's BatchNorm running mean
    ema_update(teacher, student, momentum=0.9)
    # 0.9 · 0 + 0.1 · W_s, and 0.9 · 1 + 0.1 · b_s
    assert torch.allclose(teacher[0].weight, torch.tensor([[0.1, 0.2], [0.3, 0.4]]), atol=1e-7)
    assert teacher[0].bias.tolist() == pytest.approx([0.9 + 0.05, 0.9 - 0.05], abs=1e-7)
    assert torch.equal(teacher[1].running_mean, student[1].running_mean)
    assert int(teacher[1].num_batches_tracked) == 1
    # a second step compounds: 0.9 · 0.1 + 0.1 · 1 = 0.19 for the first weight
    ema_update(teacher, student, momentum=0.9)
    assert teacher[0].weight[0, 0].item() == pytest.approx(0.19, abs=1e-7)
    # m = 1 freezes the teacher; m = 0 makes it the student
    frozen = teacher[0].weight.clone()
    ema_update(teacher, student, momentum=1.0)
    assert torch.equal(teacher[0].weight, frozen)
    ema_update(teacher, student, momentum=0.0)
    assert torch.equal(teacher[0].weight, student[0].weight)


def test_ema_update_refuses_a_teacher_of_another_structure():
    with pytest.raises(ValueError, match="differ in structure"):
        ema_update(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), momentum=0.9)


class _Pair(EMATeacherMethod):
    """The smallest EMA-teacher method: the student regresses onto the teacher's output."""

    def __init__(self) -> None:
        super().__init__()
        self.student = _net()[0]
        self.teacher = build_ema_teacher(self.student)

    def forward(self, batch: dict, state) -> torch.Tensor:
        return (self.student(batch["x"]) - self.teacher(batch["x"]) - batch["y"]).square().mean()


def test_the_teacher_gets_no_gradient_and_follows_after_each_step():
    method = _Pair()
    assert EMATeacherMethod.schedules == ("momentum", "teacher_temp")
    loss = method({"x": torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "y": torch.tensor([[1.0, 2.0], [3.0, -1.0]])},
                  state())
    loss.backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.student.parameters())
    before = [p.clone() for p in method.teacher.parameters()]
    torch.optim.SGD(method.student.parameters(), lr=0.5).step()
    method.after_step(state(momentum=0.75))
    for old, t, s in zip(before, method.teacher.parameters(), method.student.parameters()):
        assert torch.allclose(t, 0.75 * old + 0.25 * s, atol=1e-7)
        assert not torch.equal(t, old)  # the student moved, so the teacher did


def test_a_registered_ema_method_keeps_its_teacher_out_of_backward_and_moves_it_by_ema():
    torch.manual_seed(0)
    method = create_method("dino", backbone=tiny_backbone())
    out = method(batch(), state())
    grads_reach_exactly_the_student(method, out)
    teacher = dict(method.teacher.named_parameters())
    before = {k: p.clone() for k, p in teacher.items()}
    torch.optim.SGD([p for p in method.student.parameters() if p.requires_grad], lr=0.1).step()
    method.after_step(state(momentum=0.9))
    student = dict(method.student.named_parameters())
    assert teacher.keys() <= student.keys()
    moved = 0
    for k, t in teacher.items():
        assert torch.allclose(t, 0.9 * before[k] + 0.1 * student[k], atol=1e-6), k
        moved += not torch.equal(t, before[k])
    assert moved > 0


def test_prototype_health_on_closed_form_teacher_outputs():
    k = 4
    loss = DINOLoss(k)  # centre 0
    uniform = prototype_health(loss, torch.zeros(6, k), teacher_temp=0.04)
    assert uniform["log_k"] == pytest.approx(math.log(k))
    assert uniform["teacher_entropy"] == pytest.approx(math.log(k), abs=1e-6)
    assert uniform["teacher_batch_entropy"] == pytest.approx(math.log(k), abs=1e-6)
    # each sample sure of a different prototype: per-sample entropy ~0, the batch still spreads over all K
    sure = prototype_health(loss, 10.0 * torch.eye(k), teacher_temp=0.04)
    assert sure["teacher_entropy"] == pytest.approx(0.0, abs=1e-6)
    assert sure["teacher_batch_entropy"] == pytest.approx(math.log(k), abs=1e-6)
    # every sample sure of the same prototype: collapse, both ~0
    collapsed = prototype_health(loss, 10.0 * torch.eye(k)[[0, 0, 0]], teacher_temp=0.04)
    assert collapsed["teacher_batch_entropy"] == pytest.approx(0.0, abs=1e-6)
