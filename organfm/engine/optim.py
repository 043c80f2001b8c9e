"""Optimizer construction: one weight-decay rule, schedules applied per step."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["build_optimizer", "clip_grad_per_parameter", "set_optimizer_values"]


def build_optimizer(module: nn.Module, *, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                    fused: bool = False) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; biases and norm weights (``ndim < 2``) get no weight decay.

    ``fused``: one kernel per step for all parameters (use it on CUDA); it also lets the loop skip an
    update on device (``found_inf``) without reading the loss on the host every step.
    """
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "apply_weight_decay": True},
              {"params": no_decay, "apply_weight_decay": False, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=tuple(betas), fused=fused or None)


def set_optimizer_values(optimizer: torch.optim.Optimizer, *, lr: float, weight_decay: float) -> None:
    """Write this step's scheduled lr and weight decay into every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        group["weight_decay"] = weight_decay if group.get("apply_weight_decay", True) else 0.0


@torch.no_grad()
def clip_grad_per_parameter(parameters, max_norm: float) -> None:
    """DINO's ``clip_gradients``: scale each parameter's gradient to norm <= ``max_norm`` on its own.

    Unlike a global norm, one exploding layer does not shrink every other layer's update. Under FSDP the
    norm would be a shard's, so use the global mode there.
    """
    for p in parameters:
        if p.grad is not None:
            norm = p.grad.norm(2)
            p.grad.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
