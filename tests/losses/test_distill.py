"""MMKD's losses against naive loops and the seed's identities (teacher = student gives CLIP; ICL symmetric)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from organfm.losses.distill import (DistillLoss, clamp_logit_scale, clip_loss, feature_distillation,
                                    interactive_contrastive)


def _unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def _naive_ce(logits: torch.Tensor) -> float:
    # -log softmax of the diagonal, averaged over rows, one row at a time
    total = 0.0
    for i in range(logits.shape[0]):
        row = logits[i].tolist()
        total += -(row[i] - math.log(sum(math.exp(v) for v in row)))
    return total / logits.shape[0]


def test_clip_loss_matches_a_naive_loop():
    a, b = _unit(5, 8, seed=1), _unit(5, 8, seed=2)
    expected = 0.5 * (_naive_ce(3.0 * a @ b.T) + _naive_ce(3.0 * b @ a.T))
    assert math.isclose(clip_loss(a, b, 3.0).item(), expected, rel_tol=1e-5)


def test_icl_matches_a_naive_loop_and_is_symmetric():
    s_a, s_b, t_a, t_b = (_unit(6, 4, seed=k) for k in range(4))
    c = 2.5
    expected = 0.5 * (_naive_ce(c * s_a @ t_b.T) + _naive_ce(c * s_b @ t_a.T))
    assert math.isclose(interactive_contrastive(s_a, s_b, t_a, t_b, c).item(), expected, rel_tol=1e-5)
    # swapping the two modalities (student and teacher together) leaves the loss unchanged
    swapped = interactive_contrastive(s_b, s_a, t_b, t_a, c)
    assert torch.allclose(swapped, interactive_contrastive(s_a, s_b, t_a, t_b, c), atol=1e-6)
    # each half pairs a student modality with the teacher's OTHER one: changing t_a moves the loss
    assert not torch.allclose(interactive_contrastive(s_a, s_b, _unit(6, 4, seed=9), t_b, c), swapped)


def test_loss_reduces_to_clip_when_the_teacher_is_the_student():
    s_a, s_b = _unit(8, 16, seed=3), _unit(8, 16, seed=4)
    logit_scale = torch.tensor(math.log(1 / 0.07))
    c = torch.tensor(math.log(1 / 0.07))
    loss = DistillLoss(fd_weight=50.0)
    terms = loss.terms(s_a, s_b, s_a.clone(), s_b.clone(), logit_scale, c)
    assert terms["fd"].item() == 0.0
    assert torch.allclose(terms["icl"], clip_loss(s_a, s_b, c), atol=1e-6)  # ICL = CLIP at scale c
    assert torch.allclose(terms["task"], clip_loss(s_a, s_b, 1 / 0.07), atol=1e-5)
    # with the ICL weight at 0, the whole loss is the CLIP loss
    only_clip = DistillLoss(fd_weight=50.0, icl_weight=0.0)(s_a, s_b, s_a, s_b, logit_scale, c)
    assert torch.allclose(only_clip, clip_loss(s_a, s_b, 1 / 0.07), atol=1e-5)


def test_feature_distillation_is_the_sum_of_two_mses():
    s_a, s_b = torch.zeros(2, 3), torch.zeros(2, 3)
    t_a, t_b = torch.ones(2, 3), torch.full((2, 3), 2.0)
    assert feature_distillation(s_a, s_b, t_a, t_b).item() == 1.0 + 4.0


def test_total_weights_and_the_logit_scale_used_as_is_with_a_gradient_above_ln_100():
    s_a, s_b, t_a, t_b = (_unit(4, 8, seed=k) for k in range(10, 14))
    big = torch.tensor(6.0, requires_grad=True)  # exp(6) > 100: the forward does not clamp (the method does, after)
    c = torch.tensor(1.0)
    terms = DistillLoss(fd_weight=7.0, icl_weight=3.0).terms(s_a, s_b, t_a, t_b, big, c)
    assert torch.allclose(terms["task"], clip_loss(s_a, s_b, math.exp(6.0)), atol=1e-5)
    assert torch.allclose(terms["loss"], terms["task"] + 7.0 * terms["fd"] + 3.0 * terms["icl"], atol=1e-6)
    terms["loss"].backward()
    assert big.grad.abs() > 0


def test_clamp_logit_scale_in_place():
    p = torch.nn.Parameter(torch.tensor(7.0))
    clamp_logit_scale(p, 100.0)
    assert math.isclose(p.item(), math.log(100.0), rel_tol=1e-6)
    p.data.fill_(-2.0)
    clamp_logit_scale(p, 100.0)
    assert p.item() == 0.0


def test_fd_scale_sum_is_d_times_per_dim_so_its_strength_does_not_depend_on_d():
    for d in (8, 64):
        s_a, s_b, t_a, t_b = (_unit(4, d, seed=k) for k in range(30, 34))
        per_dim = DistillLoss(fd_scale="per_dim").terms(s_a, s_b, t_a, t_b, torch.tensor(1.0), torch.tensor(1.0))
        summed = DistillLoss(fd_scale="sum").terms(s_a, s_b, t_a, t_b, torch.tensor(1.0), torch.tensor(1.0))
        assert torch.allclose(summed["fd"], d * per_dim["fd"], rtol=1e-5)
        # random unit vectors: ||s - t||² ≈ 2 at every D, so the summed term is ≈ 4 (two modalities) at any D
        assert 2.0 < summed["fd"].item() < 6.0
    with pytest.raises(ValueError, match="fd_scale must be one of per_dim, sum"):
        DistillLoss(fd_scale="mean")


def test_gradients_reach_the_student_and_both_scales_not_the_teacher():
    s_a, s_b = _unit(4, 8, seed=20).requires_grad_(), _unit(4, 8, seed=21).requires_grad_()
    t_a, t_b = _unit(4, 8, seed=22).requires_grad_(), _unit(4, 8, seed=23).requires_grad_()
    ls, c = torch.tensor(2.0, requires_grad=True), torch.tensor(2.6, requires_grad=True)
    DistillLoss()(s_a, s_b, t_a.detach(), t_b.detach(), ls, c).backward()
    assert s_a.grad.abs().sum() > 0 and s_b.grad.abs().sum() > 0
    assert ls.grad.abs() > 0 and c.grad.abs() > 0
    assert t_a.grad is None and t_b.grad is None


def _naive_soft_ce(logits: torch.Tensor, groups: list[int]) -> float:
    # each row's target spreads evenly over the columns of its group, one row at a time
    total = 0.0
    for i in range(logits.shape[0]):
        row = logits[i].tolist()
        log_z = math.log(sum(math.exp(v) for v in row))
        pos = [j for j, g in enumerate(groups) if g == groups[i]]
        total += -sum(row[j] - log_z for j in pos) / len(pos)
    return total / logits.shape[0]


def test_repeated_texts_are_positives_of_each_other():
    a, b = _unit(5, 8, seed=5), _unit(5, 8, seed=6)
    # distinct groups: exactly plain CLIP
    assert torch.allclose(clip_loss(a, b, 4.0, torch.arange(5)), clip_loss(a, b, 4.0), atol=1e-6)
    groups = [0, 1, 0, 2, 1]
    expected = 0.5 * (_naive_soft_ce(4.0 * a @ b.T, groups) + _naive_soft_ce(4.0 * b @ a.T, groups))
    assert math.isclose(clip_loss(a, b, 4.0, torch.tensor(groups)).item(), expected, rel_tol=1e-5)
    s_a, s_b, t_a, t_b = (_unit(5, 8, seed=k) for k in range(10, 14))
    expected = 0.5 * (_naive_soft_ce(2.0 * s_a @ t_b.T, groups) + _naive_soft_ce(2.0 * s_b @ t_a.T, groups))
    assert math.isclose(interactive_contrastive(s_a, s_b, t_a, t_b, 2.0, torch.tensor(groups)).item(), expected,
                        rel_tol=1e-5)
    # with grouped positives, the teacher = student identity still holds
    terms = DistillLoss().terms(a, b, a, b, torch.tensor(1.0), torch.tensor(2.0), groups=torch.tensor(groups))
    assert terms["fd"].item() == 0.0
    assert torch.allclose(terms["icl"], clip_loss(a, b, 2.0, torch.tensor(groups)), atol=1e-6)
