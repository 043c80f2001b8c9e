"""Corpus tokenizer, small text encoder (TextEncoder contract, learns a toy CLIP match), captions, text checks."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from organfm.losses.distill import clip_loss
from organfm.text import TextEncoder
from organfm.text.captions import caption, prompts
from organfm.text.small import SmallTextEncoder
from organfm.text.tokenizer import WordTokenizer


def test_tokenizer_orders_by_frequency_pads_and_maps_unknown_words(tmp_path):
    tok = WordTokenizer.from_corpus(["a CT of the liver", "a CT of the spleen", "an MRI"])
    assert tok.vocab[:6] == ["[PAD]", "[UNK]", "a", "ct", "of", "the"]  # by count, then alphabetical
    ids = tok(["the liver", "a brain scan"])
    assert ids.shape == (2, 3)
    assert ids[0].tolist() == [tok.ids["the"], tok.ids["liver"], 0]
    assert ids[1].tolist() == [tok.ids["a"], 1, 1]
    tok.save(tmp_path / "tok.json")
    assert WordTokenizer.load(tmp_path / "tok.json").vocab == tok.vocab


def test_captions_and_prompts():
    assert caption("kidney_left", modality="CT", label="cyst") == "a CT image of the kidney left with cyst"
    assert caption(None) == "a medical image of the body"
    assert prompts(["liver", "spleen"], modality="CT") == ["a CT image of the liver", "a CT image of the spleen"]


def test_small_encoder_meets_the_contract_and_learns_a_toy_clip_match():
    organs = ["liver", "spleen", "kidney", "lung", "heart", "brain"]
    texts = [caption(o, modality="CT") for o in organs]
    tok = WordTokenizer.from_corpus(texts)
    torch.manual_seed(0)
    enc = SmallTextEncoder(tok, width=16, depth=1, heads=2)
    assert isinstance(enc, TextEncoder) and enc.encode(texts).shape == (6, 16)
    # fixed "image" embeddings, one per organ; train the text side to match its own image
    images = F.normalize(torch.randn(6, 16, generator=torch.Generator().manual_seed(1)), dim=-1)
    ids = enc.tokenize(texts)
    opt = torch.optim.Adam(enc.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = clip_loss(images, F.normalize(enc(ids), dim=-1), 10.0)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first
    sims = images @ F.normalize(enc.encode(texts), dim=-1).T
    assert torch.equal(sims.argmax(1), torch.arange(6))  # every caption retrieves its own image


def test_a_hugging_face_folder_without_config_is_a_clear_error(tmp_path):
    from organfm.text.tower import create_text_tower

    with pytest.raises(FileNotFoundError, match="no config.json"):
        create_text_tower(str(tmp_path))
    with pytest.raises(ValueError, match="unknown text tower 'bert'; valid: hash, hf, small, or a local"):
        create_text_tower("bert")


def test_a_text_of_unknown_words_only_is_finite_and_padding_does_not_change_a_text():
    tok = WordTokenizer.from_corpus(["a ct of the liver"])
    torch.manual_seed(0)
    enc = SmallTextEncoder(tok, width=8, depth=1, heads=2).eval()
    out = enc.encode(["zzz qqq", "a ct"])
    assert torch.isfinite(out).all()
    # "a ct" alone and beside a longer text (so padded) embed the same: padding is masked out
    assert torch.allclose(enc.encode(["a ct"]), enc.encode(["a ct", "a ct of the liver"])[:1], atol=1e-5)


def test_joint_text_saves_and_loads_the_same_embeddings(tmp_path):
    from organfm.text.tower import JointText, load_joint_text, save_joint_text, text_folder

    tok = WordTokenizer.from_corpus(["a ct of the liver", "an mri of the brain"])
    torch.manual_seed(0)
    joint = JointText(SmallTextEncoder(tok, width=8, depth=1, heads=2), image_dim=5, embed_dim=4)
    with torch.no_grad():
        joint.logit_scale.fill_(3.0)
    save_joint_text(joint, tmp_path / "export" / "text")
    assert text_folder(tmp_path) == tmp_path / "export" / "text"  # a run folder finds its export's text side
    loaded = load_joint_text(tmp_path / "export")
    texts = ["a ct of the liver", "an mri of the brain", "a ct of the liver"]
    assert torch.equal(loaded.embed_texts(texts), joint.embed_texts(texts))
    emb = joint.embed_texts(texts)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3)) and torch.equal(emb[0], emb[2])
    feats = torch.randn(3, 5)
    assert torch.equal(loaded.image(feats), joint.image(feats)) and loaded.logit_scale.item() == 3.0
    with pytest.raises(FileNotFoundError, match="no text tower"):
        load_joint_text(tmp_path / "nothing")
