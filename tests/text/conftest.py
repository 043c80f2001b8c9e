"""Text fixtures: a tiny BERT folder built offline (a stand-in for a user's BiomedBERT folder)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

# Specials first (BERT's ids 0..4), then words of medical captions; anything else is [UNK].
TINY_BERT_WORDS = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "a", "an", "ct", "mri", "x", "-", "ray", "pet", "ultrasound", "image", "scan", "of", "the", "with", "and",
    "no", "left", "right", "liver", "lung", "spleen", "kidney", "heart", "brain", "pancreas", "stomach",
    "bladder", "prostate", "bone", "chest", "abdomen", "body", "medical", "cyst", "tumor", "lesion", "normal",
    "nodule", "fracture", "t1", "t2", "axial", "view",
]


@pytest.fixture
def make_tiny_bert(tmp_path) -> Callable[..., Path]:
    """``make(name="bert", **config) -> folder``: a tiny random BERT (config, weights, tokenizer) in tmp_path.

    The model is seeded, so two folders built with the same arguments hold the same weights.
    """
    transformers = pytest.importorskip("transformers")
    import torch

    def make(name: str = "bert", **config) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        vocab = folder / "vocab.txt"
        vocab.write_text("\n".join(TINY_BERT_WORDS) + "\n")
        settings = dict(vocab_size=len(TINY_BERT_WORDS), hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
        settings.update(config)
        torch.manual_seed(0)
        transformers.BertModel(transformers.BertConfig(**settings)).save_pretrained(folder)
        transformers.BertTokenizer(vocab=str(vocab)).save_pretrained(folder)
        return folder

    return make


@pytest.fixture
def tiny_bert(make_tiny_bert) -> Path:
    """A tiny BERT folder (hidden size 32, 64 positions)."""
    return make_tiny_bert()
