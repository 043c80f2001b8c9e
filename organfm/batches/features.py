"""The ``features`` source: image views plus one sampled teacher's stored, projected targets per image (MMKD).

Before the first batch, every teacher of ``method.teachers`` (``name=SPEC``) gets its features of the whole
dataset (``organfm.batches.teachers``), embedded once into ``<features_dir or run>/teacher_features/<name>``
and reused on resume. A :class:`~organfm.heads.projector.TeacherProjector` is then fitted (denoising AE) and
the normalised projected targets, the ``available`` mask and the projector are saved beside them, in
``projected-<key>/`` (one (N, D) ``teacher-<k>.npy`` per teacher, k in sorted name order, and ``fit.pt``).

Nothing here holds every image's features at once: teacher features and targets are ``.npy`` shards read
row by row (:class:`~organfm.features.shards.ShardRows`), the projector trains on minibatches of rows, the
filters and the projection walk chunks, and a batch item reads its one target row. Memory grows with N only
by the (N, K) mask and the (N,) text ids.

The key of ``projected-<key>`` covers every input of the targets: each teacher's spec, model hash and stored
features (the reuse key and bytes of every shard, so the input size, mean/std and data settings too), the
image-set hash, the projector settings, the seed, the texts and, with ``teacher_filter=column``, the
manifest's ``teachers`` column. The order of ``method.teachers`` is not an input: the fit runs in sorted name
order, and the stored result is reordered to the list, so ``teacher_id`` k is the k-th listed teacher. In a
distributed run only rank 0 embeds, fits and writes (a temporary folder, then a rename); the other ranks
wait at a barrier and read.

With texts (``method.texts`` not ``none``), a teacher that has a text tower gives joint-space targets: its
image embeddings and its embeddings of each image's text, both projected by that teacher's one projector
(one map for both keeps the teacher's image-text alignment, which the ICL term compares across modalities).
Teachers without a text tower give image targets only.

Every batch item carries the targets of ONE available teacher, drawn from the item's sample seed, a pure
function of (seed, epoch, index): a resumed run draws the same teachers.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from organfm.batches import BatchSource, SourceContext, register_batch_source
from organfm.batches.captioned import TextViewsDataset, source_texts, text_options, text_table
from organfm.batches.images import image_batch_source, image_views, load_images
from organfm.batches.teachers import (TEACHER_FILTERS, caption_filter, column_filter, organ_filter, parse_teachers,
                                      sample_teacher, teacher_features, teacher_text)
from organfm.features.shards import ShardRows, write_rows

__all__ = ["CHUNK", "FIT_FILE", "TeacherViewsDataset", "open_targets"]

class TeacherViewsDataset(Dataset):
    """Item ``(index, seed)`` -> the views of ``MultiViewDataset`` plus ``teacher`` (D,), ``teacher_id``,
    ``available`` (K,) and ``index``; with texts also ``teacher_text`` (D,) and ``teacher_has_text``.

    Targets are read one row per item (:class:`~organfm.features.shards.ShardRows`), never held whole.

    Args:
        views: a ``MultiViewDataset``.
        projected: per teacher, (N, D) normalised projected image targets (``projected[k][i]`` -> (D,)).
        available: (N, K) bool.
        projected_text: per teacher, (U, D) normalised projected text targets, None for a teacher without text;
            or None (images only).
        has_text: (K,) bool, which teachers have text targets.
        text_ids: (N,) each image's text, an index into U.
    """

    def __init__(self, views: Dataset, projected: Sequence[Any], available: torch.Tensor,
                 projected_text: Sequence[Any] | None = None, has_text: torch.Tensor | None = None,
                 text_ids: torch.Tensor | None = None) -> None:
        self.views, self.projected, self.available = views, projected, available
        self.projected_text, self.has_text, self.text_ids = projected_text, has_text, text_ids

    def __len__(self) -> int:
        return len(self.views)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, seed = key
        item = self.views[key]
        k = sample_teacher(self.available[index], seed)
        target = self.projected[k][index]
        item.update(teacher=target, teacher_id=k, available=self.available[index], index=index)
        if self.projected_text is not None:
            text = self.projected_text[k]
            item.update(teacher_text=torch.zeros_like(target) if text is None else text[int(self.text_ids[index])],
                        teacher_has_text=bool(self.has_text[k]))
        return item


CHUNK = 4096  # rows of features read, filtered or projected at a time: the store's memory bound
FIT_FILE = "fit.pt"  # in a projected-<key>/ folder: mask, projector, fit losses, teacher names (canonical order)


def open_targets(folder: Path) -> dict[str, Any]:
    """A stored ``projected-<key>/`` folder: ``names`` (sorted), ``available`` (N, K), ``has_text`` (K,) (with
    texts), ``losses``, ``projector``, and per teacher ``projected`` (N, D) and ``projected_text`` (U, D) or None
    as :class:`~organfm.features.shards.ShardRows` views."""
    saved = torch.load(folder / FIT_FILE, map_location="cpu", weights_only=True)
    k = len(saved["names"])
    saved["projected"] = [ShardRows([folder / f"teacher-{j}.npy"]) for j in range(k)]
    if "has_text" in saved:
        saved["projected_text"] = [ShardRows([folder / f"text-{j}.npy"]) if saved["has_text"][j] else None
                                   for j in range(k)]
    return saved


def _barrier(ctx: SourceContext) -> None:
    """Every rank waits here (a no-op in a single process)."""
    import torch.distributed as dist

    if ctx.world_size > 1 and dist.is_available() and dist.is_initialized():
        dist.barrier()


def _prepare(ctx: SourceContext, dataset: Any, store: Path, texts: list[str] | None) -> dict[str, Any]:
    """Teacher features, projector fit, projected targets and mask: computed once, then read from ``store``.

    Teachers are fitted and stored in sorted name order, and the result is put in ``method.teachers``' order
    after, so the order of the list changes no fit, and ``teacher_id`` k is always the k-th listed teacher.
    In a distributed run rank 0 embeds, fits and writes; the other ranks wait at a barrier, then read.
    """
    from organfm.features.store import features_key, image_digests, set_hash

    o = ctx.options
    teachers = parse_teachers(list(o.get("teachers") or []))
    if o.get("teacher_filter", "all") not in TEACHER_FILTERS:
        raise ValueError(f"method.teacher_filter must be one of {', '.join(TEACHER_FILTERS)}, "
                         f"got {o.get('teacher_filter')!r}")
    if o.get("teacher_filter") == "caption" and texts is None:
        raise ValueError("method.teacher_filter=caption ranks each image's text: set method.texts (auto, column or "
                         "captions), or use teacher_filter=organ or all")
    names = sorted(teachers)  # the canonical order of the fit and the stored files
    # a user's per-image teacher lists are checked before any teacher runs
    listed = column_filter(dataset, names) if o.get("teacher_filter") == "column" else None
    image_hash = set_hash(image_digests(dataset))
    distinct, text_ids = text_table(texts or [])
    leader = ctx.rank == 0
    if not leader:
        _barrier(ctx)  # rank 0 prepares; this rank reads what it wrote
    try:
        feats, text_feats, indexes = [], [], {}
        for name in names:
            spec = teachers[name]
            f, index = teacher_features(name, spec, dataset, store / name, image_hash=image_hash,
                                        image_size=ctx.views.global_size, seed=ctx.seed, embed=leader, chunk=CHUNK)
            joint = teacher_text(name, spec, index, f, distinct) if texts is not None else None
            feats.append(f if joint is None else joint[0])
            text_feats.append(None if joint is None else joint[1])
            indexes[name] = {"spec": spec, "feature_dim": int(joint[0].shape[1]) if joint else f.width,
                             "text": joint is not None, "model_hash": index["model"]["model_hash"],
                             "features": features_key(index)}
        if o.get("teacher_filter") == "caption" and not any(t is not None for t in text_feats):
            raise ValueError("method.teacher_filter=caption: no teacher has a text tower (only models trained with "
                             "texts, method imagetext or mmkd with texts, have one)")
        settings = {k: o.get(k) for k in ("embed_dim", "projector_hidden", "projector_noise", "projector_dropout",
                                          "projector_steps", "projector_lr", "projector_contrastive",
                                          "teacher_filter")}
        digest = lambda b: hashlib.blake2b(b, digest_size=16).hexdigest()  # noqa: E731
        text_key = digest("\n".join(texts).encode()) if texts is not None else None
        listed_key = digest(listed.numpy().tobytes()) if listed is not None else None  # the manifest's column
        key = digest(json.dumps([image_hash, indexes, settings, ctx.seed, text_key, listed_key],
                                sort_keys=True).encode())
        folder = store / f"projected-{key}"
        if not (folder / FIT_FILE).is_file():
            if not leader:
                raise RuntimeError(f"rank {ctx.rank}: {folder} is missing after rank 0 prepared the teachers' "
                                   "targets (did rank 0 fail, or do the ranks see different data?)")
            available = listed if listed is not None else _available(o.get("teacher_filter"), dataset, feats,
                                                                     text_feats, text_ids, ctx.seed)
            _fit(o, ctx.seed, names, feats, text_feats, len(distinct), available, folder, chunk=CHUNK)
    finally:
        if leader:
            _barrier(ctx)
    saved = open_targets(folder)
    order = [names.index(name) for name in teachers]  # stored (sorted) -> method.teachers' order
    out = {"names": list(teachers), "teachers": indexes, "image_hash": image_hash, "file": str(folder),
           "text_ids": text_ids, "losses": saved["losses"], "available": saved["available"][:, order],
           "projected": [saved["projected"][j] for j in order]}
    if "has_text" in saved:
        out.update(has_text=saved["has_text"][order], projected_text=[saved["projected_text"][j] for j in order])
    return out


class _Joined:
    """Rows of a feature view followed by the rows of a tensor (a teacher's image and text features)."""

    def __init__(self, first: Any, second: torch.Tensor) -> None:
        self.first, self.second, self.n = first, second, len(first)

    def __len__(self) -> int:
        return self.n + len(self.second)

    def __getitem__(self, rows: torch.Tensor) -> torch.Tensor:
        out = torch.empty(len(rows), self.second.shape[1])
        low = rows < self.n
        if low.any():
            out[low] = self.first[rows[low]]
        if (~low).any():
            out[~low] = self.second[rows[~low] - self.n]
        return out


def _l2(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)


def _fit(o: dict[str, Any], seed: int, names: list[str], feats: list[Any], text_feats: list[torch.Tensor | None],
         num_texts: int, available: torch.Tensor, folder: Path, *, chunk: int = 4096) -> None:
    """Fit the projector on every teacher's targets and write ``folder`` (through a temporary folder and a
    rename): ``teacher-<k>.npy`` (N, D) projected image targets, ``text-<k>.npy`` (U, D) text targets,
    :data:`FIT_FILE`. Features are read in minibatches and projected in chunks of ``chunk`` rows."""
    import shutil

    from organfm.heads.projector import TeacherProjector, fit_projector

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the projector's initial weights, independent of what ran before
        projector = TeacherProjector([f.shape[1] for f in feats], embed_dim=o["embed_dim"],
                                     hidden_dim=o["projector_hidden"], noise_std=o["projector_noise"],
                                     dropout=o["projector_dropout"])
    # a teacher's text embeddings are more samples of its joint space: one projector learns both
    fit_on = [f if t is None else _Joined(f, t) for f, t in zip(feats, text_feats)]
    from organfm.batches.teachers import _progress

    _progress(f"fitting the projector of {len(feats)} teachers to a {o['embed_dim']}-d space "
              f"({o['projector_steps']} steps)")
    started = time.perf_counter()
    losses = fit_projector(projector, fit_on, steps=o["projector_steps"], lr=o["projector_lr"], seed=seed,
                           contrastive_weight=o.get("projector_contrastive") or 0.0, paired_rows=len(available))
    _progress(f"projector fitted in {time.perf_counter() - started:.1f} s (loss {losses[0] if losses else float('nan'):.4f}"
              f" -> {losses[-1] if losses else float('nan'):.4f}); projecting every image's targets")
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    dim = o["embed_dim"]
    for k, f in enumerate(feats):
        parts = (f.chunks(chunk) if isinstance(f, ShardRows)
                 else ((s, f[s:s + chunk]) for s in range(0, len(f), chunk)))
        write_rows(tmp / f"teacher-{k}.npy", len(f), dim,
                   lambda parts=parts, k=k: ((s, projector.project(x, k)) for s, x in parts))
    saved: dict[str, Any] = {"names": names, "available": available, "losses": torch.tensor(losses or [float("nan")]),
                             "projector": projector.state_dict()}
    if num_texts:  # the data has texts
        for k, t in enumerate(text_feats):
            if t is not None:
                write_rows(tmp / f"text-{k}.npy", len(t), dim, lambda t=t, k=k: iter([(0, projector.project(t, k))]))
        saved["has_text"] = torch.tensor([t is not None for t in text_feats])
    torch.save(saved, tmp / FIT_FILE)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process wrote the same targets first (same key: same content)
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / FIT_FILE).is_file():
            raise


