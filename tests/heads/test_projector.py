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
