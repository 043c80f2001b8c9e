from __future__ import annotations

import pytest
import torch

from organfm.losses import DINOLoss, SupConLoss
from organfm.methods import Coda, create_method
from organfm.methods.coda import organ_targets
from tests.methods.helpers import batch, grads_reach_exactly_the_student, tiny_backbone, state

KW = dict(out_dim=64, hidden_dim=32, bottleneck_dim=16)


@pytest.mark.parametrize("use_inter,use_intra", [(True, True), (True, False), (False, True)])
def test_gradients_reach_exactly_the_student_of_each_branch(use_inter, use_intra):
    torch.manual_seed(0)
    m = create_method("coda", backbone=tiny_backbone(), use_inter=use_inter, use_intra=use_intra, **KW)
    assert ("org_head" in m.student) == use_inter and ("ins_head" in m.student) == use_intra
    out = m(batch(), state(0.04))
    assert set(out.logs) >= {"loss"} | ({"loss_inter"} if use_inter else set()) | ({"loss_intra"} if use_intra else set())
    grads_reach_exactly_the_student(m, out)


def test_loss_is_the_sum_of_the_branches_computed_by_hand():
    torch.manual_seed(0)
    m = Coda(tiny_backbone(), **KW)
    b = batch()
    out = m(b, state(0.05))
    # recompute each branch from the parts: teacher view 2, student view 1 and the local crops
    with torch.no_grad():
        tf = m.teacher["backbone"](b["global"][1])
        z_t = m.teacher["org_head"](tf)
        z_s = m.student["org_head"](m.student["backbone"](b["global"][0]))
        y = organ_targets(b["organ"])
        inter = SupConLoss(temp=0.07)(z_s, z_t, y, y)
        q = m.teacher["ins_head"](tf).unsqueeze(0)
        p = torch.stack([m.student["ins_head"](m.student["backbone"](c)) for c in b["local"]])
        intra = DINOLoss(64)(q, p, teacher_temp=0.05, skip_same_view=False)  # fresh loss: centre still zero
    assert out.logs["loss_inter"] == pytest.approx(inter.item(), rel=1e-5)
    assert out.logs["loss_intra"] == pytest.approx(intra.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(inter.item() + intra.item(), rel=1e-5)
    # the centre moved towards the teacher's mean output after the step (explicit update)
    assert torch.allclose(m.intra_loss.center, 0.1 * q.mean(dim=(0, 1), keepdim=False).unsqueeze(0), atol=1e-6)


def test_organ_labels_matter_to_the_inter_branch():
    torch.manual_seed(0)
    m = Coda(tiny_backbone(), use_intra=False, **KW)
    b = batch()
    a = m(b, state(0.04)).loss.item()
    b["organ"] = torch.tensor([0, 1, 2, 3, 4, 5])  # all different: only the other view is a positive
    assert m(b, state(0.04)).loss.item() != pytest.approx(a)


def test_unknown_organs_are_only_positive_with_themselves():
    t = organ_targets(torch.tensor([2, -1, -1, 2]))
    assert t[0] == t[3] and t[1] != t[2] and (t[1:3] < 0).all()


def test_teacher_follows_the_student_by_ema():
    torch.manual_seed(0)
    m = Coda(tiny_backbone(), **KW)
    with torch.no_grad():
        for p in m.student.parameters():
            p.add_(1.0)
    before = [p.clone() for p in m.teacher.parameters()]
    m.after_step(state(momentum=0.9))
    for t0, t1, s in zip(before, m.teacher.parameters(), m.student.parameters()):
        assert torch.allclose(t1, 0.9 * t0 + 0.1 * s)


def test_last_layer_parameters_are_the_prototype_layers():
    m = Coda(tiny_backbone(), **KW)
    ids = {id(p) for p in m.last_layer_parameters()}
    expected = {id(m.student[h].last_layer.weight_v) for h in ("org_head", "ins_head")}
    assert ids == expected


def test_errors():
    with pytest.raises(ValueError, match="at least one branch"):
        Coda(tiny_backbone(), use_inter=False, use_intra=False, **KW)
    m = Coda(tiny_backbone(), **KW)
    with pytest.raises(ValueError, match="local crops"):
        m(batch(num_local=0), state(0.04))
