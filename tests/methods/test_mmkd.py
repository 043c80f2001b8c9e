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


def _text_mmkd(tmp_path, **kwargs):
    from organfm.text.tokenizer import WordTokenizer

    WordTokenizer.from_corpus(["a ct of the liver", "a ct of the lung"]).save(tmp_path / "tok.json")
    torch.manual_seed(0)
    return create_method("mmkd", backbone=tiny_backbone(), embed_dim=16, texts="captions", text_width=16,
                         tokenizer_file=str(tmp_path / "tok.json"), **kwargs)


def _text_batch(m, has_text):
    b = _mmkd_batch()
    b.update(text=["a ct of the liver", "a ct of the lung"] * 3, text_id=torch.tensor([0, 1] * 3),
             teacher_has_text=torch.tensor(has_text),
             teacher_text=F.normalize(torch.randn(6, 16, generator=torch.Generator().manual_seed(7)), dim=-1))
    return b


def test_with_texts_the_modalities_are_image_and_text_and_a_text_less_teacher_falls_back_to_the_student(tmp_path):
    m = _text_mmkd(tmp_path)
    assert "head" not in m.student and m.exported_text() is m.student["text"]
    has = [True, False, True, False, False, True]
    b = _text_batch(m, has)
    out = m(b, state())
    joint = m.student["text"]
    with torch.no_grad():
        s_img = joint.image(m.student["backbone"](b["global"][0]))
        s_txt = joint.text(joint.tower.tokenize(b["text"]))
    h = torch.tensor(has)
    t_txt = torch.where(h[:, None], b["teacher_text"], s_txt)
    expected = m.loss_fn.terms(s_img, s_txt, b["teacher"], t_txt, joint.logit_scale, m.icl_scale, groups=b["text_id"])
    for k in ("task", "fd", "icl"):
        assert torch.allclose(out.logs[f"loss_{k}"], expected[k].detach(), atol=1e-5), k
    # rows whose teacher has no text add nothing to the text FD: equal to the image FD plus the text FD of the rest
    fd_txt = ((s_txt[h] - b["teacher_text"][h]) ** 2).sum() / s_txt.numel()
    assert torch.allclose(out.logs["loss_fd"], F.mse_loss(s_img, b["teacher"]) + fd_txt, atol=1e-5)
    out.loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name} got no gradient"


def test_with_texts_the_loss_reduces_to_clip_when_the_teacher_is_the_student(tmp_path):
    m = _text_mmkd(tmp_path, icl_weight=0.0)
    b = _text_batch(m, [True] * 6)
    joint = m.student["text"]
    with torch.no_grad():
        s_img = joint.image(m.student["backbone"](b["global"][0]))
        s_txt = joint.text(joint.tower.tokenize(b["text"]))
    b["teacher"], b["teacher_text"] = s_img.clone(), s_txt.clone()
    out = m(b, state())
    assert out.logs["loss_fd"].item() < 1e-10
    assert torch.allclose(out.loss.detach(), clip_loss(s_img, s_txt, 1 / 0.07, b["text_id"]), atol=1e-5)


def test_after_step_brings_a_logit_scale_above_ln_100_back_down_and_the_forward_keeps_its_gradient():
    m = create_method("mmkd", backbone=tiny_backbone(), embed_dim=16)
    with torch.no_grad():
        m.logit_scale.fill_(6.0)  # exp(6) ≈ 403 > 100
    out = m(_mmkd_batch(), state())
    assert math.isclose(out.logs["logit_scale"].item(), math.exp(6.0), rel_tol=1e-5)
    out.loss.backward()
    assert m.logit_scale.grad.abs() > 0
    m.after_step(state())
    assert math.isclose(m.logit_scale.item(), math.log(100.0), rel_tol=1e-6)


def test_fd_scale_sum_multiplies_the_fd_term_by_embed_dim():
    b = _mmkd_batch()
    torch.manual_seed(0)
    per_dim = create_method("mmkd", backbone=tiny_backbone(), embed_dim=16)
    summed = create_method("mmkd", backbone=tiny_backbone(), embed_dim=16, fd_scale="sum")
    summed.load_state_dict(per_dim.state_dict())
    fd_mean, fd_sum = per_dim(b, state()).logs["loss_fd"], summed(b, state()).logs["loss_fd"]
    assert torch.allclose(fd_sum, 16 * fd_mean, rtol=1e-5)
    with pytest.raises(ValueError, match="method.fd_scale must be one of per_dim, sum"):
        create_method("mmkd", backbone=tiny_backbone(), fd_scale="mean")
