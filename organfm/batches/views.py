"""The ``views`` source: multi-view crops (global + local) of an image dataset, exactly resumable.

The dataset is the embedded synthetic organs (``data.source=synthetic``) or the user's files
(``organfm.data.build_dataset``), or a uint8 shard cache (``organfm cache``). Batches and every augmentation
are a pure function of (seed, epoch, image) through ``ResumableBatchSampler`` and ``MultiViewDataset``.
With ``views.on_device=true`` the loader yields uint8 images, organ ids and item seeds, and
``BatchSource.on_device`` makes the views on the accelerator (``organfm.views.device.DeviceViews``).
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from torch.utils.data import DataLoader, Dataset

from organfm.batches import BatchSource, SourceContext, register_batch_source
from organfm.config import DataConfig, ViewsConfig
from organfm.data.sample import IMAGE, ORGAN
from organfm.data.samplers import ResumableBatchSampler
from organfm.data.shards import ShardDataset, is_shard_dir, to_uint8
from organfm.views import GlobalLocalViews, MultiViewDataset
from organfm.views.device import DeviceViews

__all__ = ["SeededImages", "build_image_dataset", "views_kwargs"]


def build_image_dataset(data: DataConfig, *, skip_log_dir: str | None = None, uint8: bool = False):
    """The image dataset named by ``data.source``: ``synthetic`` (the embedded default), a shard cache folder
    (``organfm.data.shards``; uint8 images when ``uint8``, else float in [0, 1]) or real files."""
    if data.source != "synthetic" and is_shard_dir(data.source):  # a cache written by `organfm cache`
        return ShardDataset(data.source, as_float=not uint8)
    if data.source == "synthetic":
        from organfm.synthesis import SyntheticOrgans

        return SyntheticOrgans(num_organs=data.synthetic_organs, images_per_organ=data.synthetic_images_per_organ,
                               size=data.synthetic_size, num_labels=data.synthetic_labels, dim=2,
                               seed=data.synthetic_seed)
    from organfm.data import build_dataset

    # label_columns names a subject manifest's labels (organ sets), not an image dataset's
    kwargs = {k: v for k, v in asdict(data).items()
              if not k.startswith("synthetic_") and k not in ("source", "label_columns")}
    if kwargs.get("window") is not None:
        kwargs["window"] = tuple(kwargs["window"])
    return build_dataset(data.source, skip_log_dir=skip_log_dir, **kwargs)


def views_kwargs(views: ViewsConfig) -> dict:
    """``GlobalLocalViews`` kwargs from the ``views.*`` section (lists become tuples)."""
    kwargs = {k: v for k, v in asdict(views).items() if k != "on_device"}  # where, not what: not a recipe argument
    for key in ("global_scale", "local_scale", "gamma", "blur_probs", "blur_sigma"):
        kwargs[key] = tuple(kwargs[key])
    return kwargs


@register_batch_source("views")
def views_source(ctx: SourceContext) -> BatchSource:
    """Batches ``{"global": [(B,1,G,G)] * Vg, "local": [(B,1,L,L)] * Vl, "organ": (B,)}``."""
    on_device = ctx.views.on_device
    dataset = build_image_dataset(ctx.data, skip_log_dir=str(Path(ctx.run_dir or ".") / "skips"), uint8=on_device)
    if on_device and ctx.data.source != "synthetic" and not isinstance(dataset, ShardDataset) \
            and getattr(ctx.data, "image_size", None) is None:
        raise ValueError(f"views.on_device=true batches whole images of one size: cache {ctx.data.source} once "
                         "with `organfm cache data=... --out DIR --size N` and train on data=DIR")
    per_step = ctx.batch_size * ctx.world_size * ctx.accumulate
    steps_per_epoch = ctx.steps_per_epoch or len(dataset) // per_step
    if len(dataset) < per_step:
        raise ValueError(f"{len(dataset)} images cannot fill one step of batch {ctx.batch_size} x {ctx.world_size} "
                         f"devices x {ctx.accumulate} accumulation: lower trainer.batch_size or add images")
    sampler = ResumableBatchSampler(len(dataset), ctx.batch_size, seed=ctx.seed, start_batch=ctx.start_batch,
                                    rank=ctx.rank, world_size=ctx.world_size)
    if on_device:  # the loader moves uint8 bytes; the views are made where the batch lands
        items, views = SeededImages(dataset), DeviceViews(**views_kwargs(ctx.views))
        move = lambda batch: {**views(batch["image"], batch["seed"]), "organ": batch["organ"]}  # noqa: E731
    else:
        items, move = MultiViewDataset(dataset, GlobalLocalViews(**views_kwargs(ctx.views))), None
    loader = DataLoader(items, batch_sampler=sampler, num_workers=ctx.num_workers)
    organs = list(getattr(dataset, "organs", []))
    size, v = ctx.views.global_size, ctx.views
    intensity = {"mode": ctx.data.intensity, "window": ctx.data.window}
    if isinstance(dataset, ShardDataset):  # the cache's own settings made its bytes
        intensity = {k: dataset.meta["contract"].get(k) for k in ("mode", "window")}
    contract = {"input_size": [1, size, size], "mean": [v.mean], "std": [v.std], "organs": organs,
                "intensity": {**intensity, "note": "intensities scaled to [0, 1] by this mode, then (x - mean) / std"}}

    def write_run_files(run_dir: Path) -> None:
        if hasattr(dataset, "save_split"):
            dataset.save_split(run_dir / "splits.csv")

    return BatchSource(batches=loader, steps_per_epoch=max(1, steps_per_epoch), contract=contract,
                       summary=lambda steps: dataset.summary() if hasattr(dataset, "summary")
                       else {"num_images": len(dataset)},
                       num_items=lambda steps: len(dataset), write_run_files=write_run_files, on_device=move,
                       monitor=image_monitor(ctx, dataset, items, move), input_sizes=view_sizes(ctx.views))


def view_sizes(views: ViewsConfig) -> dict[str, int]:
    """The view sizes a backbone must accept (local crops only where there are any)."""
    sizes = {"views.global_size": views.global_size}
    if views.num_local_views > 0:
        sizes["views.local_size"] = views.local_size
    return sizes


def image_monitor(ctx: SourceContext, dataset, items, move=None):
    """``BatchSource.monitor`` of an image dataset: training views of fixed items, their clean images at the
    contract's size, and their organ ids as labels (where there are at least two organs)."""
    from organfm.batches.monitor import clean_images, collate_items, monitor_indices

    def monitor(n: int) -> dict:
        indices = monitor_indices(len(dataset), n)
        batch = collate_items(items, indices)
        if move is not None:  # the device-view path: views made from the uint8 images here, on the CPU
            batch = move(batch)
        images, organs = clean_images(dataset, indices, size=ctx.views.global_size, mean=ctx.views.mean,
                                      std=ctx.views.std)
        batch["monitor_input"] = images
        if int((organs >= 0).sum()) == len(indices) and len(set(organs.tolist())) >= 2:
            batch["monitor_label"] = organs
        return batch

    return monitor


class SeededImages(Dataset):
    """Item ``(index, seed)`` -> ``{"image": uint8 (C, H, W), "organ": int, "seed": int}``: the device view
    path's loader item (the views are drawn later from ``seed``, on the device).

    Args:
        dataset: yields ``{"image": (C, H, W) uint8, or float in [0, 1], "organ": int}`` of one size.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, seed = key
        item = self.dataset[index]
        image = item[IMAGE]
        if image.ndim != 3:
            raise ValueError(f"views.on_device=true makes 2D views; item {index} has shape {tuple(image.shape)}")
        return {IMAGE: to_uint8(image), ORGAN: int(item[ORGAN]), "seed": seed}
