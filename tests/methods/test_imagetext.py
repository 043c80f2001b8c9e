"""imagetext, CLIP pretraining (MMKD stage 1): its loss on a batch, the logit-scale clamp, gradients, and what it exports."""
from __future__ import annotations

import math

import pytest
import torch

from organfm.losses.distill import clip_loss
from organfm.methods import create_method
from organfm.text.tokenizer import WordTokenizer
from tests.methods.helpers import batch, state, tiny_backbone

TEXTS = ["a ct image of the liver", "a ct image of the lung", "a ct image of the liver", "an mri of the brain"]


@pytest.fixture
def tokenizer_file(tmp_path):
    WordTokenizer.from_corpus(TEXTS).save(tmp_path / "tok.json")
    return str(tmp_path / "tok.json")


def _batch():
    b = batch(b=4, num_global=1, num_local=0)
    b.update(text=list(TEXTS), text_id=torch.tensor([0, 1, 0, 2]))
    return b


def test_loss_is_symmetric_infonce_over_the_joint_embeddings_with_repeated_texts_as_positives(tokenizer_file):
    torch.manual_seed(0)
    m = create_method("imagetext", backbone=tiny_backbone(), tokenizer_file=tokenizer_file, embed_dim=16, text_width=32)
    b = _batch()
    out = m(b, state())
    joint = m.student["text"]
    with torch.no_grad():
        img = joint.image(m.student["backbone"](b["global"][0]))
        txt = joint.text(joint.tower.tokenize(b["text"]))
    assert math.isclose(out.loss.item(), clip_loss(img, txt, 1 / 0.07, b["text_id"]).item(), rel_tol=1e-5)
    plain = create_method("imagetext", backbone=tiny_backbone(), tokenizer_file=tokenizer_file, embed_dim=16,
                          text_width=32, repeated_positives=False)
    plain.load_state_dict(m.state_dict())
    assert math.isclose(plain(b, state()).loss.item(), clip_loss(img, txt, 1 / 0.07).item(), rel_tol=1e-5)
    out.loss.backward()
    for name, p in m.named_parameters():  # backbone, text tower, both heads and the logit scale all learn
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name} got no gradient"


def test_logit_scale_above_ln_100_has_a_gradient_and_comes_back_down_after_the_step(tokenizer_file):
    m = create_method("imagetext", backbone=tiny_backbone(), tokenizer_file=tokenizer_file, embed_dim=8, text_width=16)
    scale = m.student["text"].logit_scale
    with torch.no_grad():
        scale.fill_(10.0)
    out = m(_batch(), state())
    assert math.isclose(out.logs["logit_scale"].item(), math.exp(10.0), rel_tol=1e-5)  # used as is in the forward
    out.loss.backward()
    assert scale.grad is not None and scale.grad.abs() > 0  # a forward clamp would give exactly 0 here
    torch.optim.SGD([scale], lr=0.0).step()
    m.after_step(state())
    assert math.isclose(scale.item(), math.log(100.0), rel_tol=1e-6)
    with torch.no_grad():
        scale.fill_(-1.0)
    m.after_step(state())
    assert scale.item() == 0.0


def test_exported_text_side_and_bad_settings(tokenizer_file):
    m = create_method("imagetext", backbone=tiny_backbone(), tokenizer_file=tokenizer_file)
    assert m.exported_text() is m.student["text"] and m.exported_backbone() is m.student["backbone"]
    assert m.exported_text().describe()["tower"]["vocab_size"] == len(WordTokenizer.load(tokenizer_file))
    with pytest.raises(ValueError, match="texts=none"):
        create_method("imagetext", backbone=tiny_backbone(), tokenizer_file=tokenizer_file, texts="none")
    with pytest.raises(ValueError, match="tokenizer"):
        create_method("imagetext", backbone=tiny_backbone())
