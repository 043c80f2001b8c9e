"""Log-ratio loss: hand-computed case, invariance to scaling either embedding, self-pairs left out."""
from __future__ import annotations

import math

import pytest
import torch

from organfm.losses.log_ratio import LogRatioLoss


def test_hand_computed_three_points():
    # image points on a line at 0, 1, 3; text points at 0, 2, 3 (1-D embeddings)
    img = torch.tensor([[0.0], [1.0], [3.0]])
    txt = torch.tensor([[0.0], [2.0], [3.0]])
    i, j = torch.tensor([1, 2, 0]), torch.tensor([2, 0, 1])  # no fixed points
    eps = 1e-4 / 3
    d = lambda a, b: math.sqrt((a - b) ** 2 + eps)  # noqa: E731
    pi, pt = [0.0, 1.0, 3.0], [0.0, 2.0, 3.0]
    terms = []
    for a in range(3):
        fi = math.log(d(pi[a], pi[i[a]])) - math.log(d(pi[a], pi[j[a]]))
        ti = math.log(d(pt[a], pt[i[a]])) - math.log(d(pt[a], pt[j[a]]))
        terms.append((fi - ti) ** 2)
    # image minus text log-ratio per anchor:
    # a=0: log(1/3) - log(2/3) = -log 2; a=1: log(2/1) - log(1/2) = 2 log 2; a=2: log(3/2) - log(3/1) = -log 2
    assert abs(sum(terms) / 3 - 2 * math.log(2) ** 2) < 1e-3
    loss = LogRatioLoss()(img, txt, perms=(i, j))
    assert math.isclose(loss.item(), sum(terms) / 3, rel_tol=1e-5)


def test_invariant_to_scaling_either_embedding():
    torch.manual_seed(0)
    img, txt = torch.randn(8, 16), torch.randn(8, 5)
    g = torch.Generator().manual_seed(1)
    perms = (torch.randperm(8, generator=g), torch.randperm(8, generator=g))
    loss = LogRatioLoss()
    base = loss(img, txt, perms=perms)
    assert base.item() > 0.01
    # exact up to the eps floor of the distances (1e-4 / B against squared distances of order 1)
    for s in (0.1, 3.0, 50.0):
        assert torch.isclose(loss(img * s, txt, perms=perms), base, rtol=2e-3)
        assert torch.isclose(loss(img, txt * s, perms=perms), base, rtol=2e-3)
    assert torch.isclose(loss(img * 50.0, txt * 0.5, perms=perms), base, rtol=2e-3)


def test_zero_when_geometries_agree_up_to_scale_and_rotation():
    torch.manual_seed(0)
    txt = torch.randn(6, 4)
    q, _ = torch.linalg.qr(torch.randn(4, 4))
    img = 7.0 * txt @ q
    assert LogRatioLoss()(img, txt).item() < 1e-6


def test_self_pairs_are_left_out():
    img, txt = torch.randn(4, 3), torch.randn(4, 3)
    ident = torch.arange(4)
    assert LogRatioLoss()(img, txt, perms=(ident, ident)).item() == 0.0
    # anchor 0 paired with itself by i: only anchors 1..3 count, so changing point 0's partners changes nothing
    i, j = torch.tensor([0, 2, 3, 1]), torch.tensor([1, 3, 1, 2])
    full = LogRatioLoss()(img, txt, perms=(i, j))
    keep = torch.tensor([1, 2, 3])
    manual = LogRatioLoss()._log_dist
    ir = manual(img[keep], img[i[keep]]) - manual(img[keep], img[j[keep]])
    tr = manual(txt[keep], txt[i[keep]]) - manual(txt[keep], txt[j[keep]])
    assert torch.isclose(full, (ir - tr).pow(2).mean())


def _mean_loss(img, txt, **kw):
    loss = LogRatioLoss()
    return sum(float(loss(img, txt, generator=torch.Generator().manual_seed(s), **kw)) for s in range(300)) / 300


def test_shared_descriptions_are_not_a_degenerate_target():
    # the acceptance check's batch: 8 volumes, 2 descriptions of 4 volumes each, against 8 distinct descriptions
    g = torch.Generator().manual_seed(0)
    img = torch.randn(8, 32, generator=g)
    distinct = torch.randn(8, 16, generator=g)
    shared = torch.randn(2, 16, generator=g).repeat_interleave(4, 0)
    a, b = _mean_loss(img, distinct), _mean_loss(img, shared)
    assert b <= 10 * a  # the reference's loss: about 1700x (26.9 against 0.016)
    # the same with explicit description ids
    assert _mean_loss(img, shared, groups=torch.arange(2).repeat_interleave(4)) == pytest.approx(b)


def test_collapsing_volumes_of_one_description_no_longer_lowers_the_loss():
    """Within-description distances change while every cross-description distance stays fixed: the points are
    c_g + r u, with u orthonormal and orthogonal to the centres, shared by a description's volumes (collapsed)
    or one per volume (spread)."""
    groups = torch.arange(2).repeat_interleave(4)
    basis, _ = torch.linalg.qr(torch.randn(32, 32, generator=torch.Generator().manual_seed(0)))
    centres = 3.0 * basis[:2]  # (2, 32)
    own = basis[2:10]  # one direction per volume
    spread = centres[groups] + own
    collapsed = centres[groups] + own[groups * 4]  # the volumes of a description coincide
    cross = torch.cdist(spread, spread)[groups[:, None] != groups[None, :]]
    assert torch.allclose(cross, torch.cdist(collapsed, collapsed)[groups[:, None] != groups[None, :]], atol=1e-5)
    text = torch.randn(2, 16, generator=torch.Generator().manual_seed(1))[groups]
    loss_spread, loss_collapsed = _mean_loss(spread, text), _mean_loss(collapsed, text)
    assert loss_collapsed == pytest.approx(loss_spread, rel=1e-4, abs=1e-6)
    # the reference's pairing (self-pairs only left out) would reward the collapse by orders of magnitude
    # (every volume its own description id: only self-pairs are left out)
    ref = lambda x: _mean_loss(x, text, groups=torch.arange(8))  # noqa: E731
    assert ref(collapsed) < 0.5 * ref(spread)


def test_one_description_for_the_whole_batch_gives_a_zero_that_keeps_the_graph():
    img = torch.randn(6, 4, requires_grad=True)
    loss = LogRatioLoss()(img, torch.ones(6, 3))
    assert loss.item() == 0.0 and loss.requires_grad
