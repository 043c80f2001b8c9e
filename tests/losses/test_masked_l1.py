"""Masked L1: hand-computed value, zero on a perfect masked reconstruction, gradient on masked voxels only."""
from __future__ import annotations

import torch

from organfm.losses.masked_l1 import MaskedL1Loss


def test_hand_computed_value_and_channel_normalisation():
    target = torch.zeros(1, 2, 1, 1, 3)
    pred = torch.tensor([[[[[1.0, 2.0, 4.0]]], [[[0.0, 1.0, 8.0]]]]])
    mask = torch.tensor([[[[1.0, 0.0, 1.0]]]])  # (B, D, H, W): voxels 0 and 2 hidden
    # sum |err| on masked voxels over both channels = (1 + 4) + (0 + 8) = 13; 2 masked voxels; 2 channels
    expected = 13 / (2 + 1e-5) / 2
    assert torch.isclose(MaskedL1Loss()(pred, target, mask), torch.tensor(expected))


def test_zero_when_masked_voxels_match_whatever_the_visible_ones():
    x = torch.rand(2, 1, 4, 4, 4)
    mask = (torch.rand(2, 1, 4, 4, 4) > 0.5).float()
    pred = torch.where(mask.bool(), x, x + 5.0)
    assert MaskedL1Loss()(pred, x, mask).item() == 0.0


def test_gradient_reaches_masked_voxels_only():
    x = torch.rand(2, 1, 4, 4, 4)
    mask = (torch.rand(2, 1, 4, 4, 4) > 0.5).float()
    pred = torch.rand(2, 1, 4, 4, 4, requires_grad=True)
    MaskedL1Loss()(pred, x, mask).backward()
    assert (pred.grad[mask == 0] == 0).all()
    assert (pred.grad[mask == 1] != 0).all()