def _available(rule: str | None, dataset: Any, feats: list[Any], text_feats: list[torch.Tensor | None],
               text_ids: torch.Tensor, seed: int) -> torch.Tensor:
    """(N, K) bool: which teachers each image may draw under ``method.teacher_filter``."""
    n, k = len(dataset), len(feats)
    if rule == "organ":  # organ ids without decoding images where the dataset lists them
        ids = getattr(dataset, "organ_ids", None)
        return organ_filter(feats, torch.tensor(list(ids) if ids is not None
                                                else [int(dataset[i]["organ"]) for i in range(n)]), chunk=CHUNK)
    keep = torch.ones(n, k, dtype=torch.bool)
    if rule == "caption":  # teachers without a text tower cannot be ranked: they stay available
        for j, (f, t) in enumerate(zip(feats, text_feats)):
            if t is not None:
                images = f.map(_l2) if isinstance(f, ShardRows) else _l2(f)
                keep[:, j] = caption_filter(images, _l2(t), text_ids, seed=seed)
        keep[~keep.any(1)] = True  # an image no teacher passes keeps every teacher (the seed's fall-back)
    return keep


@register_batch_source("features")
def features_source(ctx: SourceContext) -> BatchSource:
    """Batches ``{"global": [(B,1,G,G)] * Vg, "local": [...], "organ": (B,), "teacher": (B, D),
    "teacher_id": (B,), "available": (B, K), "index": (B,)}``, with texts also ``"text": [str] * B``,
    ``"text_id": (B,)``, ``"teacher_text": (B, D)`` and ``"teacher_has_text": (B,)``."""
    parse_teachers(list(ctx.options.get("teachers") or []))  # a clear error before any image is read
    run_dir = Path(ctx.run_dir or ".")
    dataset = load_images(ctx)
    texts, method_kwargs = _student_texts(ctx, dataset, run_dir)
    prep = _prepare(ctx, dataset, Path(ctx.options.get("features_dir") or run_dir / "teacher_features"), texts)
    items = TeacherViewsDataset(image_views(ctx, dataset), prep["projected"], prep["available"],
                                prep.get("projected_text"), prep.get("has_text"), prep["text_ids"])
    if texts is not None:
        items = TextViewsDataset(items, texts)
    avail = prep["available"]
    teachers = {name: dict(prep["teachers"][name], available_images=int(avail[:, k].sum()))
                for k, name in enumerate(prep["names"])}
    facts = {"teachers": teachers, "image_hash": prep["image_hash"], "projected_file": prep["file"],
             "projector_loss": [float(prep["losses"][0]), float(prep["losses"][-1])],
             "texts": None if texts is None else {"mode": ctx.options.get("texts"), "distinct": len(set(texts))}}
    return image_batch_source(ctx, dataset, items, facts={"distillation": facts}, method_kwargs=method_kwargs)


def _student_texts(ctx: SourceContext, dataset: Any, run_dir: Path) -> tuple[list[str] | None, dict[str, Any]]:
    """The images' texts and the method kwargs they fix: the corpus tokenizer's file, unless the student's text
    side starts from ``method.text_init`` (whose tower files are then copied into the run)."""
    init = ctx.options.get("text_init")
    if not init:
        return text_options(ctx, dataset)
    from organfm.batches.texts import TOKENIZER_FILE
    from organfm.text.tower import load_joint_text

    texts = source_texts(ctx, dataset)
    if texts is None:
        raise ValueError("method.text_init starts the student's text side from a model trained with texts: set "
                         "method.texts (auto, column or captions) too")
    folder = run_dir / TOKENIZER_FILE.parent
    folder.mkdir(parents=True, exist_ok=True)
    try:  # the run keeps the initial tower's files (its tokenizer), so export rebuilds the same tower
        load_joint_text(init).tower.write_files(folder)
    except (OSError, ValueError) as e:
        raise ValueError(f"method.text_init={init}: {e}") from e
    return texts, {}
