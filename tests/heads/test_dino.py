"""Tests for organfm.heads.DINOHead: shapes, cosine bound, frozen g, deepcopy, gradients."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from organfm.heads import DINOHead

IN_DIM, OUT_DIM, HIDDEN_DIM, BOTTLENECK_DIM = 32, 128, 64, 16


def _head(**kwargs: object) -> DINOHead:
    torch.manual_seed(0)
    return DINOHead(
        IN_DIM, out_dim=OUT_DIM, hidden_dim=HIDDEN_DIM, bottleneck_dim=BOTTLENECK_DIM, **kwargs
    )


@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("use_bn", [False, True])
def test_output_shapes_and_normalised_bottleneck(num_layers: int, use_bn: bool) -> None:
    head = _head(num_layers=num_layers, use_bn=use_bn)
    x = torch.randn(5, IN_DIM)
    assert head(x).shape == (5, OUT_DIM)
    logits, bottleneck = head(x, return_bottleneck=True)
    assert logits.shape == (5, OUT_DIM)
    assert bottleneck.shape == (5, BOTTLENECK_DIM)
    torch.testing.assert_close(bottleneck.norm(dim=1), torch.ones(5))
    num_linear = sum(isinstance(m, torch.nn.Linear) for m in head.mlp)
    assert num_linear == num_layers


def test_default_dimensions() -> None:
    head = DINOHead(8)
    assert head.last_layer.weight_v.shape == (65536, 256)
    assert head.last_layer.weight_g.shape == (65536, 1)
    assert head.mlp[0].out_features == 2048


def test_logits_are_cosines_with_frozen_g() -> None:
    head = _head(norm_last_layer=True)
    assert not head.last_layer.weight_g.requires_grad
    torch.testing.assert_close(head.last_layer.weight_g, torch.ones(OUT_DIM, 1))
    with torch.no_grad():
        head.last_layer.weight_v.mul_(50.0)  # the norm of v must not matter
    logits, bottleneck = head(10 * torch.randn(64, IN_DIM), return_bottleneck=True)
    assert logits.abs().max() <= 1.0 + 1e-6
    expected = bottleneck @ F.normalize(head.last_layer.weight_v, dim=1).T
    torch.testing.assert_close(logits, expected)


def test_trainable_g_can_leave_unit_sphere() -> None:
    head = _head(norm_last_layer=False)
    assert head.last_layer.weight_g.requires_grad
    torch.testing.assert_close(head.last_layer.weight_g, torch.ones(OUT_DIM, 1))  # still init 1
    with torch.no_grad():
        head.last_layer.weight_g.fill_(3.0)
    logits = head(torch.randn(64, IN_DIM))
    assert logits.abs().max() > 1.0  # the bound above is a property of frozen g, not an accident


def test_init_trunc_normal_and_zero_bias() -> None:
    head = _head()
    for module in head.mlp:
        if isinstance(module, torch.nn.Linear):
            assert torch.count_nonzero(module.bias) == 0
            assert module.weight.abs().max() <= 2.0 + 1e-6  # trunc_normal cuts at +-2
            assert module.weight.std().item() == pytest.approx(0.02, rel=0.3)


def test_deepcopy_gives_identical_independent_copy() -> None:
    head = _head(use_bn=True).eval()
    teacher = copy.deepcopy(head)
    x = torch.randn(4, IN_DIM)
    torch.testing.assert_close(teacher(x), head(x), rtol=0, atol=0)
    assert not teacher.last_layer.weight_g.requires_grad
    with torch.no_grad():
        teacher.last_layer.weight_v.add_(1.0)
    assert not torch.equal(teacher.last_layer.weight_v, head.last_layer.weight_v)
    assert set(head.state_dict()) == set(teacher.state_dict())
    assert {"last_layer.weight_v", "last_layer.weight_g"} <= set(head.state_dict())


@pytest.mark.parametrize("norm_last_layer", [True, False])
@pytest.mark.parametrize("use_bn", [False, True])
def test_every_trainable_parameter_gets_gradient(norm_last_layer: bool, use_bn: bool) -> None:
    head = _head(norm_last_layer=norm_last_layer, use_bn=use_bn)
    head(torch.randn(6, IN_DIM)).pow(2).sum().backward()
    for name, param in head.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, name
            assert param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None, name


@pytest.mark.parametrize("norm_last_layer", [True, False])
def test_last_layer_parameters(norm_last_layer: bool) -> None:
    head = _head(norm_last_layer=norm_last_layer)
    last = head.last_layer
    assert {name for name, _ in last.named_parameters()} == {"weight_v", "weight_g"}
    trainable = [p for p in last.parameters() if p.requires_grad]
    expected = [last.weight_v, last.weight_g] if norm_last_layer is False else [last.weight_v]
    assert len(trainable) == len(expected)
    assert all(any(p is q for q in expected) for p in trainable)
    # The engine's freeze_last_layer: dropping these grads leaves the MLP grads intact.
    head(torch.randn(4, IN_DIM)).sum().backward()
    for p in last.parameters():
        p.grad = None
    assert all(p.grad is not None for p in head.mlp.parameters())


def test_rejects_zero_layers() -> None:
    with pytest.raises(ValueError, match="num_layers"):
        DINOHead(8, num_layers=0)
