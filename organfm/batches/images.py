"""What the image-dataset sources of text and distillation (``captioned``, ``features``) share: the CPU views
of a dataset, the exported backbone's input contract, and the :class:`BatchSource` around a loader."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Dataset

from organfm.batches import BatchSource, SourceContext
from organfm.data.samplers import ResumableBatchSampler

__all__ = ["image_batch_source", "image_contract", "image_views", "load_images"]


def load_images(ctx: SourceContext) -> Any:
    """The run's image dataset (``data.*``), checked to fill one optimisation step."""
    from organfm.batches.views import build_image_dataset

    dataset = build_image_dataset(ctx.data, skip_log_dir=str(Path(ctx.run_dir or ".") / "skips"))
    per_step = ctx.batch_size * ctx.world_size * ctx.accumulate
    if len(dataset) < per_step:
        raise ValueError(f"{len(dataset)} images cannot fill one step of batch {ctx.batch_size} x {ctx.world_size} "
                         f"devices x {ctx.accumulate} accumulation: lower trainer.batch_size or add images")
    return dataset


def image_views(ctx: SourceContext, dataset: Any) -> Dataset:
    """``MultiViewDataset`` of ``dataset`` with the CPU view recipe of ``views.*``."""
    from organfm.batches.views import views_kwargs
    from organfm.views import GlobalLocalViews, MultiViewDataset

    return MultiViewDataset(dataset, GlobalLocalViews(**views_kwargs(ctx.views)))


def image_contract(ctx: SourceContext, dataset: Any) -> dict[str, Any]:
    """What the exported backbone expects (as the ``views`` source writes it)."""
    size, v = ctx.views.global_size, ctx.views
    return {"input_size": [1, size, size], "mean": [v.mean], "std": [v.std],
            "organs": list(getattr(dataset, "organs", [])),
            "intensity": {"mode": ctx.data.intensity, "window": ctx.data.window,
                          "note": "intensities scaled to [0, 1] by this mode, then (x - mean) / std"}}


def image_batch_source(ctx: SourceContext, dataset: Any, items: Dataset, *, facts: dict[str, Any],
                       method_kwargs: dict[str, Any]) -> BatchSource:
    """The :class:`BatchSource` of ``items`` (indexed by ``(index, seed)``) in resumable seeded batches.

    Args:
        ctx: the source context.
        dataset: the image dataset (its summary, split file and organs).
        items: what a batch is collated from.
        facts: added to the run's ``data.json`` summary.
        method_kwargs: constructor arguments the data fixes.
    """
    sampler = ResumableBatchSampler(len(dataset), ctx.batch_size, seed=ctx.seed, start_batch=ctx.start_batch,
                                    rank=ctx.rank, world_size=ctx.world_size)
    per_step = ctx.batch_size * ctx.world_size * ctx.accumulate

    def summary(steps: int) -> dict[str, Any]:
        base = dataset.summary() if hasattr(dataset, "summary") else {"num_images": len(dataset)}
        return {**base, **facts}

    def write_run_files(run_dir: Path) -> None:
        if hasattr(dataset, "save_split"):
            dataset.save_split(run_dir / "splits.csv")

    from organfm.batches.views import image_monitor, view_sizes

    return BatchSource(batches=DataLoader(items, batch_sampler=sampler, num_workers=ctx.num_workers),
                       steps_per_epoch=max(1, ctx.steps_per_epoch or len(dataset) // per_step),
                       contract=image_contract(ctx, dataset), method_kwargs=method_kwargs, summary=summary,
                       num_items=lambda steps: len(dataset), write_run_files=write_run_files,
                       monitor=image_monitor(ctx, dataset, items), input_sizes=view_sizes(ctx.views))
