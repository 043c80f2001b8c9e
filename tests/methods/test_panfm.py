"""Pan-FM (P2-P4): one teacher pass feeds targets and SGM, the student sees the masked set, every rule holds."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from organfm.backbones import create_backbone
from organfm.methods import create_method
from tests.methods.helpers import grads_reach_exactly_the_student, state

SMALL = dict(num_organs=4, image_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=2)
HEAD = dict(out_dim=64, hidden_dim=32, bottleneck_dim=16)


def _method(**kwargs):
    torch.manual_seed(0)
    return create_method("panfm", backbone=create_backbone("organ_set_vit", **SMALL), **HEAD, **kwargs)


def _batch(b: int = 6):
    g = torch.Generator().manual_seed(0)
    available = torch.tensor([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 1, 0], [1, 1, 0, 1], [0, 1, 1, 1], [1, 1, 1, 0]],
                             dtype=torch.bool)[:b]
    return {"images": torch.randn(b, 4, 1, 16, 16, generator=g), "available": available}


def test_gradients_reach_exactly_the_student():
    method = _method()
    out = method(_batch(), state())
    assert torch.isfinite(out.loss) and {"loss_cls", "loss_token", "organ_entropy", "saliency_organ0"} <= set(out.logs)
    grads_reach_exactly_the_student(method, out)


def test_one_teacher_pass_and_one_student_pass_per_step():
    """SGM reads the attention of the teacher pass that makes the targets: no extra forward."""
    method = _method(masking="sgm", p_sgm=1.0)
    calls = {"teacher": 0, "student": 0}
    for who in calls:
        model = method.get_submodule(f"{who}.backbone.model")
        model.register_forward_hook(lambda *_, who=who: calls.__setitem__(who, calls[who] + 1))
    method(_batch(), state())
    assert calls == {"teacher": 1, "student": 1}


def test_sgm_topk_masks_the_organ_the_teacher_attends_most():
    method = _method(masking="sgm", p_sgm=1.0, sgm_rule="topk")
    batch = _batch()
    seen = {}
    original = method.choose_masks

    def spy(saliency, available, generator=None):
        seen["saliency"] = saliency
        seen["out"] = original(saliency, available, generator)
        return seen["out"]

    method.choose_masks = spy
    with torch.no_grad():
        method(batch, state())
        t = method.teacher["backbone"].forward_features(batch["images"], batch["available"])
    n = method.student["backbone"].tokens_per_organ
    expected = t["cls_attention"].view(6, 4, n).sum(-1).masked_fill(~batch["available"], -1).argmax(-1)
    mask, guided = seen["out"]
    assert guided.all()
    for b in range(6):
        if batch["available"][b].sum() >= 2:
            assert mask[b].nonzero().flatten().tolist() == [expected[b].item()]
        else:
            assert not mask[b].any()  # a subject with one organ keeps it visible


@pytest.mark.parametrize("masking", ["sgm", "random"])
def test_masks_respect_availability(masking):
    method = _method(masking=masking, num_masked_organs=3)
    batch = _batch()
    saliency = torch.softmax(torch.randn(6, 4), -1) * batch["available"]
    mask, _ = method.choose_masks(saliency, batch["available"], torch.Generator().manual_seed(0))
    assert not (mask & ~batch["available"]).any()
    assert torch.all((batch["available"] & ~mask).sum(1) >= 1)


def test_no_masking_leaves_only_the_cls_term_and_masks_change_the_student_input():
    none = _method(masking="none")
    out = none(_batch(), state())
    assert out.logs["masked_organs"] == 0 and out.logs["loss_token"] == 0
    rnd = _method(masking="random")
    out = rnd(_batch(), state())
    assert out.logs["masked_organs"] > 0 and out.logs["loss_token"] > 0


def test_masks_are_a_function_of_step_not_of_the_global_rng():
    method = _method(masking="random")
    batch = _batch()
    masks = []
    original = method.choose_masks
    method.choose_masks = lambda s, a, g=None: masks.append(original(s, a, g)[0]) or (masks[-1], masks[-1][:, 0])
    with torch.no_grad():
        method(batch, state(step=5))
        torch.rand(100)  # something else consumes the global RNG (a DataLoader's base seed)
        method(batch, state(step=5))
        method(batch, state(step=6))
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="masking"):
        _method(masking="attention")
    with pytest.raises(ValueError, match="min_visible_organs"):
        _method(min_visible_organs=0)
    with pytest.raises(ValueError, match="organ-set encoder"):
        create_method("panfm", backbone=create_backbone("test_convnext", in_chans=1), **HEAD)


def test_3d_organ_volumes_train():
    torch.manual_seed(0)
    bb = create_backbone("organ_set_vit", num_organs=2, image_size=8, patch_size=4, spatial_dims=3, embed_dim=16,
                         depth=1, num_heads=2)
    method = create_method("panfm", backbone=bb, **HEAD)
    batch = {"images": torch.randn(3, 2, 1, 8, 8, 8), "available": torch.tensor([[1, 1], [1, 0], [1, 1]]).bool()}
    out = method(batch, state())
    assert torch.isfinite(out.loss) and out.logs["masked_organs"] == 2 / 3
    grads_reach_exactly_the_student(method, out)


def test_masks_differ_across_ranks_and_micro_batches_and_repeat_for_the_same_draw():
    method = _method(masking="random")
    available = torch.ones(64, 4, dtype=torch.bool)

    def draw(**where):
        s = dataclasses.replace(state(step=3), **where)
        return method.choose_masks(None, available, method.mask_generator(s))[0]

    base = draw()
    assert torch.equal(base, draw())  # the same (seed, step, rank, micro-batch): the same masks (exact resume)
    assert not torch.equal(base, draw(rank=1))
    assert not torch.equal(base, draw(micro_batch=1))
    assert not torch.equal(draw(rank=1), draw(micro_batch=1))


def test_the_cls_center_is_updated_from_the_teacher_not_the_student():
    method = _method(masking="random")
    with torch.no_grad():  # a student that differs from the teacher, so the two sources give different centres
        for p in method.student.parameters():
            p.add_(0.2 * torch.randn_like(p))
    batch = _batch()
    available = batch["available"].bool()
    with torch.no_grad():
        teacher = method.teacher["head"](method.teacher["backbone"].forward_features(batch["images"], available)["cls"])
        student = method.student["head"](method.student["backbone"].forward_features(batch["images"], available)["cls"])
    m = method.cls_loss.center_momentum
    before = method.cls_loss.center.clone()
    method(batch, state())
    expected = m * before + (1 - m) * teacher.mean(0, keepdim=True)
    assert torch.allclose(method.cls_loss.center, expected, atol=1e-6)
    assert not torch.allclose(method.cls_loss.center, m * before + (1 - m) * student.mean(0, keepdim=True), atol=1e-4)


def _student_token_mask(method, batch, step=0):
    """The token mask the student pass receives."""
    seen = {}
    backbone = method.student["backbone"]
    original = backbone.forward_features

    def spy(images, available, token_mask=None):
        seen["mask"] = token_mask
        return original(images, available, token_mask=token_mask)

    backbone.forward_features = spy
    out = method(batch, state(step=step))
    return seen["mask"], out


def test_token_ratio_masks_that_share_of_every_available_organs_tokens_and_no_missing_token():
    g = torch.Generator().manual_seed(1)
    batch = {"images": torch.randn(64, 4, 1, 16, 16, generator=g), "available": torch.rand(64, 4, generator=g) > 0.3}
    batch["available"][:, 0] = True
    n = 4  # tokens per organ: (16 / 8)^2
    method = _method(masking="none", token_ratio=0.5)
    mask, out = _student_token_mask(method, batch)
    valid = batch["available"].repeat_interleave(n, dim=1)
    assert not (mask & ~valid).any()  # a missing organ's tokens are never [MASK] (they are not attended at all)
    share = float(mask[valid].float().mean())
    assert abs(share - 0.5) < 0.05 and float(out.logs["masked_tokens"]) == pytest.approx(share)
    assert out.logs["loss_token"] > 0  # the masked-token term reads the masked tokens
    again, _ = _student_token_mask(_method(masking="none", token_ratio=0.5), batch)
    assert torch.equal(mask, again)  # a function of (mask seed, step, rank, micro-batch)


def test_token_ratio_adds_to_the_whole_organs_the_rule_selects():
    batch = _batch()
    method = _method(masking="sgm", p_sgm=1.0, sgm_rule="topk", token_ratio=0.25)
    organs = {}
    original = method.choose_masks
    method.choose_masks = lambda s, a, g=None: organs.setdefault("out", original(s, a, g))
    mask, _ = _student_token_mask(method, batch)
    whole = organs["out"][0].repeat_interleave(4, dim=1)
    assert whole.any() and mask[whole].all()  # the selected organs stay masked whole
    partly = mask & ~whole
    assert partly.any() and not (partly & ~batch["available"].repeat_interleave(4, dim=1)).any()
    plain, _ = _student_token_mask(_method(masking="sgm", p_sgm=1.0, sgm_rule="topk"), batch)
    assert torch.equal(plain, whole)  # token_ratio=0: whole organs only


@pytest.mark.parametrize("ratio", [-0.1, 1.0])
def test_a_token_ratio_outside_0_1_is_refused(ratio):
    with pytest.raises(ValueError, match="token_ratio"):
        _method(token_ratio=ratio)


def test_organ_mask_ratio_hides_that_share_of_the_selected_organs_only():
    g = torch.Generator().manual_seed(2)
    batch = {"images": torch.randn(64, 4, 1, 16, 16, generator=g), "available": torch.ones(64, 4, dtype=torch.bool)}
    method = _method(masking="random", organ_mask_ratio=0.75)
    organs = {}
    original = method.choose_masks
    method.choose_masks = lambda s, a, g=None: organs.setdefault("out", original(s, a, g))
    mask, _ = _student_token_mask(method, batch)
    selected = organs["out"][0].repeat_interleave(4, dim=1)
    assert not (mask & ~selected).any()  # nothing outside the selected organs (token_ratio=0)
    assert abs(float(mask[selected].float().mean()) - 0.75) < 0.06
    whole, _ = _student_token_mask(_method(masking="random"), batch)
    assert torch.equal(whole, selected)  # the default: the whole organ


@pytest.mark.parametrize("ratio", [0.0, 1.5])
def test_an_organ_mask_ratio_outside_0_1_is_refused(ratio):
    with pytest.raises(ValueError, match="organ_mask_ratio"):
        _method(organ_mask_ratio=ratio)
