"""The ``features`` source: image views plus one sampled teacher's stored, projected feature per image (MMKD).

Before the first batch, every teacher of ``method.teachers`` (``name=SPEC``) gets its features of the whole
dataset: SPEC is either a model (run folder, export, ``random:<arch>``, ``timm:<arch>:<file>``), embedded once
by :func:`organfm.evaluation.embed.embed_dataset` into ``<features_dir or run>/teacher_features/<name>`` and
reused on resume, or an ``organfm embed`` output folder, checked against the dataset by its image hash.
A :class:`~organfm.heads.projector.TeacherProjector` is then fitted (denoising AE) and the normalised
projected features, the ``available`` mask and the projector are saved beside them (reused on resume).

Every batch item carries the projected feature of ONE available teacher, drawn from the item's sample seed,
a pure function of (seed, epoch, index): a resumed run draws the same teachers.
"""
from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from organfm.batches import BatchSource, SourceContext, register_batch_source
from organfm.data.errors import DataError
from organfm.data.samplers import ResumableBatchSampler

__all__ = ["TeacherViewsDataset", "organ_filter", "parse_teachers", "sample_teacher", "teacher_features"]

TEACHER_FILTERS = ("all", "organ")


def parse_teachers(items: list[str]) -> dict[str, str]:
    """``["coda=runs/a", "dino=runs/b"]`` -> ``{"coda": "runs/a", "dino": "runs/b"}``.

    Raises:
        ValueError: no teacher, an item that is not NAME=SPEC, or a name given twice; each names
            ``method.teachers``.
    """
    if not items:
        raise ValueError("method.teachers is empty: mmkd distils teacher models into the student; give "
                         "method.teachers=[NAME=SPEC,...] with SPEC a run folder, an export, random:<arch>, "
                         "timm:<arch>:<file> or an `organfm embed` output folder")
    out: dict[str, str] = {}
    for item in items:
        name, sep, spec = str(item).partition("=")
        name, spec = name.strip(), spec.strip()
        if not sep or not name or not spec:
            raise ValueError(f"method.teachers entry {item!r} is not NAME=SPEC")
        if name in out:
            raise ValueError(f"method.teachers names {name!r} twice")
        out[name] = spec
    return out


def _is_features_folder(spec: str) -> bool:
    from organfm.evaluation.embed import INDEX_FILE

    return (Path(spec).expanduser() / INDEX_FILE).is_file()


def teacher_features(name: str, spec: str, dataset: Any, store: Path, *, image_hash: str, image_size: int,
                     batch_size: int = 128, seed: int = 0) -> tuple[torch.Tensor, dict[str, Any]]:
    """Teacher ``name``'s features of every item of ``dataset``, embedded into ``store`` or read from ``spec``.

    Args:
        name: the teacher's name (in errors).
        spec: a model spec, or an ``organfm embed`` output folder.
        dataset: the training images.
        store: where a model spec's features are written (reused when present).
        image_hash: the dataset's image-set hash (:func:`organfm.evaluation.embed.set_hash`).
        image_size: input size for contract-less specs (``random:``, ``timm:``).
        batch_size, seed: embedding batch size; ``random:`` initialisation seed.

    Returns:
        ``((N, d) float32 features, the folder's index)``.

    Raises:
        ValueError: the teacher does not load, or its features cover other images than the dataset.
        DataError: an unreadable shard, a dimension mismatch or NaN features (naming the file).
    """
    from organfm.evaluation.embed import INDEX_FILE, embed_dataset, load_features

    folder = Path(spec).expanduser() if _is_features_folder(spec) else store
    if folder == store:
        try:
            embed_dataset(spec, dataset, store, shard_size=4096, batch_size=batch_size, image_size=image_size,
                          seed=seed)
        except DataError:
            raise
        except Exception as e:  # a missing file, a foreign checkpoint, wrong architecture: name the teacher
            raise ValueError(f"teacher {name}: cannot embed with {spec} ({type(e).__name__}: {e})") from e
    feats, index = load_features(folder, who=f"teacher {name}: ")
    if index.get("image_hash") != image_hash or len(feats) != len(dataset):
        raise ValueError(f"teacher {name}: {folder / INDEX_FILE} holds features of other images than the training "
                         f"data ({index.get('num_images')} images, hash {str(index.get('image_hash'))[:12]}; the data "
                         f"has {len(dataset)} images, hash {image_hash[:12]}): re-run organfm embed on this data")
    return feats, index


