"""The ``captioned`` source: image views with each image's text (stage 1 CLIP).

Texts come from :func:`organfm.batches.texts.dataset_texts` (a manifest column, or captions templated from
organ and modality); the corpus tokenizer of the run is written to ``<run>/text/tokenizer.json`` and handed
to the method (``tokenizer_file``) when its text tower is the built-in ``small`` one. Batches are exactly
resumable, as for ``views``: they are a pure function of (seed, epoch, index).
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Dataset

from organfm.batches import BatchSource, SourceContext, register_batch_source
from organfm.batches.texts import dataset_texts, run_tokenizer
from organfm.data.samplers import ResumableBatchSampler

__all__ = ["TextViewsDataset", "image_views", "text_options"]


class TextViewsDataset(Dataset):
    """Item ``(index, seed)`` -> the wrapped item plus ``text`` (str) and ``text_id`` (int: equal texts, equal ids).

    Args:
        items: a dataset indexed by ``(index, seed)`` returning dicts (e.g. ``MultiViewDataset``).
        texts: one text per index.
    """

    def __init__(self, items: Dataset, texts: list[str]) -> None:
        ids: dict[str, int] = {}
        self.items, self.texts = items, texts
        self.text_ids = [ids.setdefault(t, len(ids)) for t in texts]

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        item = self.items[key]
        item.update(text=self.texts[key[0]], text_id=self.text_ids[key[0]])
        return item


def image_views(ctx: SourceContext, dataset: Any) -> Dataset:
    """``MultiViewDataset`` of ``dataset`` with the CPU view recipe of ``views.*``."""
    from organfm.batches.views import views_kwargs
    from organfm.views import GlobalLocalViews, MultiViewDataset

    # only the CPU recipe's arguments: device-side view making is the views source's business
    recipe_args = inspect.signature(GlobalLocalViews).parameters
    return MultiViewDataset(dataset, GlobalLocalViews(**{k: v for k, v in views_kwargs(ctx.views).items()
                                                        if k in recipe_args}))


def text_options(ctx: SourceContext, dataset: Any) -> tuple[list[str] | None, dict[str, Any]]:
    """The dataset's texts under ``method.texts`` and the method kwargs they fix (the tokenizer file)."""
    o = ctx.options
    texts = dataset_texts(dataset, mode=o.get("texts", "auto"), column=o.get("text_column", "text"),
                          modality=o.get("caption_modality", "medical"), with_label=bool(o.get("caption_labels")),
                          where=str(ctx.data.source))
    if texts is None or o.get("text_tower", "small") != "small":
        return texts, {}
    return texts, {"tokenizer_file": str(run_tokenizer(Path(ctx.run_dir or "."), texts, rank=ctx.rank))}


def image_contract(ctx: SourceContext, dataset: Any) -> dict[str, Any]:
    """What the exported backbone expects (as the ``views`` source writes it)."""
    size, v = ctx.views.global_size, ctx.views
    return {"input_size": [1, size, size], "mean": [v.mean], "std": [v.std],
            "organs": list(getattr(dataset, "organs", [])),
            "intensity": {"mode": ctx.data.intensity, "window": ctx.data.window,
                          "note": "intensities scaled to [0, 1] by this mode, then (x - mean) / std"}}


@register_batch_source("captioned")
def captioned_source(ctx: SourceContext) -> BatchSource:
    """Batches ``{"global": [(B,1,G,G)] * Vg, "local": [...], "organ": (B,), "text": [str] * B, "text_id": (B,)}``."""
    from organfm.batches.views import build_image_dataset

    dataset = build_image_dataset(ctx.data, skip_log_dir=str(Path(ctx.run_dir or ".") / "skips"))
    per_step = ctx.batch_size * ctx.world_size * ctx.accumulate
    if len(dataset) < per_step:
        raise ValueError(f"{len(dataset)} images cannot fill one step of batch {ctx.batch_size} x {ctx.world_size} "
                         f"devices x {ctx.accumulate} accumulation: lower trainer.batch_size or add images")
    texts, method_kwargs = text_options(ctx, dataset)
    if texts is None:
        raise ValueError("method.texts=none: CLIP trains on image-text pairs; use texts=auto, column or captions")
    sampler = ResumableBatchSampler(len(dataset), ctx.batch_size, seed=ctx.seed, start_batch=ctx.start_batch,
                                    rank=ctx.rank, world_size=ctx.world_size)
    loader = DataLoader(TextViewsDataset(image_views(ctx, dataset), texts), batch_sampler=sampler,
                        num_workers=ctx.num_workers)
    distinct = len(set(texts))

    def summary(steps: int) -> dict[str, Any]:
        base = dataset.summary() if hasattr(dataset, "summary") else {"num_images": len(dataset)}
        return {**base, "texts": {"mode": ctx.options.get("texts"), "distinct": distinct}}  # no text itself: reports may name people

    def write_run_files(run_dir: Path) -> None:
        if hasattr(dataset, "save_split"):
            dataset.save_split(run_dir / "splits.csv")

    return BatchSource(batches=loader, steps_per_epoch=max(1, ctx.steps_per_epoch or len(dataset) // per_step),
                       contract=image_contract(ctx, dataset), method_kwargs=method_kwargs, summary=summary,
                       num_items=lambda steps: len(dataset), write_run_files=write_run_files)
