"""MMKD's teachers: who they are (``method.teachers``), their stored features, their text side, and which
teachers each image may draw (the ``available`` filters).

A teacher SPEC is a model (run folder, export, ``random:<arch>``, ``timm:<arch>:<file>``), embedded once by
:func:`organfm.features.store.embed_dataset`, or an ``organfm embed`` output folder, checked against the
dataset by its image hash. A teacher trained with texts (``imagetext``, or ``mmkd`` with texts) has a text tower
(``export/text/``); with texts, its targets are its joint-space image embeddings and its text embeddings.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from organfm.data.errors import DataError
from organfm.features.shards import ShardRows

__all__ = ["TEACHERS_COLUMN", "TEACHER_FILTERS", "caption_filter", "column_filter", "organ_filter", "parse_teachers",
           "sample_teacher", "teacher_features", "teacher_text"]

# all: every teacher for every image; organ: the image's organ prototype is the teacher's nearest; caption: the
# teacher ranks the image's own text first in a reference batch (teachers with a text tower; MMKD-CLIP's filter);
# column: the manifest says, per image, which teachers apply (MMKD-CLIP's per-sample ``available_clips``)
TEACHER_FILTERS = ("all", "organ", "caption", "column")
TEACHERS_COLUMN = "teachers"


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
    from organfm.features.store import INDEX_FILE

    return (Path(spec).expanduser() / INDEX_FILE).is_file()


def _progress(line: str) -> None:
    """One progress line of MMKD's preparation (minutes on a large set): on stderr, like the run's warnings."""
    print(f"organfm mmkd: {line}", file=sys.stderr, flush=True)


def teacher_features(name: str, spec: str, dataset: Any, store: Path, *, image_hash: str, image_size: int,
                     batch_size: int = 128, seed: int = 0, embed: bool = True,
                     chunk: int = 4096) -> tuple[ShardRows, dict[str, Any]]:
    """Teacher ``name``'s features of every item of ``dataset``, embedded into ``store`` or read from ``spec``.

    Args:
        name: the teacher's name (in errors).
        spec: a model spec, or an ``organfm embed`` output folder.
        dataset: the training images.
        store: where a model spec's features are written (reused when present).
        image_hash: the dataset's image-set hash (:func:`organfm.features.store.set_hash`).
        image_size: input size for contract-less specs (``random:``, ``timm:``).
        batch_size, seed: embedding batch size; ``random:`` initialisation seed.
        embed: False reads ``store`` as another process (rank 0) left it, without running the model.
        chunk: rows held in memory at a time while the stored features are checked.

    Returns:
        ``((N, d) features, read row by row from the folder's shards; the folder's index)``.

    Raises:
        ValueError: the teacher does not load, or its features cover other images than the dataset.
        DataError: an unreadable shard, a dimension mismatch or NaN features (naming the file).
    """
    from organfm.features.store import INDEX_FILE, embed_dataset, open_features

    folder = Path(spec).expanduser() if _is_features_folder(spec) else store
    if folder == store and embed:
        _progress(f"embedding teacher {name} ({spec}) on {len(dataset)} images into {store}")
        started = time.perf_counter()
        try:
            result = embed_dataset(spec, dataset, store, shard_size=4096, batch_size=batch_size,
                                   image_size=image_size, seed=seed,
                                   log=lambda line: _progress(f"teacher {name}: {line}"))
        except DataError:
            raise
        except Exception as e:  # a missing file, a foreign checkpoint, wrong architecture: name the teacher
            raise ValueError(f"teacher {name}: cannot embed with {spec} ({type(e).__name__}: {e})") from e
        _progress(f"teacher {name}: {result.feature_dim} features per image, {result.written} shards written, "
                  f"{result.reused} reused, {time.perf_counter() - started:.1f} s")
    feats, index = open_features(folder, who=f"teacher {name}: ", chunk=chunk)
    if index.get("image_hash") != image_hash or len(feats) != len(dataset):
        raise ValueError(f"teacher {name}: {folder / INDEX_FILE} holds features of other images than the training "
                         f"data ({index.get('num_images')} images, hash {str(index.get('image_hash'))[:12]}; the data "
                         f"has {len(dataset)} images, hash {image_hash[:12]}): re-run organfm embed on this data")
    return feats, index


def organ_filter(feats: Sequence[torch.Tensor | ShardRows], organ: torch.Tensor, *, chunk: int = 4096) -> torch.Tensor:
    """Keep, per image, the teachers whose feature lies nearest its own organ's prototype.

    The image-only analogue of MMKD-CLIP's quality filter (a teacher is kept for a pair when it ranks the
    right caption top-1): a teacher is kept for an image when, among the organ prototypes (mean normalised
    feature per organ) of that teacher, the image's own organ is top-1. Images of unknown organ (-1), and
    images that no teacher passes, keep every teacher (the seed's fall-back).

    Args:
        feats: per teacher, (N, d_k) features (a tensor or a :class:`ShardRows` view, read in chunks).
        organ: (N,) organ ids, -1 unknown.
        chunk: rows read at a time (two passes: prototypes, then the nearest prototype).

    Returns:
        (N, K) bool.
    """
    n, known = organ.numel(), organ >= 0
    keep = torch.ones(n, len(feats), dtype=torch.bool)
    if not known.any():
        return keep
    ids = organ[known].unique()
    slot = torch.full((int(organ.max()) + 1,), -1, dtype=torch.long)
    slot[ids] = torch.arange(len(ids))
    for k, f in enumerate(feats):
        sums = None
        for start, z in _chunks(f, chunk):
            z = F.normalize(z.float(), dim=-1)
            o = organ[start:start + len(z)]
            sums = torch.zeros(len(ids), z.shape[1]) if sums is None else sums
            sums.index_add_(0, slot[o[o >= 0]], z[o >= 0])
        protos = F.normalize(sums, dim=-1)  # (O, d): the mean's direction
        for start, z in _chunks(f, chunk):
            nearest = ids[(F.normalize(z.float(), dim=-1) @ protos.T).argmax(1)]
            o = organ[start:start + len(z)]
            keep[start:start + len(z), k] = (o < 0) | (nearest == o)
    keep[~keep.any(1)] = True
    return keep


def _chunks(f: torch.Tensor | ShardRows, size: int) -> Iterator[tuple[int, torch.Tensor]]:
    if isinstance(f, ShardRows):
        yield from f.chunks(size)
    else:
        for start in range(0, len(f), size):
            yield start, f[start:start + size]


def sample_teacher(available: torch.Tensor, sample_seed: int) -> int:
    """One teacher index drawn uniformly among the ``available`` ones (K,) bool, from ``sample_seed`` alone."""
    ids = available.nonzero().flatten()
    if ids.numel() == 0:
        raise ValueError("no available teacher for this image")
    g = torch.Generator().manual_seed((sample_seed * 0x2545F491 + 0x5EED) & (2**63 - 1))
    return int(ids[torch.randint(ids.numel(), (1,), generator=g)])


def teacher_text(name: str, spec: str, index: dict[str, Any], feats: ShardRows | torch.Tensor,
                 texts: list[str]) -> tuple[ShardRows | torch.Tensor, torch.Tensor] | None:
    """A teacher's joint-space targets when it has a text tower: image embeddings and its embeddings of texts.

    Args:
        name: the teacher (in errors).
        spec: its SPEC; its text tower is looked up there, or beside the weights its features came from.
        index: its features' index (``organfm embed``'s ``index.json``).
        feats: (N, E) its stored pooled image features (a :class:`ShardRows` view, or a tensor).
        texts: the U distinct texts of the dataset.

    Returns:
        ``((N, D_k) image embeddings (for a view: the view through the image head, read on demand);
        (U, D_k) text embeddings)``, both L2-normalised; None when the teacher has no text tower.

    Raises:
        ValueError: the text tower does not load, or expects another feature size than the stored features.
    """
    from organfm.features.joint import model_text_folder
    from organfm.text.tower import load_joint_text

    folder = model_text_folder(spec, index)
    if folder is None:
        return None
    try:
        joint = load_joint_text(folder)
    except (OSError, ValueError) as e:
        raise ValueError(f"teacher {name}: its text tower {folder} does not load: {e}") from e
    if joint.image_dim != feats.shape[1]:
        raise ValueError(f"teacher {name}: its text tower ({folder}) maps {joint.image_dim}-d image features, its "
                         f"stored features are {feats.shape[1]}-d (features of another model?)")
    joint.eval()
    images = feats.map(joint.embed_images) if isinstance(feats, ShardRows) else joint.embed_images(feats)
    return images, joint.embed_texts(texts)


def caption_filter(images: torch.Tensor, texts: torch.Tensor, text_ids: torch.Tensor, *, batch_size: int = 64,
                   seed: int = 0) -> torch.Tensor:
    """Whether a teacher ranks each image's own text first among a reference batch's texts (MMKD-CLIP's filter).

    Images are dealt into reference batches of ``batch_size`` by a seeded permutation; image i passes when no
    text of its batch is more similar to it than its own (identical texts tie, and a tie passes).

    Args:
        images: (N, D) the teacher's normalised image embeddings.
        texts: (U, D) its normalised embeddings of the distinct texts.
        text_ids: (N,) each image's text.
        batch_size: reference batch size.
        seed: the permutation's seed.

    Returns:
        (N,) bool.
    """
    n = len(images)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    keep = torch.zeros(n, dtype=torch.bool)
    for chunk in order.split(batch_size):
        sims = images[chunk] @ texts[text_ids[chunk]].T  # (b, b): image vs every text of its batch
        keep[chunk] = sims.diagonal() >= sims.max(1).values - 1e-6
    return keep


def column_filter(dataset: Any, names: list[str], *, column: str = TEACHERS_COLUMN) -> torch.Tensor:
    """The teachers each image's manifest row names in ``column`` ("coda;rasd"; empty: every teacher).

    Args:
        dataset: a dataset with ``records`` (a manifest's rows).
        names: the teachers of ``method.teachers``, in order.
        column: the manifest column.

    Returns:
        (N, K) bool.

    Raises:
        DataError: the data has no manifest or no row has the column, or a row names a teacher that is not in
            ``method.teachers`` (naming the row's file and the valid names).
    """
    records = getattr(dataset, "records", None)
    if records is None or not any(column in r.meta for r in records):
        raise DataError(f"method.teacher_filter=column reads each image's teachers from a manifest column "
                        f"{column!r}, and the data has none; add it (e.g. 'coda;rasd') or use teacher_filter=all")
    index = {name: k for k, name in enumerate(names)}
    keep = torch.zeros(len(records), len(names), dtype=torch.bool)
    for i, r in enumerate(records):
        listed = [t.strip() for t in str(r.meta.get(column) or "").replace("|", ";").split(";") if t.strip()]
        unknown = [t for t in listed if t not in index]
        if unknown:
            raise DataError(f"{r.where}: its {column!r} column names {', '.join(map(repr, unknown))}, not among "
                            f"method.teachers ({', '.join(names)})")
        keep[i, [index[t] for t in listed] or list(range(len(names)))] = True
    return keep
