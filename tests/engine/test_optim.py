"""The engine's optimizer: one weight-decay rule (none for ndim < 2), scheduled values, per-parameter clipping."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from organfm.engine.optim import build_optimizer, clip_grad_per_parameter, set_optimizer_values


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)  # weight ndim 4, bias ndim 1
        self.norm = nn.LayerNorm(2)  # weight and bias ndim 1
        self.fc = nn.Linear(2, 3)
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)


def _group_of(optimizer: torch.optim.Optimizer, p: torch.Tensor) -> dict:
    (group,) = [g for g in optimizer.param_groups if any(q is p for q in g["params"])]
    return group


def test_weights_decay_and_biases_norms_do_not_frozen_left_out():
    net = _Net()
    opt = build_optimizer(net, lr=0.1)
    set_optimizer_values(opt, lr=0.02, weight_decay=0.3)
    for p in (net.conv.weight, net.fc.weight):
        assert _group_of(opt, p)["weight_decay"] == 0.3 and _group_of(opt, p)["lr"] == 0.02
    for p in (net.conv.bias, net.norm.weight, net.norm.bias, net.fc.bias):
        assert _group_of(opt, p)["weight_decay"] == 0.0 and _group_of(opt, p)["lr"] == 0.02
    in_groups = {id(p) for g in opt.param_groups for p in g["params"]}
    assert id(net.frozen.weight) not in in_groups and id(net.frozen.bias) not in in_groups
    assert len(in_groups) == 6


def test_a_step_decays_only_the_weights():
    # zero gradients: AdamW's update is then the decoupled decay alone, p <- p * (1 - lr * wd)
    net = nn.Linear(2, 2)
    with torch.no_grad():
        net.weight.fill_(1.0)
        net.bias.fill_(1.0)
    opt = build_optimizer(net, lr=0.1)
    set_optimizer_values(opt, lr=0.1, weight_decay=0.5)
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    torch.testing.assert_close(net.weight, torch.full((2, 2), 0.95))
    torch.testing.assert_close(net.bias, torch.ones(2))


def test_only_biases_still_build_an_optimizer():
    opt = build_optimizer(nn.LayerNorm(4), lr=1.0)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["apply_weight_decay"] is False


def test_per_parameter_clipping_bounds_each_gradient_on_its_own():
    a, b = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2))
    a.grad, b.grad = torch.tensor([3.0, 4.0, 0.0]), torch.tensor([0.3, 0.4])  # norms 5 and 0.5
    clip_grad_per_parameter([a, b], 1.0)
    assert a.grad.norm().item() == pytest.approx(1.0, rel=1e-5)  # clipped to its own max
    torch.testing.assert_close(a.grad, torch.tensor([0.6, 0.8, 0.0]))  # direction kept
    assert torch.equal(b.grad, torch.tensor([0.3, 0.4]))  # under the max: untouched (a global norm would shrink it)
    c = nn.Parameter(torch.zeros(1))  # no gradient: skipped, not an error
    clip_grad_per_parameter([c], 1.0)
    assert c.grad is None
