"""Tests for organfm.losses.SupConLoss: naive loop, toys, Khosla formula, SimCLR, edge cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from organfm.losses import SupConLoss, supcon_multiview

DENOMINATORS = ("all", "negatives")


def _naive_supcon(
    anchors: torch.Tensor,
    contrasts: torch.Tensor,
    anchor_labels: torch.Tensor,
    contrast_labels: torch.Tensor,
    self_mask: torch.Tensor | None,
    temp: float,
    base_temp: float,
    denominator: str,
) -> float:
    """Python-loop reference (float64 maths); anchors without positives/denominator skipped."""
    a = F.normalize(anchors.double(), dim=1).tolist()
    c = F.normalize(contrasts.double(), dim=1).tolist()
    losses = []

    def sim(i: int, m: int) -> float:
        return sum(x * y for x, y in zip(a[i], c[m], strict=True)) / temp

    for i in range(len(a)):
        is_self = [bool(self_mask[i, m]) if self_mask is not None else False for m in range(len(c))]
        positives = [
            m for m in range(len(c)) if contrast_labels[m] == anchor_labels[i] and not is_self[m]
        ]
        if denominator == "all":
            denom = [m for m in range(len(c)) if not is_self[m]]
        else:
            denom = [
                m
                for m in range(len(c))
                if contrast_labels[m] != anchor_labels[i] and not is_self[m]
            ]
        if not positives or not denom:
            continue
        log_denom = math.log(sum(math.exp(sim(i, m)) for m in denom))
        mean_log_prob = sum(sim(i, p) - log_denom for p in positives) / len(positives)
        losses.append(-(temp / base_temp) * mean_log_prob)
    return sum(losses) / len(losses)


@pytest.mark.parametrize("denominator", DENOMINATORS)
@pytest.mark.parametrize("use_self_mask", [False, True])
def test_matches_naive_loop(denominator: str, use_self_mask: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    anchors = torch.randn(9, 6, generator=gen, dtype=torch.float64)
    contrasts = torch.randn(9, 6, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3])  # label 3 has one sample
    self_mask = torch.eye(9, dtype=torch.bool) if use_self_mask else None
    loss_fn = SupConLoss(temp=0.2, base_temp=0.07, denominator=denominator)
    loss = loss_fn(anchors, contrasts, labels, labels, self_mask=self_mask)
    expected = _naive_supcon(anchors, contrasts, labels, labels, self_mask, 0.2, 0.07, denominator)
    assert loss.item() == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_hand_computed_toy() -> None:
    # temp = base_temp = 1. Anchors a0 = (1,0) label 0, a1 = (0,1) label 1.
    # Contrasts c0 = (1,0) label 0, c1 = (0,1) label 1, c2 = (-1,0) label 0.
    # Dots: a0.c = [1, 0, -1], a1.c = [0, 1, 0].
    # "all":  a0: positives c0, c2; denom e + 1 + 1/e; mean log_prob = (1 + -1)/2 - log(e+1+1/e)
    #             -> loss0 = log(e + 1 + 1/e) = 1.407606
    #         a1: positive c1; denom 1 + e + 1 -> loss1 = log(e + 2) - 1 = 0.551445
    #         mean = 0.979525
    # "negatives": a0: negatives {c1}, denom e^0 = 1 -> loss0 = -((1 - 0) + (-1 - 0))/2 = 0
    #              a1: negatives {c0, c2}, denom 2 -> loss1 = -(1 - log 2) = log 2 - 1 = -0.306853
    #              mean = (log 2 - 1)/2 = -0.153426
    #              (it can be < 0: the positive is not in the denominator)
    e = math.e
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    contrasts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    anchor_labels, contrast_labels = torch.tensor([0, 1]), torch.tensor([0, 1, 0])

    loss_all = SupConLoss(temp=1.0, base_temp=1.0, denominator="all")(
        anchors, contrasts, anchor_labels, contrast_labels
    )
    expected_all = 0.5 * (math.log(e + 1 + 1 / e) + math.log(e + 2) - 1)
    assert loss_all.item() == pytest.approx(expected_all, abs=1e-6)
    assert loss_all.item() == pytest.approx(0.979525, abs=1e-6)

    loss_neg = SupConLoss(temp=1.0, base_temp=1.0, denominator="negatives")(
        anchors, contrasts, anchor_labels, contrast_labels
    )
    assert loss_neg.item() == pytest.approx((math.log(2) - 1) / 2, abs=1e-6)
    assert loss_neg.item() == pytest.approx(-0.153426, abs=1e-6)


def _khosla_reference(
    features: torch.Tensor, labels: torch.Tensor, temp: float, base_temp: float
) -> torch.Tensor:
    """Khosla et al. multi-view SupCon (contrast_mode="all", L_out), written from the paper."""
    batch_size, num_views, _ = features.shape
    features = F.normalize(features, dim=2)
    stacked = torch.cat(torch.unbind(features, dim=1), dim=0)  # (V*B, E), view-major
    mask = (labels.view(-1, 1) == labels.view(1, -1)).double().repeat(num_views, num_views)
    logits = stacked @ stacked.T / temp
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    logits_mask = 1.0 - torch.eye(num_views * batch_size, dtype=torch.float64)
    mask = mask * logits_mask
    log_prob = logits - torch.log((torch.exp(logits) * logits_mask).sum(1, keepdim=True))
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)
    return (-(temp / base_temp) * mean_log_prob_pos).view(num_views, batch_size).mean()


@pytest.mark.parametrize("num_views", [2, 3])
def test_multiview_matches_khosla_formula(num_views: int) -> None:
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(10, num_views, 8, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (10,), generator=gen)
    loss = supcon_multiview(SupConLoss(temp=0.1, base_temp=0.07), features, labels)
    expected = _khosla_reference(features, labels, 0.1, 0.07)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-10)


def test_two_views_unique_labels_is_simclr() -> None:
    lightly_loss = pytest.importorskip("lightly.loss")
    gen = torch.Generator().manual_seed(2)
    view0, view1 = torch.randn(7, 16, generator=gen), torch.randn(7, 16, generator=gen)
    loss = supcon_multiview(
        SupConLoss(temp=0.1, base_temp=0.1), torch.stack([view0, view1], dim=1), torch.arange(7)
    )
    expected = lightly_loss.NTXentLoss(temperature=0.1)(view0, view1)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("denominator", DENOMINATORS)
def test_invalid_anchors_are_dropped_not_nan(denominator: str) -> None:
    gen = torch.Generator().manual_seed(3)
    anchors = torch.randn(6, 8, generator=gen, requires_grad=True)
    contrasts = torch.randn(5, 8, generator=gen)
    contrast_labels = torch.tensor([0, 0, 1, 1, 1])
    # Anchor 4 (label 7) has no positive in either mode.
    anchor_labels = torch.tensor([0, 1, 0, 1, 7, 0])
    loss_fn = SupConLoss(denominator=denominator)

    loss = loss_fn(anchors, contrasts, anchor_labels, contrast_labels)
    keep = torch.tensor([0, 1, 2, 3, 5])
    subset = loss_fn(anchors[keep], contrasts, anchor_labels[keep], contrast_labels)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, subset)
    loss.backward()
    assert anchors.grad is not None and torch.isfinite(anchors.grad).all()
    assert anchors.grad[4].abs().sum() == 0


def test_anchor_without_negatives_dropped_only_in_negatives_mode() -> None:
    gen = torch.Generator().manual_seed(4)
    anchors = torch.randn(3, 8, generator=gen)
    contrasts = torch.randn(4, 8, generator=gen)
    contrast_labels = torch.tensor([0, 0, 1, 1])
    anchor_labels = torch.tensor([0, 1, 0])
    # Self-mask all label-1 contrasts for anchor 0, so its only non-self contrasts are label 0:
    # positives but no negative. In "all" mode it stays valid.
    self_mask = torch.zeros(3, 4, dtype=torch.bool)
    self_mask[0, 2:] = True

    neg = SupConLoss(denominator="negatives")
    loss = neg(anchors, contrasts, anchor_labels, contrast_labels, self_mask=self_mask)
    subset = neg(
        anchors[1:], contrasts, anchor_labels[1:], contrast_labels, self_mask=self_mask[1:]
    )
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, subset)

    all_ = SupConLoss(denominator="all")
    loss_all = all_(anchors, contrasts, anchor_labels, contrast_labels, self_mask=self_mask)
    subset_all = all_(
        anchors[1:], contrasts, anchor_labels[1:], contrast_labels, self_mask=self_mask[1:]
    )
    assert not torch.isclose(loss_all, subset_all)


@pytest.mark.parametrize("denominator", DENOMINATORS)
def test_no_valid_anchor_gives_zero_with_graph(denominator: str) -> None:
    anchors = torch.randn(3, 8, requires_grad=True)
    contrasts = torch.randn(3, 8)
    loss = SupConLoss(denominator=denominator)(
        anchors, contrasts, torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])
    )
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert anchors.grad is not None and torch.isfinite(anchors.grad).all()


@pytest.mark.parametrize("denominator", DENOMINATORS)
def test_base_temperature_scales_loss(denominator: str) -> None:
    gen = torch.Generator().manual_seed(5)
    anchors, contrasts = torch.randn(6, 8, generator=gen), torch.randn(6, 8, generator=gen)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    base = SupConLoss(temp=0.1, base_temp=0.1, denominator=denominator)(
        anchors, contrasts, labels, labels
    )
    scaled = SupConLoss(temp=0.1, base_temp=0.4, denominator=denominator)(
        anchors, contrasts, labels, labels
    )
    torch.testing.assert_close(scaled, base * 0.25)
    # temp itself is a softmax temperature, not a plain factor.
    other = SupConLoss(temp=0.4, base_temp=0.4, denominator=denominator)(
        anchors, contrasts, labels, labels
    )
    assert not torch.isclose(other, base)


@pytest.mark.parametrize("denominator", DENOMINATORS)
def test_invariant_to_input_scaling(denominator: str) -> None:
    gen = torch.Generator().manual_seed(6)
    anchors, contrasts = torch.randn(6, 8, generator=gen), torch.randn(6, 8, generator=gen)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    loss_fn = SupConLoss(denominator=denominator)
    loss = loss_fn(anchors, contrasts, labels, labels)
    row_scale = torch.rand(6, 1, generator=gen) * 5 + 0.1
    scaled = loss_fn(anchors * row_scale, contrasts * 0.3, labels, labels)
    torch.testing.assert_close(loss, scaled)


def test_gradient_flows_to_anchors_and_not_to_detached_contrasts() -> None:
    anchors = torch.randn(6, 8, requires_grad=True)
    contrasts = torch.randn(6, 8, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    loss_fn = SupConLoss()

    loss_fn(anchors, contrasts.detach(), labels, labels).backward()
    assert anchors.grad is not None and anchors.grad.abs().sum() > 0
    assert contrasts.grad is None

    # Without detach the contrasts do receive gradient (so the check above can fail).
    loss_fn(anchors, contrasts, labels, labels).backward()
    assert contrasts.grad is not None and contrasts.grad.abs().sum() > 0


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown denominator"):
        SupConLoss(denominator="positives")
    loss_fn = SupConLoss()
    with pytest.raises(ValueError, match="share E"):
        loss_fn(torch.randn(3, 4), torch.randn(3, 5), torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="labels"):
        loss_fn(torch.randn(3, 4), torch.randn(3, 4), torch.zeros(2), torch.zeros(3))
    with pytest.raises(ValueError, match="self_mask"):
        loss_fn(
            torch.randn(3, 4),
            torch.randn(3, 4),
            torch.zeros(3),
            torch.zeros(3),
            self_mask=torch.zeros(3, 2, dtype=torch.bool),
        )


def test_half_precision_inputs_are_computed_in_float32() -> None:
    gen = torch.Generator().manual_seed(7)
    anchors, contrasts = torch.randn(6, 8, generator=gen), torch.randn(6, 8, generator=gen)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    loss_fn = SupConLoss()
    ref = loss_fn(anchors, contrasts, labels, labels)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        loss = loss_fn(anchors.bfloat16(), contrasts.bfloat16(), labels, labels)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref, rtol=2e-2, atol=0)
