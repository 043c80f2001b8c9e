"""The small text encoder: the TextEncoder contract, a toy CLIP match it learns, padding masked out."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from organfm.losses.distill import clip_loss
from organfm.text import TextEncoder
from organfm.text.captions import caption
from organfm.text.small import SmallTextEncoder
from organfm.text.tokenizer import WordTokenizer


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


def test_a_text_of_unknown_words_only_is_finite_and_padding_does_not_change_a_text():
    tok = WordTokenizer.from_corpus(["a ct of the liver"])
    torch.manual_seed(0)
    enc = SmallTextEncoder(tok, width=8, depth=1, heads=2).eval()
    out = enc.encode(["zzz qqq", "a ct"])
    assert torch.isfinite(out).all()
    # "a ct" alone and beside a longer text (so padded) embed the same: padding is masked out
    assert torch.allclose(enc.encode(["a ct"]), enc.encode(["a ct", "a ct of the liver"])[:1], atol=1e-5)
