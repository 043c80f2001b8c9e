"""Captions: templated from organ, modality and label; a template is checked; texts per record by mode."""
from __future__ import annotations

import pytest

from organfm.data.errors import DataError
from organfm.data.records import Record
from organfm.text.captions import caption, check_template, prompts, record_texts


def test_captions_and_prompts():
    assert caption("kidney_left", modality="CT", label="cyst") == "a CT image of the kidney left with cyst"
    assert caption(None) == "a medical image of the body"
    assert prompts(["liver", "spleen"], modality="CT") == ["a CT image of the liver", "a CT image of the spleen"]


def test_a_bad_template_names_the_setting_and_the_placeholders():
    assert check_template("{organ} in {modality}", "zeroshot.template") == "{organ} in {modality}"
    with pytest.raises(ValueError, match=r"zeroshot.template='a \{site\}' is not a caption template.*\{organ\}"):
        check_template("a {site}", "zeroshot.template")


def _records(*metas: dict) -> list[Record]:
    return [Record(path=f"/d/{i}.png", reader="image", key=f"{i}.png", organ="liver", label="cyst", meta=dict(m))
            for i, m in enumerate(metas)]


def test_record_texts_by_mode():
    with_text = _records({"text": " fatty liver "}, {"text": "normal", "modality": "MR"})
    assert record_texts(with_text) == ["fatty liver", "normal"]  # auto: the column, stripped
    without = _records({}, {"modality": "MR"})
    assert record_texts(without) is None  # auto without the column: images only
    assert record_texts(with_text, mode="none") is None
    assert record_texts(without, mode="captions", modality="CT", with_label=True) == [
        "a CT image of the liver with cyst", "a MR image of the liver with cyst"]  # a record's own modality wins
    with pytest.raises(DataError, match="no record has a 'text' column"):
        record_texts(without, mode="column")
    with pytest.raises(DataError, match=r"/d/1.png: its 'text' text is empty"):
        record_texts(_records({"text": "a"}, {}), mode="auto")
    with pytest.raises(ValueError, match="text mode must be one of auto, column, captions, none"):
        record_texts(without, mode="sometimes")