def organ_filter(feats: list[torch.Tensor], organ: torch.Tensor) -> torch.Tensor:
    """Keep, per image, the teachers whose feature lies nearest its own organ's prototype.

    The image-only analogue of MMKD-CLIP's quality filter (a teacher is kept for a pair when it ranks the
    right caption top-1): a teacher is kept for an image when, among the organ prototypes (mean normalised
    feature per organ) of that teacher, the image's own organ is top-1. Images of unknown organ (-1), and
    images that no teacher passes, keep every teacher (the seed's fall-back).

    Args:
        feats: per teacher, (N, d_k) features.
        organ: (N,) organ ids, -1 unknown.

    Returns:
        (N, K) bool.
    """
    n, known = organ.numel(), organ >= 0
    keep = torch.ones(n, len(feats), dtype=torch.bool)
    if not known.any():
        return keep
    ids = organ[known].unique()
    for k, f in enumerate(feats):
        z = F.normalize(f.float(), dim=-1)
        protos = F.normalize(torch.stack([z[organ == o].mean(0) for o in ids]), dim=-1)  # (O, d)
        nearest = ids[(z @ protos.T).argmax(1)]
        keep[:, k] = ~known | (nearest == organ)
    keep[~keep.any(1)] = True
    return keep


def sample_teacher(available: torch.Tensor, sample_seed: int) -> int:
    """One teacher index drawn uniformly among the ``available`` ones (K,) bool, from ``sample_seed`` alone."""
    ids = available.nonzero().flatten()
    if ids.numel() == 0:
        raise ValueError("no available teacher for this image")
    g = torch.Generator().manual_seed((sample_seed * 0x2545F491 + 0x5EED) & (2**63 - 1))
    return int(ids[torch.randint(ids.numel(), (1,), generator=g)])


class TeacherViewsDataset(Dataset):
    """Item ``(index, seed)`` -> the views of ``MultiViewDataset`` plus ``teacher`` (D,), ``teacher_id``,
    ``available`` (K,) and ``index``.

    Args:
        views: a ``MultiViewDataset``.
        projected: (K, N, D) normalised projected teacher features.
        available: (N, K) bool.
    """

    def __init__(self, views: Dataset, projected: torch.Tensor, available: torch.Tensor) -> None:
        self.views, self.projected, self.available = views, projected, available

    def __len__(self) -> int:
        return len(self.views)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, seed = key
        item = self.views[key]
        k = sample_teacher(self.available[index], seed)
        item.update(teacher=self.projected[k, index], teacher_id=k, available=self.available[index], index=index)
        return item


def _prepare(ctx: SourceContext, dataset: Any, store: Path) -> dict[str, Any]:
    """Teacher features, projector fit, projected features and mask: computed once, then read from ``store``."""
    from organfm.evaluation.embed import image_digests, set_hash
    from organfm.heads.projector import TeacherProjector, fit_projector

    o = ctx.options
    teachers = parse_teachers(list(o.get("teachers") or []))
    if o.get("teacher_filter", "all") not in TEACHER_FILTERS:
        raise ValueError(f"method.teacher_filter must be one of {', '.join(TEACHER_FILTERS)}, "
                         f"got {o.get('teacher_filter')!r}")
    image_hash = set_hash(image_digests(dataset))
    feats, indexes = [], {}
    for name, spec in teachers.items():
        f, index = teacher_features(name, spec, dataset, store / name, image_hash=image_hash,
                                    image_size=ctx.views.global_size, seed=ctx.seed)
        feats.append(f)
        indexes[name] = {"spec": spec, "feature_dim": int(f.shape[1]), "model_hash": index["model"]["model_hash"]}
    settings = {k: o.get(k) for k in ("embed_dim", "projector_hidden", "projector_noise", "projector_dropout",
                                      "projector_steps", "projector_lr", "teacher_filter")}
    key = hashlib.blake2b(json.dumps([image_hash, indexes, settings, ctx.seed], sort_keys=True).encode(),
                          digest_size=16).hexdigest()
    path = store / f"projected-{key}.pt"
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed)  # the projector's initial weights, independent of what ran before
            projector = TeacherProjector([f.shape[1] for f in feats], embed_dim=o["embed_dim"],
                                         hidden_dim=o["projector_hidden"], noise_std=o["projector_noise"],
                                         dropout=o["projector_dropout"])
        losses = fit_projector(projector, feats, steps=o["projector_steps"], lr=o["projector_lr"], seed=ctx.seed)
        projected = torch.stack([projector.project(f, k) for k, f in enumerate(feats)])  # (K, N, D)
        organ = None
        if o.get("teacher_filter") == "organ":  # organ ids without decoding images where the dataset lists them
            ids = getattr(dataset, "organ_ids", None)
            organ = torch.tensor(list(ids) if ids is not None else [int(dataset[i]["organ"]) for i in range(len(dataset))])
        available = organ_filter(feats, organ) if organ is not None else torch.ones(len(dataset), len(feats),
                                                                                   dtype=torch.bool)
        saved = {"projected": projected.contiguous(), "available": available,
                 "losses": torch.tensor(losses or [float("nan")]), "projector": projector.state_dict()}
        store.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(saved, tmp)
        tmp.replace(path)
    names = list(teachers)
    return {"names": names, "teachers": indexes, "image_hash": image_hash, "file": str(path), **saved}


