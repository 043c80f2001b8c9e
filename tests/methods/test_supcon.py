import torch

from organfm.methods import SupCon
from tests.methods.helpers import batch, tiny_backbone, state


def test_supcon_has_no_teacher_and_every_parameter_learns():
    torch.manual_seed(0)
    m = SupCon(tiny_backbone(), hidden_dim=32, out_dim=16)
    assert not hasattr(m, "teacher") and m.export_prefix == "student.backbone.model."
    out = m(batch(num_local=0), state(0.04))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    for name, p in m.named_parameters():
        assert p.grad is not None, name
    m.after_step(state(momentum=0.99))  # a no-op, not an error
