"""The ``organ_sets`` source: subjects as sets of organ images (Pan-FM), exactly resumable.

``data.source=synthetic`` (the embedded default) draws ``SyntheticSubjects``: ``data.synthetic_organs`` organ
slots, ``data.synthetic_images_per_organ`` subjects (one image per organ each), ``data.synthetic_labels``
diseases, ``data.synthetic_size`` pixels, ``data.synthetic_dim`` 2 or 3; ``mednist-subjects:<MedNIST.tar.gz>`` fills
the organ slots with real MedNIST images of one region each (the semi-real variant). Anything else is a subject manifest
CSV (``organfm.data.subjects``), read with ``data.split`` (a manifest without a split column gives every
subject), ``data.organs``, ``data.label_columns``, ``data.intensity``, ``data.window`` and ``data.on_error``. Batches are ``ResumableBatchSampler`` batches: a pure function of (seed, epoch, index).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from organfm.data.splits import selected_split
from organfm.batches import BatchSource, SourceContext, register_batch_source
from organfm.config import DataConfig
from organfm.data.samplers import ResumableBatchSampler
from organfm.synthesis.subjects import WORLD

__all__ = ["NormalizedSubjects", "build_subjects", "label_combination"]

MONITOR_LABELS = 3  # labels the monitor's kNN class combines (2^3 = 8 classes at most)


def build_subjects(data: DataConfig, *, skip_log_dir: str | None = None) -> Dataset:
    """The subjects named by ``data.source``: synthetic (the default) or a subject manifest CSV."""
    if data.source == "synthetic":
        from organfm.synthesis.subjects import SyntheticSubjects

        return SyntheticSubjects(num_subjects=data.synthetic_images_per_organ, num_organs=data.synthetic_organs,
                                 size=data.synthetic_size, num_diseases=data.synthetic_labels,
                                 dim=data.synthetic_dim, seed=data.synthetic_seed,
                                 index_offset=data.synthetic_index_offset, **_strengths(data))
    if data.source.startswith("mednist-subjects:"):  # the semi-real variant: MedNIST images as organ slots
        from organfm.synthesis.subjects import MedNISTSubjects

        return MedNISTSubjects(data.source.split(":", 1)[1], num_subjects=data.synthetic_images_per_organ,
                               num_organs=data.synthetic_organs, size=data.synthetic_size,
                               num_diseases=data.synthetic_labels, seed=data.synthetic_seed,
                               index_offset=data.synthetic_index_offset, **_strengths(data))
    from organfm.data.subjects import SubjectImages, read_subject_manifest

    # pretraining reads no label, so a manifest without a split column gives all its subjects (README)
    manifest = read_subject_manifest(data.source, organs=data.organs, split=selected_split(data.split),
                                     label_columns=data.label_columns, split_column_optional=True,
                                     on_error=data.on_error, skip_log_dir=skip_log_dir)
    return SubjectImages(manifest, data.synthetic_size, dim=data.synthetic_dim, intensity=data.intensity,
                         window=data.window, on_error=data.on_error, skip_log_dir=skip_log_dir)


def label_combination(labels: torch.Tensor, max_labels: int = MONITOR_LABELS) -> torch.Tensor:
    """The monitor's kNN class of each subject: its first ``max_labels`` binary labels read as one number,
    (N, D) -> (N,) long in [0, 2^min(D, max_labels)).

    One label is not enough: where a random network already reads it (a strong shortcut, kNN near 1 at step 0),
    the kNN has no room to show learning; the combination moves with every disease the encoder learns.
    """
    bits = (labels[:, :max_labels] > 0.5).long()
    return (bits * (2 ** torch.arange(bits.shape[1]))).sum(1)


def _strengths(data: DataConfig) -> dict:
    """The generator's world settings: which organ is dominant, how strong each mark and the noise are, and how
    organs go missing."""
    return {"dominant": data.synthetic_dominant, "dominant_strength": data.synthetic_dominant_strength,
            "subtle_strength": data.synthetic_subtle_strength, "noise": data.synthetic_noise,
            "dominant_gain": data.synthetic_dominant_gain, "missing_prob": data.synthetic_missing_prob,
            "dominant_missing_prob": data.synthetic_dominant_missing_prob,
            "mnar_strength": data.synthetic_mnar_strength}


def _world(subjects) -> dict:
    """Which synthetic subjects pretraining used, so an evaluation can draw others of the same world."""
    return {"seed": int(subjects.seed), "index_offset": int(subjects.index_offset),
            "num_subjects": len(subjects), "dominant": int(subjects.dominant),
            **{k: float(getattr(subjects, k)) for k in WORLD}}


class NormalizedSubjects(Dataset):
    """Item ``(index, seed)`` -> the subject with ``(x - mean) / std`` on available organs, 0 on missing ones.

    The seed is accepted for the sampler's contract; subjects carry no random augmentation (the student's
    organ masking is Pan-FM's only view change).
    """

    def __init__(self, subjects: Dataset, mean: float, std: float) -> None:
        self.subjects, self.mean, self.std = subjects, mean, std

    def __len__(self) -> int:
        return len(self.subjects)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int] | int) -> dict:
        index = key[0] if isinstance(key, tuple) else key
        item = dict(self.subjects[index])
        keep = item["available"].view(-1, *([1] * (item["images"].dim() - 1)))
        item["images"] = torch.where(keep, (item["images"] - self.mean) / self.std, torch.zeros(()))
        return item


@register_batch_source("organ_sets")
def organ_sets_source(ctx: SourceContext) -> BatchSource:
    """Batches ``{"images": (B, O, 1, *S), "available": bool (B, O), "labels": (B, D), "organ_ids": (B, O),
    "index": (B,)}``."""
    subjects = build_subjects(ctx.data, skip_log_dir=str(Path(ctx.run_dir or ".") / "skips"))
    per_step = ctx.batch_size * ctx.world_size * ctx.accumulate
    if len(subjects) < per_step:
        raise ValueError(f"{len(subjects)} subjects cannot fill one step of batch {ctx.batch_size} x {ctx.world_size} "
                         f"devices x {ctx.accumulate} accumulation: lower trainer.batch_size or add subjects")
    sampler = ResumableBatchSampler(len(subjects), ctx.batch_size, seed=ctx.seed, start_batch=ctx.start_batch,
                                    rank=ctx.rank, world_size=ctx.world_size)
    loader = DataLoader(NormalizedSubjects(subjects, ctx.views.mean, ctx.views.std), batch_sampler=sampler,
                        num_workers=ctx.num_workers)
    organs, dim, size = list(subjects.organs), ctx.data.synthetic_dim, ctx.data.synthetic_size
    # input_size is one organ image; the exported encoder takes (B, len(organs), *input_size)
    contract = {"input_size": [1] + [size] * dim, "mean": [ctx.views.mean], "std": [ctx.views.std],
                "organs": organs,
                **({"synthetic_subjects": _world(subjects)} if hasattr(subjects, "index_offset") else {}),
                "intensity": {"mode": ctx.data.intensity, "window": ctx.data.window,
                              "note": "each organ image scaled to [0, 1], then (x - mean) / std; a missing organ is "
                                      "all-NaN (or pass available=(B, O) bool)"}}
    items = NormalizedSubjects(subjects, ctx.views.mean, ctx.views.std)

    def monitor(n: int) -> dict:
        """Fixed subjects; the exported encoder sees the whole set; the kNN label is :func:`label_combination`."""
        from organfm.batches.monitor import collate_items, monitor_indices

        batch = collate_items(items, monitor_indices(len(subjects), n))
        batch["monitor_input"] = batch["images"]
        labels = batch.get("labels")
        if labels is not None and labels.numel() and labels.dim() == 2:
            combined = label_combination(labels)
            if len(combined.unique()) >= 2:
                batch["monitor_label"] = combined
        return batch

    return BatchSource(batches=loader, steps_per_epoch=max(1, ctx.steps_per_epoch or len(subjects) // per_step),
                       contract=contract,
                       backbone_kwargs={"num_organs": len(organs), "image_size": size, "spatial_dims": dim},
                       summary=lambda steps: subjects.summary(), num_items=lambda steps: len(subjects),
                       monitor=monitor, input_sizes={"data.synthetic_size": size})
