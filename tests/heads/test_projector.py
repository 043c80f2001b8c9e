"""The teacher projector: a denoising auto-encoder that learns a toy low-rank case, outputs unit codes."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from organfm.heads.projector import TeacherProjector, fit_projector


def _low_rank(n: int, d: int, rank: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, rank, generator=g) @ torch.randn(rank, d, generator=g)


def test_projector_learns_to_reconstruct_a_toy_case():
    # two teachers of different widths whose features live on 3-dim subspaces: an 8-dim code suffices
    feats = [_low_rank(256, 24, 3, seed=0), _low_rank(256, 40, 3, seed=1)]
    torch.manual_seed(0)
    proj = TeacherProjector([24, 40], embed_dim=8, hidden_dim=64, noise_std=0.01, dropout=0.0)
    before = [proj.reconstruction_loss(f, k).item() for k, f in enumerate(feats)]
    losses = fit_projector(proj, feats, steps=400, lr=3e-3, seed=0)
    proj.eval()
    after = [proj.reconstruction_loss(f, k).item() for k, f in enumerate(feats)]
    # baseline: predicting the mean normalised feature
    baseline = [((F.normalize(f, dim=-1) - F.normalize(f, dim=-1).mean(0)) ** 2).mean().item() for f in feats]
    assert len(losses) == 400 and losses[-1] < losses[0]
    for b0, a, base in zip(before, after, baseline):
        assert a < 0.2 * base and a < b0


def test_projected_codes_are_unit_vectors_and_deterministic_in_eval():
    proj = TeacherProjector([6], embed_dim=4, hidden_dim=8, noise_std=0.5, dropout=0.5)
    x = torch.randn(10, 6)
    a, b = proj.project(x, 0), proj.project(x, 0)
    assert a.shape == (10, 4) and torch.allclose(a.norm(dim=-1), torch.ones(10), atol=1e-5)
    assert torch.equal(a, b)  # no noise, no dropout outside training
    assert proj.training  # project() restores the mode it found


def test_fit_is_reproducible_and_leaves_the_global_rng_alone():
    feats = [torch.randn(32, 5, generator=torch.Generator().manual_seed(3))]

    def fit():
        torch.manual_seed(7)
        p = TeacherProjector([5], embed_dim=4, hidden_dim=8)
        state = torch.get_rng_state()
        fit_projector(p, feats, steps=5, seed=1)
        assert torch.equal(torch.get_rng_state(), state)  # batches, noise and dropout drew from a forked RNG
        return p

    p1, p2 = fit(), fit()
    assert all(torch.equal(x, y) for x, y in zip(p1.state_dict().values(), p2.state_dict().values()))


def test_nt_xent_matches_a_naive_loop():
    import math

    from organfm.heads.projector import nt_xent

    g = torch.Generator().manual_seed(0)
    codes, sample = torch.randn(6, 3, generator=g), torch.tensor([0, 1, 2, 0, 1, 0])
    z = F.normalize(codes, dim=-1).tolist()
    total, anchors = 0.0, 0
    for i in range(6):
        if (sample == sample[i]).sum() < 2:
            continue  # sample 2 has no positive: not an anchor
        anchors += 1
        sims = [sum(a * b for a, b in zip(z[i], z[j])) / 0.07 for j in range(6)]
        log_z = math.log(sum(math.exp(sims[j]) for j in range(6) if j != i))
        pos = [j for j in range(6) if j != i and sample[j] == sample[i]]
        total += -sum(sims[j] - log_z for j in pos) / len(pos)
    assert anchors == 5 and math.isclose(nt_xent(codes, sample).item(), total / anchors, rel_tol=1e-5)


def test_contrastive_fit_makes_teachers_agree_on_each_image():
    # two teachers see the same 3-dim latent of 256 images through different random maps
    g = torch.Generator().manual_seed(0)
    latent = torch.randn(256, 3, generator=g)
    feats = [latent @ torch.randn(3, 24, generator=g), latent @ torch.randn(3, 40, generator=g)]

    def agreement(weight):
        torch.manual_seed(0)
        proj = TeacherProjector([24, 40], embed_dim=8, hidden_dim=64, dropout=0.0)
        fit_projector(proj, feats, steps=300, lr=3e-3, seed=0, contrastive_weight=weight, paired_rows=256)
        a, b = proj.project(feats[0], 0), proj.project(feats[1], 1)
        return (a * b).sum(1).mean().item()

    assert agreement(1.0) > 0.9 > agreement(0.0)


def test_contrastive_fit_needs_paired_rows():
    import pytest

    proj = TeacherProjector([4, 4], embed_dim=4, hidden_dim=8)
    with pytest.raises(ValueError, match="paired rows"):
        fit_projector(proj, [torch.randn(8, 4), torch.randn(8, 4)], steps=1, contrastive_weight=1.0)
