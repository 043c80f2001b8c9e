"""The ``volumes`` source: whole 3D volumes as cubes, with a SimMIM mask and a text embedding per volume.

Volumes come from ``data.source`` (``organfm.data.volume_set``: a ``.npz``, NIfTI files, DICOM series, a
manifest) or, by default (``data.source=synthetic``), from RaSD's 3D generator, so no file is needed; the
method's ``synthetic_volumes`` adds that many RaSD volumes to the user's. Each item's random flips and mask
are drawn from a generator seeded by (seed, epoch, index) (``ResumableBatchSampler``), so a resumed run sees
exactly the batches an uninterrupted one would have.

Each volume's description is built from its acquisition metadata only (``describe_acquisition``) and
embedded once by the frozen text encoder.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from organfm.data.splits import selected_split
from organfm.batches import BatchSource, SourceContext, register_batch_source
from organfm.configtree import ConfigError
from organfm.data.acquisition import describe_acquisition
from organfm.data.samplers import ResumableBatchSampler
from organfm.data.volume_set import LoadedVolume, load_volumes, preprocess_volume
from organfm.text.tower import create_text_tower
from organfm.views.mask3d import SimMIMMask3D

__all__ = ["CubeDataset", "synthetic_volumes"]


def synthetic_volumes(count: int, cube: int, seed: int) -> list[LoadedVolume]:
    """``count`` RaSD 3D volumes at ``cube``³, preprocessed like files (item n a pure function of (seed, n))."""
    from organfm.synthesis import RaSDPairs

    pairs = RaSDPairs((cube,) * 3, seed=seed, stream="triad-volumes")
    out = []
    for n in range(count):
        where = f"synthetic:rasd3d[{n}]"
        image = pairs[n]["image"][0].numpy()
        out.append(LoadedVolume(preprocess_volume(image, cube=cube, where=where).to(torch.float16), where,
                                {"modality": "SYN", "spacing": [1.0, 1.0, 1.0]}))
    return out


class CubeDataset(Dataset):
    """Item ``(index, seed)`` -> ``{"image": (1,S,S,S), "mask": (G,G,G) int64, "text": (T,), "index": int}``.

    Args:
        volumes: preprocessed cubes.
        text: (N, T) text embedding of each volume.
        masks: the SimMIM mask generator.
        flip_prob: probability of a flip along each axis (Triad: 0.2).
    """

    def __init__(self, volumes: list[LoadedVolume], text: torch.Tensor, masks: SimMIMMask3D, flip_prob: float) -> None:
        self.volumes, self.text, self.masks, self.flip_prob = volumes, text, masks, flip_prob

    def __len__(self) -> int:
        return len(self.volumes)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, seed = key
        g = torch.Generator().manual_seed(int(seed))
        image = self.volumes[index].cube.float()
        flips = [axis for axis in range(3) if torch.rand((), generator=g).item() < self.flip_prob]
        if flips:
            image = image.flip(flips)
        return {"image": image[None].contiguous(), "mask": self.masks(g), "text": self.text[index], "index": index}


@register_batch_source("volumes")
def volumes_source(ctx: SourceContext) -> BatchSource:
    """Batches ``{"image": (B,1,S,S,S) in [0,1], "mask": (B,G,G,G), "text": (B,T), "index": (B,)}``."""
    o, data = ctx.options, ctx.data
    if ctx.batch_size < 2:  # else "Expected more than 1 value per channel" from the projector's BatchNorm
        raise ConfigError(f"trainer.batch_size={ctx.batch_size}: 3D pretraining needs at least 2 volumes per batch "
                          "(per device): its projector normalises over the batch and its loss compares pairs of "
                          "volumes; set trainer.batch_size=2 or more")
    cube = int(o["cube"])
    masks = SimMIMMask3D(cube, int(o["mask_patch_size"]), int(o["model_patch_size"]), float(o["mask_ratio"]))
    skipped = 0
    if data.source == "synthetic":
        volumes = synthetic_volumes(data.synthetic_organs * data.synthetic_images_per_organ, cube, data.synthetic_seed)
    else:
        spacing = o.get("spacing")
        volumes, skipped = load_volumes(data.source, cube=cube, split=selected_split(data.split), on_error=data.on_error,
                                        target_spacing=list(spacing) if spacing else None,
                                        skip_log_dir=str(Path(ctx.run_dir or ".") / "skips"),
                                        max_volume_voxels=data.max_volume_voxels, max_array_voxels=data.max_array_voxels)
        volumes += synthetic_volumes(int(o.get("synthetic_volumes") or 0), cube, data.synthetic_seed)
    descriptions = [describe_acquisition(v.acquisition) for v in volumes]
    # frozen: the descriptions' embeddings are fixed for the whole run
    encoder = create_text_tower(str(o["text_encoder"]), width=int(o["text_dim"])).eval().requires_grad_(False)
    unique = sorted(set(descriptions))
    if len(unique) == 1 and float(o.get("text_weight") or 0) > 0:
        # the log-ratio term compares volumes of different descriptions only: with one it is zero every step
        warnings.warn(f"all {len(volumes)} volumes share one acquisition description ({unique[0]!r}): the text "
                      "term (method.text_weight) carries nothing and every step logs loss_text 0; give volumes "
                      "their acquisition metadata (modality, sequence, field strength, ...), or set "
                      "method.text_weight=0 to say so", stacklevel=2)
    table = encoder.encode(unique)
    text = table[torch.tensor([unique.index(d) for d in descriptions])].float()

    per_step = ctx.batch_size * ctx.world_size * ctx.accumulate
    if len(volumes) < per_step:
        raise ValueError(f"{len(volumes)} volumes cannot fill one step of batch {ctx.batch_size} x {ctx.world_size} "
                         f"devices x {ctx.accumulate} accumulation: lower trainer.batch_size or add volumes")
    steps_per_epoch = ctx.steps_per_epoch or len(volumes) // per_step
    sampler = ResumableBatchSampler(len(volumes), ctx.batch_size, seed=ctx.seed, start_batch=ctx.start_batch,
                                    rank=ctx.rank, world_size=ctx.world_size)
    loader = DataLoader(CubeDataset(volumes, text, masks, float(o["flip_prob"])), batch_sampler=sampler,
                        num_workers=ctx.num_workers)
    contract = {"input_size": [1, cube, cube, cube], "mean": [0.0], "std": [1.0], "organs": [],
                "intensity": {"mode": "percentile_minmax", "percentiles": [0.5, 99.5], "window": None,
                              "cube": cube, "spacing": list(o["spacing"]) if o.get("spacing") else None,
                              "note": "clip to the 0.5/99.5 percentiles, min-max to [0, 1], "
                                      + ("resample to `spacing` mm and centre-crop/pad to the cube"
                                         if o.get("spacing") else "linear resize of the whole volume to the cube")
                                      + "; fed without normalisation"}}
    backbone_kwargs: dict[str, Any] = {"spatial_dims": 3}
    for key, arg in (("encoder_channels", "channels"), ("encoder_strides", "strides")):
        if o.get(key):
            backbone_kwargs[arg] = list(o[key])
    synthetic = sum(v.where.startswith("synthetic:") for v in volumes)
    summary = {"num_volumes": len(volumes), "synthetic_volumes": synthetic, "file_volumes": len(volumes) - synthetic,
               "skipped": skipped, "cube": cube, "mask_cells": masks.num_cells, "masked_cells": masks.num_masked,
               "text_encoder": repr(encoder), "descriptions": unique[:20], "num_descriptions": len(unique)}
    cubes = CubeDataset(volumes, text, masks, float(o["flip_prob"]))

    def monitor(n: int) -> dict:
        """Fixed volumes with fixed masks; the clean cube is what the exported encoder sees; volume labels
        (a .npz's ``<split>_labels``) where every monitored volume has one."""
        from organfm.batches.monitor import collate_items, monitor_indices

        indices = monitor_indices(len(volumes), n)
        batch = collate_items(cubes, indices)
        batch["monitor_input"] = torch.stack([volumes[i].cube.float()[None] for i in indices])
        labels = [volumes[i].label for i in indices]
        if all(label is not None for label in labels) and len(set(labels)) >= 2:
            batch["monitor_label"] = torch.tensor(labels, dtype=torch.long)
        return batch

    return BatchSource(batches=loader, steps_per_epoch=max(1, steps_per_epoch), contract=contract,
                       method_kwargs={"text_dim": int(encoder.dim)},  # a model folder fixes the text size
                       backbone_kwargs=backbone_kwargs, summary=lambda steps: summary,
                       num_items=lambda steps: len(volumes), monitor=monitor, input_sizes={"method.cube": cube})
