"""The corpus word tokenizer: frequency order, padding, unknown words, truncation, a save/load round trip."""
from __future__ import annotations

import json
import os

import pytest

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


def test_a_saved_tokenizer_gives_the_same_ids_and_a_foreign_file_is_refused(tmp_path):
    tok = WordTokenizer.from_corpus(["a CT of the liver", "an MRI of the brain", "CT 3.5 mm"])
    texts = ["the liver, on CT!", "3.5 mm of brain", "nothing known here"]
    tok.save(tmp_path / "tok.json")
    loaded = WordTokenizer.load(tmp_path / "tok.json")
    assert loaded(texts).tolist() == tok(texts).tolist()
    assert [loaded.vocab[i] for i in loaded(["the liver, on CT!"])[0].tolist()] == ["the", "liver", "[UNK]", "ct"]
    (tmp_path / "other.json").write_text(json.dumps({"vocab": ["[PAD]", "[UNK]"]}))
    with pytest.raises(ValueError, match="not an organfm word tokenizer"):
        WordTokenizer.load(tmp_path / "other.json")
    with pytest.raises(ValueError, match="starts with"):
        WordTokenizer(["a", "[PAD]", "[UNK]"])


def test_max_len_truncates_and_corpus_limits_apply():
    tok = WordTokenizer.from_corpus(["b b b a a c"], max_words=2)
    assert tok.vocab == ["[PAD]", "[UNK]", "b", "a"]  # c is beyond max_words
    assert WordTokenizer.from_corpus(["b b b a a c"], min_count=2).vocab == ["[PAD]", "[UNK]", "b", "a"]
    ids = tok(["a b c a b", "b"], max_len=3)
    assert ids.tolist() == [[3, 2, 1], [2, 0, 0]]
    assert tok([]).shape == (0, 1) and tok(["..."]).shape == (1, 1)  # a dots-only word is one token
    assert tok(["!!"]).tolist() == [[0]]  # no word at all: one padding column, never a zero-width tensor


def test_a_failed_save_keeps_the_previous_tokenizer_and_leaves_no_temporary(tmp_path, monkeypatch):
    old = WordTokenizer.from_corpus(["liver"])
    old.save(tmp_path / "tok.json")

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)  # the disk fills at the last step, after all bytes were written
    with pytest.raises(OSError, match="No space"):
        WordTokenizer.from_corpus(["spleen kidney"]).save(tmp_path / "tok.json")
    assert WordTokenizer.load(tmp_path / "tok.json").vocab == old.vocab
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"]
