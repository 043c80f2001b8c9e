"""Which organs the Pan-FM student does not see: Saliency-Guided Masking (SGM) and its random baseline (P3).

Saliency comes from the teacher's last-layer [CLS] attention, which the teacher pass already computes, so
SGM costs no extra forward pass (AttMask's argument). Per sample:

1. ``s_o = sum of [CLS]->token attention over organ o's tokens``, over available organs only, renormalised
   to sum to 1 (optionally divided by o's token count first);
2. ``k = min(num_masked, #available - min_visible)`` organs are picked without replacement with probability
   proportional to ``s_o^(1/T)`` (``"proportional"``), the k most salient (``"topk"``), or uniformly
   (``"random"``); a missing organ is never picked and at least ``min_visible`` available organs stay visible;
3. SGM is applied with probability ``p_sgm``, random masking otherwise.

Sampling without replacement uses the Gumbel-top-k trick: the top k of ``log w_o + Gumbel`` is distributed
as k successive draws proportional to ``w`` without replacement. Draws come from ``generator`` (on the
CPU, then moved): Pan-FM seeds it from (run, step), so a resumed run draws the masks of an uninterrupted one
whatever else consumed the global RNG (a DataLoader's base seed, for one).
"""
from __future__ import annotations

import math

import torch

__all__ = ["MASKING_RULES", "organ_entropy", "organ_saliency", "organ_token_mask", "random_tokens", "select_organs",
           "sgm_organ_mask"]

MASKING_RULES = ("proportional", "topk", "random")


def organ_saliency(cls_attention: torch.Tensor, available: torch.Tensor, tokens_per_organ: int, *,
                   per_token: bool = False) -> torch.Tensor:
    """Organ saliency from [CLS]->token attention.

    Args:
        cls_attention: (B, O*n) attention of [CLS] to each organ token (heads averaged).
        available: (B, O) bool.
        tokens_per_organ: n.
        per_token: divide each organ's sum by its token count (so large organs are not trivially dominant).

    Returns:
        (B, O): sums to 1 over the available organs of each sample, 0 on missing organs.
    """
    b, o = available.shape
    s = cls_attention.view(b, o, tokens_per_organ).sum(-1)
    if per_token:
        s = s / tokens_per_organ
    s = torch.where(available, s, torch.zeros((), dtype=s.dtype, device=s.device))
    return s / s.sum(-1, keepdim=True).clamp(min=torch.finfo(s.dtype).tiny)


def organ_entropy(saliency: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of each sample's organ saliency over its available organs: (B, O) -> (B,).

    ``log(#available)`` when attention is spread evenly, 0 when one organ takes all of it.
    """
    p = torch.where(available, saliency, torch.zeros((), dtype=saliency.dtype, device=saliency.device))
    return -(p * torch.log(p.clamp(min=1e-12))).sum(-1)


def _uniform(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=generator).to(device)


def _num_to_mask(available: torch.Tensor, num_masked: int, min_visible: int) -> torch.Tensor:
    return (available.sum(-1) - min_visible).clamp(min=0).clamp(max=num_masked)  # (B,)


def select_organs(saliency: torch.Tensor | None, available: torch.Tensor, *, rule: str = "proportional",
                  temp: float = 1.0, num_masked: int = 1, min_visible: int = 1,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick organs to mask by one rule.

    Args:
        saliency: (B, O) organ saliency (unused by ``"random"``; may then be None).
        available: (B, O) bool.
        rule: ``"proportional"`` (to saliency^(1/temp)), ``"topk"`` or ``"random"``.
        temp: T_sgm of the proportional rule.
        num_masked: organs masked per sample (fewer when not enough are available).
        min_visible: available organs that always stay visible (>= 1).
        generator: a CPU torch RNG (default: the global one).

    Returns:
        (B, O) bool, True for a masked organ; never a missing organ.
    """
    if rule not in MASKING_RULES:
        raise ValueError(f"masking rule must be one of {MASKING_RULES}, got {rule!r}")
    if min_visible < 1:
        raise ValueError(f"min_visible must be >= 1 (never mask every available organ), got {min_visible}")
    if rule != "random" and saliency is None:
        raise ValueError(f"rule {rule!r} needs organ saliency")
    if rule == "proportional" and temp <= 0:
        raise ValueError(f"the proportional rule needs temp > 0, got {temp}")
    u = _uniform(available.shape, generator, available.device)
    gumbel = -torch.log(-torch.log(u.clamp(1e-12, 1 - 1e-7)))
    if rule == "random":
        scores = gumbel
    elif rule == "topk":
        scores = saliency.to(u.dtype) + 1e-6 * u  # ties broken at random
    else:
        scores = torch.log(saliency.to(u.dtype).clamp(min=1e-12)) / temp + gumbel
    scores = scores.masked_fill(~available, -math.inf)
    rank = scores.argsort(dim=-1, descending=True).argsort(dim=-1)  # 0 = first picked
    return (rank < _num_to_mask(available, num_masked, min_visible)[:, None]) & available


def sgm_organ_mask(saliency: torch.Tensor, available: torch.Tensor, *, p_sgm: float = 0.5,
                   rule: str = "proportional", temp: float = 1.0, num_masked: int = 1, min_visible: int = 1,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """SGM: each sample is masked by ``rule`` on its saliency with probability ``p_sgm``, else at random.

    Returns:
        organ mask (B, O) bool, and which samples used SGM (B,) bool.
    """
    if not 0.0 <= p_sgm <= 1.0:
        raise ValueError(f"p_sgm must be in [0, 1], got {p_sgm}")
    guided = _uniform(available.shape[:1], generator, available.device) < p_sgm
    by_saliency = select_organs(saliency, available, rule=rule, temp=temp, num_masked=num_masked,
                                min_visible=min_visible, generator=generator)
    at_random = select_organs(None, available, rule="random", num_masked=num_masked, min_visible=min_visible,
                              generator=generator)
    return torch.where(guided[:, None], by_saliency, at_random), guided


def organ_token_mask(organ_mask: torch.Tensor, tokens_per_organ: int) -> torch.Tensor:
    """(B, O) organ mask -> (B, O*n) token mask (every token of a masked organ)."""
    return organ_mask.repeat_interleave(tokens_per_organ, dim=1)


def random_tokens(candidates: torch.Tensor, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each candidate token kept with probability ``ratio`` (one uniform draw per position): (B, N) -> (B, N)."""
    return candidates & (_uniform(candidates.shape, generator, candidates.device) < ratio)