@register_batch_source("features")
def features_source(ctx: SourceContext) -> BatchSource:
    """Batches ``{"global": [(B,1,G,G)] * Vg, "local": [...], "organ": (B,), "teacher": (B, D),
    "teacher_id": (B,), "available": (B, K), "index": (B,)}``."""
    from organfm.batches.views import build_image_dataset, views_kwargs
    from organfm.views import GlobalLocalViews, MultiViewDataset

    parse_teachers(list(ctx.options.get("teachers") or []))  # a clear error before any image is read
    run_dir = Path(ctx.run_dir or ".")
    dataset = build_image_dataset(ctx.data, skip_log_dir=str(run_dir / "skips"))
    per_step = ctx.batch_size * ctx.world_size * ctx.accumulate
    if len(dataset) < per_step:
        raise ValueError(f"{len(dataset)} images cannot fill one step of batch {ctx.batch_size} x {ctx.world_size} "
                         f"devices x {ctx.accumulate} accumulation: lower trainer.batch_size or add images")
    store = Path(ctx.options.get("features_dir") or run_dir / "teacher_features")
    prep = _prepare(ctx, dataset, store)
    steps_per_epoch = max(1, ctx.steps_per_epoch or len(dataset) // per_step)
    sampler = ResumableBatchSampler(len(dataset), ctx.batch_size, seed=ctx.seed, start_batch=ctx.start_batch,
                                    rank=ctx.rank, world_size=ctx.world_size)
    # only the CPU recipe's arguments: device-side view making (if configured) is the views source's business
    recipe_args = inspect.signature(GlobalLocalViews).parameters
    views = MultiViewDataset(dataset, GlobalLocalViews(**{k: v for k, v in views_kwargs(ctx.views).items()
                                                          if k in recipe_args}))
    loader = DataLoader(TeacherViewsDataset(views, prep["projected"], prep["available"]), batch_sampler=sampler,
                        num_workers=ctx.num_workers)
    size, v = ctx.views.global_size, ctx.views
    contract = {"input_size": [1, size, size], "mean": [v.mean], "std": [v.std],
                "organs": list(getattr(dataset, "organs", [])),
                "intensity": {"mode": ctx.data.intensity, "window": ctx.data.window,
                              "note": "intensities scaled to [0, 1] by this mode, then (x - mean) / std"}}
    avail = prep["available"]
    teachers = {name: dict(prep["teachers"][name], available_images=int(avail[:, k].sum()))
                for k, name in enumerate(prep["names"])}
    facts = {"teachers": teachers, "image_hash": prep["image_hash"], "projected_file": prep["file"],
             "projector_loss": [float(prep["losses"][0]), float(prep["losses"][-1])]}

    def summary(steps: int) -> dict[str, Any]:
        base = dataset.summary() if hasattr(dataset, "summary") else {"num_images": len(dataset)}
        return {**base, "distillation": facts}

    def write_run_files(run_dir: Path) -> None:
        if hasattr(dataset, "save_split"):
            dataset.save_split(run_dir / "splits.csv")

    return BatchSource(batches=loader, steps_per_epoch=steps_per_epoch, contract=contract,
                       method_kwargs={}, summary=summary, num_items=lambda steps: len(dataset),
                       write_run_files=write_run_files)
