"""Tests for organfm.heads.ProjectionHead."""

from __future__ import annotations

import pytest
import torch

from organfm.heads import ProjectionHead


@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("use_bn", [False, True])
def test_shape_layers_and_gradients(num_layers: int, use_bn: bool) -> None:
    torch.manual_seed(0)
    head = ProjectionHead(32, hidden_dim=64, out_dim=16, num_layers=num_layers, use_bn=use_bn)
    out = head(torch.randn(8, 32))
    assert out.shape == (8, 16)
    assert sum(isinstance(m, torch.nn.Linear) for m in head.mlp) == num_layers
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in head.mlp) == (num_layers - 1) * use_bn
    out.pow(2).sum().backward()
    for name, param in head.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_output_is_not_normalised() -> None:
    torch.manual_seed(0)
    out = ProjectionHead(32, hidden_dim=64, out_dim=16)(10 * torch.randn(8, 32))
    assert not torch.allclose(out.norm(dim=1), torch.ones(8))


def test_defaults() -> None:
    torch.manual_seed(0)
    head = ProjectionHead(8)
    x = torch.randn(6, 8)
    out = head(x)
    assert out.shape == (6, 128)  # 128-d output by default
    # batch norm after the first layer by default: in training mode a positive rescaling of the input is
    # normalised away (a head without it would scale its output)
    torch.testing.assert_close(head(7.0 * x), out, rtol=1e-4, atol=1e-4)
    plain = ProjectionHead(8, use_bn=False)
    assert not torch.allclose(plain(7.0 * x), plain(x), atol=1e-3)
    with pytest.raises(ValueError, match="num_layers"):
        ProjectionHead(8, num_layers=0)
