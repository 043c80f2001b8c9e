"""MaskedTokenLoss: iBOT's patch term against a naive loop; center update; invariances."""
from __future__ import annotations

import torch

from organfm.losses.ibot import MaskedTokenLoss


def _naive(teacher, student, mask, center, tt, st):
    total = 0.0
    for b in range(teacher.shape[0]):
        terms = []
        for t in range(teacher.shape[1]):
            if mask[b, t]:
                q = torch.softmax((teacher[b, t] - center) / tt, -1)
                logp = torch.log_softmax(student[b, t] / st, -1)
                terms.append(-(q * logp).sum())
        total += sum(terms) / max(1, len(terms)) if terms else 0.0
    return total / teacher.shape[0]


def test_matches_a_naive_loop_and_ignores_unmasked_tokens():
    g = torch.Generator().manual_seed(0)
    teacher, student = torch.randn(3, 5, 8, generator=g), torch.randn(3, 5, 8, generator=g)
    mask = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    loss_fn = MaskedTokenLoss(8, student_temp=0.1)
    loss_fn.center.normal_(generator=g)
    got = loss_fn(teacher, student, mask, teacher_temp=0.05)
    want = _naive(teacher, student, mask, loss_fn.center[0, 0], 0.05, 0.1)
    assert torch.allclose(got, torch.as_tensor(want, dtype=got.dtype), atol=1e-5)
    other = student.clone()
    other[~mask] = torch.randn_like(other[~mask])
    assert torch.allclose(loss_fn(teacher, other, mask, teacher_temp=0.05), got)
    assert torch.allclose(loss_fn(teacher, student + 3.0, mask, teacher_temp=0.05), got, atol=1e-5)


def test_gradient_reaches_the_student_only_and_center_moves_by_valid_tokens():
    teacher = torch.randn(2, 4, 6, requires_grad=True)
    student = torch.randn(2, 4, 6, requires_grad=True)
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask[:, 0] = True
    loss_fn = MaskedTokenLoss(6, center_momentum=0.9)
    loss_fn(teacher, student, mask, teacher_temp=0.04).backward()
    assert teacher.grad is None and student.grad[:, 0].abs().sum() > 0 and torch.all(student.grad[:, 1:] == 0)
    valid = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    t = teacher.detach()
    loss_fn.update(t, valid)
    per_image = torch.stack([t[0, :2].mean(0), t[1, :1].mean(0)])
    assert torch.allclose(loss_fn.center[0, 0], 0.1 * per_image.mean(0), atol=1e-6)
