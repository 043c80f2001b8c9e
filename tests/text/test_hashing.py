"""Hash text encoder: deterministic, unit norm, shared words bring texts closer; meets TextEncoder."""
from __future__ import annotations

import torch

from organfm.text import TextEncoder
from organfm.text.hashing import HashTextEncoder


def test_deterministic_unit_norm_and_contract():
    enc = HashTextEncoder(dim=64)
    assert isinstance(enc, TextEncoder)
    a = enc.encode(["MR, 3 T, TR 500 ms", "CT, axial"])
    assert a.shape == (2, 64) and torch.allclose(a.norm(dim=1), torch.ones(2))
    assert torch.equal(a, HashTextEncoder(dim=64).encode(["MR, 3 T, TR 500 ms", "CT, axial"]))
    assert not torch.equal(a, HashTextEncoder(dim=64, seed=1).encode(["MR, 3 T, TR 500 ms", "CT, axial"]))


def test_shared_words_are_closer():
    enc = HashTextEncoder(dim=512)
    base, near, far = enc.encode(["MR sequence SE 3 T vendor siemens", "MR sequence SE 1.5 T vendor siemens",
                                  "CT axial spacing 1 x 1 x 1 mm"])
    assert base @ near > base @ far


def test_registered_as_a_parameterless_text_tower_that_round_trips_its_description():
    from organfm.text.tower import TEXT_TOWERS, create_text_tower

    enc = create_text_tower("hash", width=32)
    assert TEXT_TOWERS.get("hash") is HashTextEncoder and isinstance(enc, HashTextEncoder)
    assert enc.dim == enc.width == 32 and not list(enc.parameters()) and repr(enc) == "HashTextEncoder(dim=32, seed=0)"
    again = HashTextEncoder.from_description(HashTextEncoder(dim=32, seed=3).describe(), None)
    texts = ["MR, 3 T", "CT"]
    assert torch.equal(again.encode(texts), HashTextEncoder(dim=32, seed=3).encode(texts))
    assert torch.equal(enc(enc.tokenize(texts)), enc.encode(texts))
