"""The ``captioned`` source: each image's view batch carries its own caption and a text id shared by equal
texts; the run's corpus tokenizer is handed to a ``small`` tower; no texts is refused."""
from __future__ import annotations

import itertools

import pytest
import torch

from organfm.batches import SourceContext, create_batch_source
from organfm.batches.captioned import TextViewsDataset, text_table
from organfm.config import DataConfig, ViewsConfig
from organfm.text.tokenizer import WordTokenizer

OPTIONS = {"texts": "auto", "text_column": "text", "caption_modality": "medical", "caption_labels": False,
           "text_tower": "small"}


def _source(tmp_path, **options):
    data = DataConfig(synthetic_organs=3, synthetic_images_per_organ=4, synthetic_size=32)
    views = ViewsConfig(global_size=32, num_local_views=0)
    return create_batch_source("captioned", SourceContext(data=data, views=views, batch_size=4, seed=2,
                                                          run_dir=tmp_path, options={**OPTIONS, **options}))


def test_text_table_by_hand():
    distinct, ids = text_table(["b", "a", "b", "c", "a"])
    assert distinct == ["b", "a", "c"] and ids.tolist() == [0, 1, 0, 2, 1] and ids.dtype == torch.long
    items = TextViewsDataset(_ByIndexAndSeed([{"x": 0}, {"x": 1}, {"x": 2}]), ["b", "a", "b"])
    assert items[(2, 9)] == {"x": 2, "seed": 9, "text": "b", "text_id": 0} and len(items) == 3


class _ByIndexAndSeed:
    """Rows indexed as the sampler indexes them, ``(index, seed)``."""

    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    def __getitem__(self, key: tuple[int, int]) -> dict:
        return {**self.rows[key[0]], "seed": key[1]}


def test_each_image_carries_its_own_caption_and_equal_texts_share_an_id(tmp_path):
    src = _source(tmp_path)
    for batch in itertools.islice(iter(src.batches), 3):
        # synthetic item i is organ i % 3, captioned from its organ name
        assert batch["text"] == [f"a medical image of the organ {int(o):02d}" for o in batch["organ"]]
        same_text = torch.tensor([[a == b for b in batch["text"]] for a in batch["text"]])
        assert torch.equal(batch["text_id"][:, None] == batch["text_id"][None, :], same_text)
    assert src.summary(0)["texts"] == {"mode": "auto", "distinct": 3}


def test_a_small_tower_gets_the_runs_corpus_tokenizer_and_another_tower_none(tmp_path):
    src = _source(tmp_path)
    path = tmp_path / "text" / "tokenizer.json"
    assert src.method_kwargs == {"tokenizer_file": str(path)}
    assert {"a", "medical", "image", "of", "the", "organ", "00", "01", "02"} <= set(WordTokenizer.load(path).vocab)
    assert _source(tmp_path / "other", text_tower="hash").method_kwargs == {}


def test_no_texts_is_refused(tmp_path):
    with pytest.raises(ValueError, match="method.texts=none: CLIP trains on image-text pairs"):
        _source(tmp_path, texts="none")
