"""The monitor's measurements against hand-computed values and naive loops."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from organfm.monitor.signals import alignment, embedding_std, knn_accuracy, rankme, relative_distance, uniformity


def test_embedding_std_is_zero_for_a_collapsed_representation_and_about_one_over_sqrt_d_when_spread():
    collapsed = torch.ones(50, 16) * torch.arange(16.0)
    assert embedding_std(collapsed) == pytest.approx(0.0, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(4000, 64, generator=g)
    assert embedding_std(spread) * math.sqrt(64) == pytest.approx(1.0, abs=0.03)


def test_rankme_counts_equal_directions_and_ignores_scale():
    eye = torch.eye(8)
    # 8 equal singular values: entropy ln 8, effective rank 8 (less the eps term)
    assert rankme(eye) == pytest.approx(8.0, rel=1e-4)
    assert rankme(eye * 5) == pytest.approx(8.0, rel=1e-4)
    one_direction = torch.randn(30, 1) @ torch.randn(1, 8)
    assert rankme(one_direction) == pytest.approx(1.0, abs=1e-3)
    # two singular values 3 and 1: p = (0.75, 0.25), exp(H)
    two = torch.diag(torch.tensor([3.0, 1.0]))
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert rankme(two) == pytest.approx(math.exp(h), rel=1e-5)


def test_relative_distance_is_norm_of_change_over_norm_of_start():
    start = [torch.tensor([3.0, 0.0]), torch.tensor([[4.0]])]
    now = [torch.tensor([3.0, 1.0]), torch.tensor([[4.0]])]
    assert relative_distance(now, start) == pytest.approx(1 / 5)
    assert relative_distance(start, start) == 0.0
    with pytest.raises(ValueError):
        relative_distance(now[:1], start)


def _naive_knn(z, y, k):
    zn = F.normalize(z, dim=1)
    correct = 0
    for i in range(len(z)):
        sims = [(float(zn[i] @ zn[j]), j) for j in range(len(z)) if j != i]
        sims.sort(reverse=True)
        votes: dict[int, list[int]] = {}
        for rank, (_, j) in enumerate(sims[:k]):
            votes.setdefault(int(y[j]), []).append(rank)
        # majority; a tie goes to the tied class whose first neighbour is nearest
        best = max(votes.items(), key=lambda kv: (len(kv[1]), -min(kv[1])))
        correct += best[0] == int(y[i])
    return correct / len(z)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_knn_accuracy_matches_a_naive_leave_one_out_loop(k):
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 3, (40,), generator=g)
    z = torch.randn(40, 5, generator=g) + F.one_hot(y, 5).float() * 1.5
    assert knn_accuracy(z, y, k=k) == pytest.approx(_naive_knn(z, y, k))


def test_knn_accuracy_separates_clustered_from_random_embeddings():
    y = torch.arange(60) % 3
    clustered = F.one_hot(y, 3).float() + 0.01 * torch.randn(60, 3, generator=torch.Generator().manual_seed(0))
    assert knn_accuracy(clustered, y, k=5) == 1.0
    noise = torch.randn(60, 3, generator=torch.Generator().manual_seed(2))
    assert knn_accuracy(noise, y, k=5) < 0.6


def test_alignment_and_uniformity_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[0.0, 1.0], [0.0, 2.0]])  # normalised: (0,1), (0,1)
    # ||(1,-1)||^2 = 2, ||(0,0)||^2 = 0
    assert alignment(a, b) == pytest.approx(1.0)
    # one pair at squared distance 2: log exp(-2 * 2) = -4
    assert uniformity(a) == pytest.approx(-4.0)
    assert uniformity(torch.ones(5, 3)) == pytest.approx(0.0, abs=1e-6)  # collapsed
