"""Tests for organfm.losses.DINOLoss: naive loop, hand-computed toys, lightly parity, invariance."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from organfm.losses import DINOLoss


def _naive_dino(
    teacher_out: torch.Tensor,
    student_out: torch.Tensor,
    center: torch.Tensor,
    teacher_temp: float,
    student_temp: float,
    skip_same_view: bool,
) -> torch.Tensor:
    """DINO paper / main_dino.py maths with explicit python loops over view pairs and samples."""
    num_teacher_views, batch_size, _ = teacher_out.shape
    total, num_pairs = 0.0, 0
    for i in range(num_teacher_views):
        for j in range(student_out.shape[0]):
            if skip_same_view and i == j:
                continue
            pair_total = 0.0
            for b in range(batch_size):
                q = F.softmax((teacher_out[i, b] - center[0]) / teacher_temp, dim=0)
                log_p = F.log_softmax(student_out[j, b] / student_temp, dim=0)
                pair_total = pair_total + torch.sum(-q * log_p)
            total = total + pair_total / batch_size
            num_pairs += 1
    return total / num_pairs


@pytest.mark.parametrize(
    ("num_teacher_views", "num_student_views", "skip_same_view"),
    [(2, 8, True), (1, 12, False), (2, 2, True), (2, 3, False)],
)
def test_matches_naive_loop(
    num_teacher_views: int, num_student_views: int, skip_same_view: bool
) -> None:
    gen = torch.Generator().manual_seed(0)
    batch_size, out_dim = 5, 32
    teacher_out = torch.randn(
        num_teacher_views, batch_size, out_dim, generator=gen, dtype=torch.float64
    )
    student_out = torch.randn(
        num_student_views, batch_size, out_dim, generator=gen, dtype=torch.float64
    )
    loss_fn = DINOLoss(out_dim, student_temp=0.1).double()
    loss_fn.center.copy_(torch.randn(1, out_dim, generator=gen))

    loss = loss_fn(teacher_out, student_out, teacher_temp=0.04, skip_same_view=skip_same_view)
    expected = _naive_dino(teacher_out, student_out, loss_fn.center, 0.04, 0.1, skip_same_view)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-10)


def test_hand_computed_single_pair() -> None:
    # K = 2, one teacher view, one student view, B = 1, teacher_temp = student_temp = 0.1.
    # center c = [0.1, -0.2]; teacher t = [0.1 ln3 + 0.1, -0.2] -> (t - c) / 0.1 = [ln 3, 0]
    #   -> q = [3/4, 1/4].  (Adding the center instead would give a different q.)
    # student s = [0, 0.1 ln3] -> s / 0.1 = [0, ln 3] -> p = [1/4, 3/4].
    # CE = -(3/4 ln 1/4 + 1/4 ln 3/4) = 3/4 ln4 + 1/4 ln4 - 1/4 ln3 = ln 4 - (ln 3) / 4 = 1.1116413
    ln3 = math.log(3.0)
    loss_fn = DINOLoss(2, student_temp=0.1)
    loss_fn.center.copy_(torch.tensor([[0.1, -0.2]]))
    teacher_out = torch.tensor([[[0.1 * ln3 + 0.1, -0.2]]], dtype=torch.float64)
    student_out = torch.tensor([[[0.0, 0.1 * ln3]]], dtype=torch.float64)
    loss = loss_fn(teacher_out, student_out, teacher_temp=0.1, skip_same_view=False)
    # The center buffer is float32, so 0.1 carries ~1e-8 rounding error.
    assert loss.item() == pytest.approx(math.log(4.0) - ln3 / 4, abs=1e-6)
    assert loss.item() == pytest.approx(1.1116413, abs=1e-6)


def test_hand_computed_multi_view_skips_diagonal() -> None:
    # K = 2, B = 1, both temperatures 1, center 0.
    # Teacher views: q0 = softmax([ln3, 0]) = [3/4, 1/4], q1 = softmax([0, 0]) = [1/2, 1/2].
    # Student views: p0 = [1/4, 3/4], p1 = [1/2, 1/2], p2 = [3/4, 1/4].
    # Pairs kept (i != j): (0,1), (0,2), (1,0), (1,2).
    #   CE(q0, p1) = ln 2
    #   CE(q0, p2) = -(3/4 ln 3/4 + 1/4 ln 1/4) = ln 4 - 3/4 ln 3
    #   CE(q1, p0) = -(1/2 ln 1/4 + 1/2 ln 3/4) = ln 4 - 1/2 ln 3
    #   CE(q1, p2) = ln 4 - 1/2 ln 3
    # sum = ln2 + 3 ln4 - 7/4 ln3 = 7 ln2 - 7/4 ln3;  mean = 7/4 ln2 - 7/16 ln3 = 0.7323647
    ln3 = math.log(3.0)
    teacher_out = torch.tensor([[[ln3, 0.0]], [[0.0, 0.0]]], dtype=torch.float64)
    student_out = torch.tensor([[[0.0, ln3]], [[0.0, 0.0]], [[ln3, 0.0]]], dtype=torch.float64)
    loss_fn = DINOLoss(2, student_temp=1.0)
    loss = loss_fn(teacher_out, student_out, teacher_temp=1.0)
    expected = 7 / 4 * math.log(2.0) - 7 / 16 * ln3
    assert loss.item() == pytest.approx(expected, abs=1e-9)
    assert loss.item() == pytest.approx(0.7323647, abs=1e-6)
    # Without skipping, the diagonal pairs CE(q0,p0) = ln4 - 1/4 ln3 and CE(q1,p1) = ln2 are added:
    # (7 ln2 - 7/4 ln3 + 2 ln2 - 1/4 ln3 + ln2) / 6 = (10 ln2 - 2 ln3) / 6.
    loss_all = loss_fn(teacher_out, student_out, teacher_temp=1.0, skip_same_view=False)
    assert loss_all.item() == pytest.approx((10 * math.log(2.0) - 2 * ln3) / 6, abs=1e-9)


def test_matches_lightly_loss_and_center() -> None:
    lightly_loss = pytest.importorskip("lightly.loss")
    gen = torch.Generator().manual_seed(1)
    num_teacher_views, num_student_views, batch_size, out_dim = 2, 8, 6, 64
    teacher_out = torch.randn(num_teacher_views, batch_size, out_dim, generator=gen)
    student_out = torch.randn(num_student_views, batch_size, out_dim, generator=gen)
    center = 0.3 * torch.randn(1, out_dim, generator=gen)

    ours = DINOLoss(out_dim, student_temp=0.1, center_momentum=0.9)
    ours.center.copy_(center)
    # lightly's own temperature schedule is neutralised by passing teacher_temp per call and
    # making warmup == final temperature; its center has shape (1, 1, K).
    theirs = lightly_loss.DINOLoss(
        output_dim=out_dim,
        warmup_teacher_temp=0.05,
        teacher_temp=0.05,
        warmup_teacher_temp_epochs=1,
        student_temp=0.1,
        center_momentum=0.9,
    )
    theirs.center.copy_(center.view(1, 1, out_dim))

    loss = ours(teacher_out, student_out, teacher_temp=0.05)
    ref = theirs(list(teacher_out), list(student_out), teacher_temp=0.05)  # also updates its center
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)

    ours.update(teacher_out)
    torch.testing.assert_close(ours.center, theirs.center.view(1, out_dim), rtol=1e-6, atol=1e-7)


def test_invariant_to_per_sample_logit_shift() -> None:
    gen = torch.Generator().manual_seed(2)
    teacher_out = torch.randn(2, 4, 16, generator=gen, dtype=torch.float64)
    student_out = torch.randn(6, 4, 16, generator=gen, dtype=torch.float64)
    loss_fn = DINOLoss(16)
    loss = loss_fn(teacher_out, student_out, teacher_temp=0.04)
    # softmax / log_softmax ignore a constant added to all K logits of one sample.
    shifted = loss_fn(
        teacher_out + 5.0 * torch.randn(2, 4, 1, generator=gen, dtype=torch.float64),
        student_out + 5.0 * torch.randn(6, 4, 1, generator=gen, dtype=torch.float64),
        teacher_temp=0.04,
    )
    torch.testing.assert_close(loss, shifted, rtol=1e-10, atol=1e-10)
    # A non-constant change must move the loss (the check above can fail).
    perturbed = loss_fn(teacher_out, student_out.flip(-1), teacher_temp=0.04)
    assert not torch.isclose(loss, perturbed)


def test_gradient_reaches_student_only() -> None:
    teacher_out = torch.randn(2, 4, 16, requires_grad=True)
    student_out = torch.randn(8, 4, 16, requires_grad=True)
    loss = DINOLoss(16)(teacher_out, student_out, teacher_temp=0.04)
    loss.backward()
    assert student_out.grad is not None
    assert student_out.grad.abs().sum() > 0
    assert teacher_out.grad is None


def test_update_follows_ema_formula_and_forward_does_not_touch_center() -> None:
    gen = torch.Generator().manual_seed(3)
    loss_fn = DINOLoss(16, center_momentum=0.8)
    center0 = torch.randn(1, 16, generator=gen)
    loss_fn.center.copy_(center0)
    teacher_out = torch.randn(2, 4, 16, generator=gen)

    loss_fn(teacher_out, torch.randn(8, 4, 16, generator=gen), teacher_temp=0.04)
    torch.testing.assert_close(loss_fn.center, center0, rtol=0, atol=0)

    loss_fn.update(teacher_out)
    expected = 0.8 * center0 + 0.2 * teacher_out.mean(dim=(0, 1), keepdim=False).unsqueeze(0)
    torch.testing.assert_close(loss_fn.center, expected)
    assert loss_fn.center.shape == (1, 16)
    assert "center" in loss_fn.state_dict()


def test_entropy_diagnostic() -> None:
    loss_fn = DINOLoss(8)
    # Equal logits -> uniform teacher -> entropy = ln K.
    assert loss_fn.entropy(torch.zeros(2, 3, 8), 0.04).item() == pytest.approx(
        math.log(8), abs=1e-6
    )
    # One dominant prototype with a sharp temperature -> entropy ~ 0.
    peaked = torch.zeros(2, 3, 8)
    peaked[..., 0] = 10.0
    assert loss_fn.entropy(peaked, 0.04).item() < 1e-6
    # Centering is applied: subtracting the peak via the center gives back the uniform case.
    loss_fn.center.copy_(peaked[0, 0].unsqueeze(0))
    assert loss_fn.entropy(peaked, 0.04).item() == pytest.approx(math.log(8), abs=1e-6)


def test_raises_without_pairs_and_on_bad_shapes() -> None:
    loss_fn = DINOLoss(4)
    with pytest.raises(ValueError, match="no \\(teacher, student\\) view pair"):
        loss_fn(torch.randn(1, 2, 4), torch.randn(1, 2, 4), teacher_temp=0.04)
    with pytest.raises(ValueError, match="shape"):
        loss_fn(torch.randn(2, 4), torch.randn(2, 2, 4), teacher_temp=0.04)
    with pytest.raises(ValueError, match="batch sizes differ"):
        loss_fn(torch.randn(1, 2, 4), torch.randn(2, 3, 4), teacher_temp=0.04)


def test_half_precision_inputs_are_computed_in_float32() -> None:
    gen = torch.Generator().manual_seed(4)
    teacher_out = torch.randn(2, 4, 64, generator=gen)
    student_out = torch.randn(6, 4, 64, generator=gen)
    loss_fn = DINOLoss(64)
    ref = loss_fn(teacher_out, student_out, teacher_temp=0.04)
    # Teacher in bfloat16 (as from a no-grad autocast pass), student in float32, under autocast.
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        loss = loss_fn(teacher_out.bfloat16(), student_out, teacher_temp=0.04)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref, rtol=2e-2, atol=0)
