import pytest
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


def test_supcon_loss_is_the_hand_computed_mean_over_views_and_valid_anchors():
    """Every view of every image is an anchor; positives are the other views of its organ (an unlabelled image's
    only positive is its other view)."""
    import math

    import torch.nn.functional as F

    torch.manual_seed(0)
    temp = 0.5
    m = SupCon(tiny_backbone(), hidden_dim=32, out_dim=16, temp=temp)
    b = batch(num_local=0)
    out = m(b, state(0.04))
    with torch.no_grad():
        emb = F.normalize(m.student["head"](m.student["backbone"](torch.cat(b["global"]))).double(), dim=1).tolist()
    # view-major (view 0 of images 0..5, then view 1); an unknown organ (-1) is a label of its own image
    organs = [o if o >= 0 else -1 - k for k, o in enumerate(b["organ"].tolist())] * 2
    losses = []
    for i, ei in enumerate(emb):
        sim = [sum(x * y for x, y in zip(ei, ej)) / temp for ej in emb]
        others = [j for j in range(len(emb)) if j != i]
        positives = [j for j in others if organs[j] == organs[i]]
        log_denom = math.log(sum(math.exp(sim[j]) for j in others))
        losses.append(-sum(sim[p] - log_denom for p in positives) / len(positives))  # base_temp == temp
    assert len(losses) == 12
    assert out.loss.item() == pytest.approx(sum(losses) / len(losses), rel=1e-5)
