"""The ``features`` source: image views plus one sampled teacher's stored, projected targets per image (MMKD).

Before the first batch, every teacher of ``method.teachers`` (``name=SPEC``) gets its features of the whole
dataset (``organfm.batches.teachers``), embedded once into ``<features_dir or run>/teacher_features/<name>``
and reused on resume. A :class:`~organfm.heads.projector.TeacherProjector` is then fitted (denoising AE) and
the normalised projected targets, the ``available`` mask and the projector are saved beside them.

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

__all__ = ["TeacherViewsDataset"]

class TeacherViewsDataset(Dataset):
    """Item ``(index, seed)`` -> the views of ``MultiViewDataset`` plus ``teacher`` (D,), ``teacher_id``,
    ``available`` (K,) and ``index``; with texts also ``teacher_text`` (D,) and ``teacher_has_text``.

    Args:
        views: a ``MultiViewDataset``.
        projected: (K, N, D) normalised projected teacher image targets.
        available: (N, K) bool.
        projected_text: (K, U, D) normalised projected teacher text targets (zeros for a teacher without text),
            or None (images only).
        has_text: (K,) bool, which teachers have text targets.
        text_ids: (N,) each image's text, an index into U.
    """

    def __init__(self, views: Dataset, projected: torch.Tensor, available: torch.Tensor,
                 projected_text: torch.Tensor | None = None, has_text: torch.Tensor | None = None,
                 text_ids: torch.Tensor | None = None) -> None:
        self.views, self.projected, self.available = views, projected, available
        self.projected_text, self.has_text, self.text_ids = projected_text, has_text, text_ids

    def __len__(self) -> int:
        return len(self.views)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, seed = key
        item = self.views[key]
        k = sample_teacher(self.available[index], seed)
        item.update(teacher=self.projected[k, index], teacher_id=k, available=self.available[index], index=index)
        if self.projected_text is not None:
            item.update(teacher_text=self.projected_text[k, self.text_ids[index]],
                        teacher_has_text=bool(self.has_text[k]))
        return item


def _prepare(ctx: SourceContext, dataset: Any, store: Path, texts: list[str] | None) -> dict[str, Any]:
    """Teacher features, projector fit, projected targets and mask: computed once, then read from ``store``."""
    from organfm.evaluation.embed import image_digests, set_hash

    o = ctx.options
    teachers = parse_teachers(list(o.get("teachers") or []))
    if o.get("teacher_filter", "all") not in TEACHER_FILTERS:
        raise ValueError(f"method.teacher_filter must be one of {', '.join(TEACHER_FILTERS)}, "
                         f"got {o.get('teacher_filter')!r}")
    if o.get("teacher_filter") == "caption" and texts is None:
        raise ValueError("method.teacher_filter=caption ranks each image's text: set method.texts (auto, column or "
                         "captions), or use teacher_filter=organ or all")
    # a user's per-image teacher lists are checked before any teacher runs
    listed = column_filter(dataset, list(teachers)) if o.get("teacher_filter") == "column" else None
    image_hash = set_hash(image_digests(dataset))
    distinct, text_ids = text_table(texts or [])
    feats, text_feats, indexes = [], [], {}
    for name, spec in teachers.items():
        f, index = teacher_features(name, spec, dataset, store / name, image_hash=image_hash,
                                    image_size=ctx.views.global_size, seed=ctx.seed)
        joint = teacher_text(name, spec, index, f, distinct) if texts is not None else None
        feats.append(f if joint is None else joint[0])
        text_feats.append(None if joint is None else joint[1])
        indexes[name] = {"spec": spec, "feature_dim": int(feats[-1].shape[1]), "text": joint is not None,
                         "model_hash": index["model"]["model_hash"]}
    if o.get("teacher_filter") == "caption" and not any(t is not None for t in text_feats):
        raise ValueError("method.teacher_filter=caption: no teacher has a text tower (only models trained with "
                         "texts, method imagetext or mmkd with texts, have one)")
    settings = {k: o.get(k) for k in ("embed_dim", "projector_hidden", "projector_noise", "projector_dropout",
                                      "projector_steps", "projector_lr", "projector_contrastive", "teacher_filter")}
    text_key = hashlib.blake2b("\n".join(texts).encode(), digest_size=16).hexdigest() if texts is not None else None
    key = hashlib.blake2b(json.dumps([image_hash, indexes, settings, ctx.seed, text_key], sort_keys=True).encode(),
                          digest_size=16).hexdigest()
    path = store / f"projected-{key}.pt"
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
    else:
        saved = _fit(o, ctx.seed, feats, text_feats, len(distinct),
                     listed if listed is not None else _available(o.get("teacher_filter"), dataset, feats,
                                                                  text_feats, text_ids, ctx.seed))
        store.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(saved, tmp)
        tmp.replace(path)
    return {"names": list(teachers), "teachers": indexes, "image_hash": image_hash, "file": str(path),
            "text_ids": text_ids, **saved}


def _fit(o: dict[str, Any], seed: int, feats: list[torch.Tensor], text_feats: list[torch.Tensor | None],
         num_texts: int, available: torch.Tensor) -> dict[str, torch.Tensor]:
    """Fit the projector on every teacher's targets; what ``_prepare`` stores (projected targets, mask, fit)."""
    from organfm.heads.projector import TeacherProjector, fit_projector

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the projector's initial weights, independent of what ran before
        projector = TeacherProjector([f.shape[1] for f in feats], embed_dim=o["embed_dim"],
                                     hidden_dim=o["projector_hidden"], noise_std=o["projector_noise"],
                                     dropout=o["projector_dropout"])
    # a teacher's text embeddings are more samples of its joint space: one projector learns both
    fit_on = [f if t is None else torch.cat([f, t]) for f, t in zip(feats, text_feats)]
    losses = fit_projector(projector, fit_on, steps=o["projector_steps"], lr=o["projector_lr"], seed=seed,
                           contrastive_weight=o.get("projector_contrastive") or 0.0, paired_rows=len(available))
    saved = {"projected": torch.stack([projector.project(f, k) for k, f in enumerate(feats)]).contiguous(),
             "available": available, "losses": torch.tensor(losses or [float("nan")]),
             "projector": projector.state_dict()}
    if num_texts:  # the data has texts
        zeros = torch.zeros(num_texts, o["embed_dim"])
        saved["projected_text"] = torch.stack([zeros if t is None else projector.project(t, k)
                                               for k, t in enumerate(text_feats)]).contiguous()  # (K, U, D)
        saved["has_text"] = torch.tensor([t is not None for t in text_feats])
    return saved


def _available(rule: str | None, dataset: Any, feats: list[torch.Tensor], text_feats: list[torch.Tensor | None],
               text_ids: torch.Tensor, seed: int) -> torch.Tensor:
    """(N, K) bool: which teachers each image may draw under ``method.teacher_filter``."""
    n, k = len(dataset), len(feats)
    if rule == "organ":  # organ ids without decoding images where the dataset lists them
        ids = getattr(dataset, "organ_ids", None)
        return organ_filter(feats, torch.tensor(list(ids) if ids is not None
                                                else [int(dataset[i]["organ"]) for i in range(n)]))
    keep = torch.ones(n, k, dtype=torch.bool)
    if rule == "caption":  # teachers without a text tower cannot be ranked: they stay available
        for j, (f, t) in enumerate(zip(feats, text_feats)):
            if t is not None:
                keep[:, j] = caption_filter(F.normalize(f, dim=-1), F.normalize(t, dim=-1), text_ids, seed=seed)
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
