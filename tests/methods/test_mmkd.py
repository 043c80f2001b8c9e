"""MMKD's method: its loss on a batch, gradients reaching exactly the student and the two scales."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from organfm.losses.distill import clip_loss
from organfm.methods import create_method
from tests.methods.helpers import batch, state, tiny_backbone


def _mmkd_batch(embed_dim: int = 16, seed: int = 0) -> dict:
    b = batch(b=6, num_local=0, seed=seed)
    b["teacher"] = F.normalize(torch.randn(6, embed_dim, generator=torch.Generator().manual_seed(seed + 1)), dim=-1)
    return b


def test_loss_is_task_plus_weighted_fd_plus_icl_and_reaches_the_student():
    torch.manual_seed(0)
    m = create_method("mmkd", backbone=tiny_backbone(), embed_dim=16, fd_weight=50.0)
    b = _mmkd_batch()
    out = m(b, state())
    logs = out.logs
    assert torch.allclose(out.loss.detach(), logs["loss_task"] + 50.0 * logs["loss_fd"] + logs["loss_icl"], atol=1e-5)
    # the task term is CLIP between the student's two views at exp(logit_scale) = 1/0.07
    s = F.normalize(m.student["head"](m.student["backbone"](torch.cat(b["global"]))), dim=-1).detach()
    assert torch.allclose(logs["loss_task"], clip_loss(s[:6], s[6:], 1 / 0.07), atol=1e-4)
    assert math.isclose(m.icl_scale.item(), math.log(1 / 0.07), rel_tol=1e-6)
    out.loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name} got no gradient"
    assert not b["teacher"].requires_grad


def test_exported_backbone_is_the_students():
    m = create_method("mmkd", backbone=tiny_backbone())
    assert m.exported_backbone() is m.student["backbone"]
    assert m.export_prefix == "student.backbone.model."


def test_teacher_targets_of_another_width_are_a_clear_error():
    m = create_method("mmkd", backbone=tiny_backbone(), embed_dim=16)
    with pytest.raises(ValueError, match="embed_dim"):
        m(_mmkd_batch(embed_dim=8), state())


def test_unknown_teacher_filter_is_an_error():
    with pytest.raises(ValueError, match="teacher_filter"):
        create_method("mmkd", backbone=tiny_backbone(), teacher_filter="best")
