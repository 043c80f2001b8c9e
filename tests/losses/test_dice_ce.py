"""Cross-entropy + soft Dice: closed forms, parity with a per-pixel loop in 2D and 3D, invariances, precision."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from organfm.losses.dice_ce import dice_ce_loss


def test_dice_ce_loss_closed_form() -> None:
    target = torch.randint(0, 3, (2, 8, 8), generator=torch.Generator().manual_seed(0))
    perfect = 50.0 * torch.nn.functional.one_hot(target, 3).movedim(-1, 1).float()
    assert dice_ce_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    uniform = torch.zeros(2, 3, 8, 8)
    # CE = log 3; soft Dice of class c = (2 * T_c / 3 + 1) / (128 / 3 + T_c + 1) with 128 pixels
    counts = torch.bincount(target.flatten(), minlength=3).float()
    dice = (2 * counts / 3 + 1) / (128 / 3 + counts + 1)
    expected = np.log(3) + 1 - dice[1:].mean().item()
    assert dice_ce_loss(uniform, target).item() == pytest.approx(expected, rel=1e-6)


def _naive(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> float:
    """The definition pixel by pixel: mean CE over B and voxels, plus 1 - mean foreground Dice pooled over B."""
    b, k = logits.shape[:2]
    flat_logits = logits.double().reshape(b, k, -1)
    flat_target = target.reshape(b, -1)
    ce, inter, sizes, n = 0.0, [0.0] * k, [0.0] * k, 0
    for i in range(b):
        for j in range(flat_target.shape[1]):
            z = flat_logits[i, :, j].tolist()
            m = max(z)
            denom = sum(math.exp(v - m) for v in z)
            p = [math.exp(v - m) / denom for v in z]
            t = int(flat_target[i, j])
            ce -= math.log(p[t])
            n += 1
            for c in range(k):
                inter[c] += p[c] * (t == c)
                sizes[c] += p[c] + (t == c)
    dice = [(2 * inter[c] + smooth) / (sizes[c] + smooth) for c in range(1, k)]
    return ce / n + (1 - sum(dice) / len(dice) if k > 1 else 0.0)


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (2, 4, 3, 3, 2)])  # (B, K, H, W) and (B, K, D, H, W)
def test_matches_a_per_pixel_loop_in_2d_and_3d(shape):
    g = torch.Generator().manual_seed(1)
    logits = 2 * torch.randn(shape, generator=g)
    target = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=g)
    assert dice_ce_loss(logits, target).item() == pytest.approx(_naive(logits, target), rel=1e-5)
    assert dice_ce_loss(logits, target, smooth=0.1).item() == pytest.approx(_naive(logits, target, 0.1), rel=1e-5)


def test_a_logit_shift_per_pixel_changes_nothing_and_background_is_not_in_the_dice():
    g = torch.Generator().manual_seed(2)
    logits, target = torch.randn(2, 3, 6, 6, generator=g), torch.randint(0, 3, (2, 6, 6), generator=g)
    shifted = logits + 7 * torch.randn(2, 1, 6, 6, generator=g)  # softmax is shift-invariant along K
    assert dice_ce_loss(shifted, target).item() == pytest.approx(dice_ce_loss(logits, target).item(), rel=1e-5)
    # a batch of background only, predicted as background: CE ~0 and the absent foreground scores ~1 (smooth)
    bg = torch.zeros(1, 6, 6, dtype=torch.long)
    confident = torch.tensor([30.0, 0.0, 0.0])[None, :, None, None].expand(1, 3, 6, 6)
    assert dice_ce_loss(confident, bg).item() == pytest.approx(0.0, abs=1e-6)


def test_one_class_is_cross_entropy_only_and_half_precision_is_computed_in_float32():
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    assert dice_ce_loss(torch.randn(1, 1, 4, 4), target).item() == 0.0
    g = torch.Generator().manual_seed(3)
    logits, target = torch.randn(2, 3, 8, 8, generator=g), torch.randint(0, 3, (2, 8, 8), generator=g)
    half = dice_ce_loss(logits.bfloat16(), target)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(dice_ce_loss(logits.bfloat16().float(), target).item(), rel=1e-6)


def test_the_gradient_pushes_the_true_class_up():
    logits = torch.zeros(1, 2, 2, 2, requires_grad=True)
    target = torch.tensor([[[1, 1], [0, 1]]])
    dice_ce_loss(logits, target).backward()
    onehot = torch.nn.functional.one_hot(target, 2).movedim(-1, 1).bool()
    assert (logits.grad[onehot] < 0).all() and (logits.grad[~onehot] > 0).all()
