"""SGM rules (P3): saliency over available organs, selection rules, constraints, and a statistical test."""
from __future__ import annotations

import math

import pytest
import torch

from organfm.views.organ_masking import (organ_entropy, organ_saliency, organ_token_mask, select_organs,
                                         sgm_organ_mask)


def test_saliency_sums_attention_per_organ_over_available_organs_only():
    # 3 organs x 2 tokens; organ 1 is missing but (wrongly) holds attention: it must not count
    attn = torch.tensor([[0.1, 0.1, 0.3, 0.1, 0.2, 0.0]])
    available = torch.tensor([[True, False, True]])
    s = organ_saliency(attn, available, 2)
    assert torch.allclose(s, torch.tensor([[0.5, 0.0, 0.5]]))
    per_token = organ_saliency(attn, available, 2, per_token=True)  # same token count: same result
    assert torch.allclose(per_token, s)


def test_entropy_hand_values():
    available = torch.tensor([[True, True, True, False], [True, True, False, False]])
    s = torch.tensor([[1 / 3, 1 / 3, 1 / 3, 0.0], [1.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(organ_entropy(s, available), torch.tensor([math.log(3), 0.0]), atol=1e-6)


def test_topk_picks_the_most_salient_available_organ():
    s = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.0, 0.5]])
    available = torch.tensor([[True, True, True], [True, False, True]])
    s[1] = torch.tensor([0.7, 0.0, 0.3])
    mask = select_organs(s, available, rule="topk", num_masked=1)
    assert mask.tolist() == [[False, True, False], [True, False, False]]
    two = select_organs(s, available, rule="topk", num_masked=2)
    assert two[0].tolist() == [False, True, True] and two[1].sum() == 1  # subject 1 keeps one visible


@pytest.mark.parametrize("rule", ["proportional", "topk", "random"])
def test_never_masks_a_missing_organ_nor_every_available_one(rule):
    g = torch.Generator().manual_seed(0)
    available = torch.rand(500, 6, generator=g) < 0.5
    available[:, 0] |= ~available.any(1)  # at least one organ each, as the data guarantee
    s = organ_saliency(torch.rand(500, 6 * 2, generator=g), available, 2)
    for min_visible in (1, 2):
        mask = select_organs(s, available, rule=rule, num_masked=3, min_visible=min_visible, generator=g)
        assert not (mask & ~available).any()
        n_avail = available.sum(1)
        expected = (n_avail - min_visible).clamp(min=0).clamp(max=3)
        assert torch.equal(mask.sum(1), expected)
        assert torch.all((available & ~mask).sum(1) >= torch.minimum(n_avail, torch.tensor(min_visible)))


def test_proportional_rule_masks_the_dominant_organ_as_often_as_its_saliency():
    """Statistical test: with saliency (0.7, 0.1, 0.1, 0.1) organ 0 is picked ~70% of the time."""
    n = 4000
    s = torch.tensor([[0.7, 0.1, 0.1, 0.1]]).repeat(n, 1)
    available = torch.ones(n, 4, dtype=torch.bool)
    mask = select_organs(s, available, rule="proportional", generator=torch.Generator().manual_seed(0))
    freq = mask.float().mean(0)
    sd = math.sqrt(0.7 * 0.3 / n)
    assert abs(freq[0].item() - 0.7) < 4 * sd  # binomial, 4 standard deviations
    # sharper temperature: closer to argmax; random ignores saliency
    sharp = select_organs(s, available, rule="proportional", temp=0.25, generator=torch.Generator().manual_seed(1))
    assert sharp.float().mean(0)[0] > 0.95  # 0.7^4 / (0.7^4 + 3 * 0.1^4) = 0.9875
    rand = select_organs(s, available, rule="random", generator=torch.Generator().manual_seed(2))
    assert abs(rand.float().mean(0)[0].item() - 0.25) < 4 * math.sqrt(0.25 * 0.75 / n)


def test_sgm_is_applied_with_probability_p_sgm_else_random():
    n = 4000
    s = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1)
    available = torch.ones(n, 4, dtype=torch.bool)
    mask, guided = sgm_organ_mask(s, available, p_sgm=0.5, rule="topk", generator=torch.Generator().manual_seed(0))
    assert abs(guided.float().mean().item() - 0.5) < 0.04
    assert mask[guided, 0].all()  # guided samples mask the salient organ
    # unguided ones are uniform: organ 0 a quarter of the time
    assert abs(mask[~guided, 0].float().mean().item() - 0.25) < 0.04
    all_sgm, guided = sgm_organ_mask(s, available, p_sgm=1.0, rule="topk")
    assert guided.all() and all_sgm[:, 0].all()


def test_same_generator_seed_gives_the_same_masks_and_token_mask_expands_organs():
    s = torch.softmax(torch.randn(8, 5), -1)
    available = torch.ones(8, 5, dtype=torch.bool)
    a, _ = sgm_organ_mask(s, available, generator=torch.Generator().manual_seed(3))
    b, _ = sgm_organ_mask(s, available, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    tokens = organ_token_mask(torch.tensor([[True, False]]), 3)
    assert tokens.tolist() == [[True, True, True, False, False, False]]


def test_bad_settings_are_refused():
    available = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="min_visible"):
        select_organs(None, available, rule="random", min_visible=0)
    with pytest.raises(ValueError, match="rule"):
        select_organs(None, available, rule="largest")
    with pytest.raises(ValueError, match="needs organ saliency"):
        select_organs(None, available, rule="topk")


def test_random_tokens_keep_only_candidates_at_the_ratio_with_one_draw_per_position():
    from organfm.views.organ_masking import random_tokens

    candidates = torch.zeros(50, 40, dtype=torch.bool)
    candidates[:, :20] = True
    picked = random_tokens(candidates, 0.25, torch.Generator().manual_seed(3))
    assert not picked[:, 20:].any() and abs(float(picked[:, :20].float().mean()) - 0.25) < 0.03
    u = torch.rand(50, 40, generator=torch.Generator().manual_seed(3))
    assert torch.equal(picked, candidates & (u < 0.25))  # the same uniform draw as by hand
