import pytest
import torch

from organfm.losses import DINOLoss
from organfm.methods import DINO
from tests.methods.helpers import batch, grads_reach_exactly_the_student, tiny_backbone, state


def test_dino_gradients_and_loss_against_parts():
    torch.manual_seed(0)
    m = DINO(tiny_backbone(), out_dim=64, hidden_dim=32, bottleneck_dim=16)
    b = batch(num_local=2)
    out = m(b, state(0.04))
    with torch.no_grad():
        t = torch.stack([m.teacher["head"](m.teacher["backbone"](v)) for v in b["global"]])
        s = torch.stack([m.student["head"](m.student["backbone"](v)) for v in b["global"] + b["local"]])
        ref = DINOLoss(64)(t, s, teacher_temp=0.04, skip_same_view=True)
    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert 0 < out.logs["teacher_entropy"] <= torch.log(torch.tensor(64.0)) + 1e-4
    grads_reach_exactly_the_student(m, out)
