"""The ``captioned`` source: image views with each image's text (stage 1 CLIP).

Texts come from :func:`organfm.batches.texts.dataset_texts` (a manifest column, or captions templated from
organ and modality); the corpus tokenizer of the run is written to ``<run>/text/tokenizer.json`` and handed
to the method (``tokenizer_file``) when its text tower is the built-in ``small`` one. Batches are exactly
resumable, as for ``views``: they are a pure function of (seed, epoch, index).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from organfm.batches import BatchSource, SourceContext, register_batch_source
from organfm.batches.images import image_batch_source, image_views, load_images
from organfm.batches.texts import dataset_texts, run_tokenizer

__all__ = ["TextViewsDataset", "source_texts", "text_options", "text_table"]


def text_table(texts: list[str]) -> tuple[list[str], torch.Tensor]:
    """The distinct texts, in first-seen order, and each item's index into them ((N,) int64)."""
    ids: dict[str, int] = {}
    per_item = [ids.setdefault(t, len(ids)) for t in texts]
    return list(ids), torch.tensor(per_item, dtype=torch.long)


class TextViewsDataset(Dataset):
    """Item ``(index, seed)`` -> the wrapped item plus ``text`` (str) and ``text_id`` (int: equal texts, equal ids).

    Args:
        items: a dataset indexed by ``(index, seed)`` returning dicts (e.g. ``MultiViewDataset``).
        texts: one text per index.
    """

    def __init__(self, items: Dataset, texts: list[str]) -> None:
        self.items, self.texts = items, texts
        self.text_ids = text_table(texts)[1].tolist()

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        item = self.items[key]
        item.update(text=self.texts[key[0]], text_id=self.text_ids[key[0]])
        return item


def source_texts(ctx: SourceContext, dataset: Any) -> list[str] | None:
    """The dataset's texts under the method's ``texts``, ``text_column``, ``caption_*`` keys."""
    o = ctx.options
    return dataset_texts(dataset, mode=o.get("texts", "auto"), column=o.get("text_column", "text"),
                         modality=o.get("caption_modality", "medical"), with_label=bool(o.get("caption_labels")),
                         where=str(ctx.data.source))


def text_options(ctx: SourceContext, dataset: Any) -> tuple[list[str] | None, dict[str, Any]]:
    """The dataset's texts and the method kwargs they fix (the corpus tokenizer's file, for a ``small`` tower)."""
    texts = source_texts(ctx, dataset)
    if texts is None or ctx.options.get("text_tower", "small") != "small":
        return texts, {}
    return texts, {"tokenizer_file": str(run_tokenizer(Path(ctx.run_dir or "."), texts))}


@register_batch_source("captioned")
def captioned_source(ctx: SourceContext) -> BatchSource:
    """Batches ``{"global": [(B,1,G,G)] * Vg, "local": [...], "organ": (B,), "text": [str] * B, "text_id": (B,)}``."""
    dataset = load_images(ctx)
    texts, method_kwargs = text_options(ctx, dataset)
    if texts is None:
        raise ValueError("method.texts=none: CLIP trains on image-text pairs; use texts=auto, column or captions")
    # the count, never a text: free-text reports may name people
    facts = {"texts": {"mode": ctx.options.get("texts"), "distinct": len(set(texts))}}
    return image_batch_source(ctx, dataset, TextViewsDataset(image_views(ctx, dataset), texts), facts=facts,
                              method_kwargs=method_kwargs)
