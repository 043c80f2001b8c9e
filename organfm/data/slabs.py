"""Splitting the slices of ONE scan along z into train/val/test, so near-identical neighbours never cross a split.

Two policies, both here so a reader finds every z-split in one place: :func:`split_slice_blocks` deals thin
blocks of slices to the splits in turn (2D segmentation: every split samples the whole body range), and
:func:`split_slabs` cuts three contiguous slabs (3D segmentation: patches need thick, whole pieces). Within
one scan this measures fitting, not generalisation to new patients.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["split_slabs", "split_slice_blocks"]


def split_slice_blocks(num_slices: int, *, block_size: int = 8, fractions: Sequence[float] = (0.6, 0.2, 0.2),
                       gap: int = 1) -> tuple[np.ndarray, ...]:
    """Split slice positions ``0 .. num_slices-1`` into contiguous blocks, interleaved across splits.

    Blocks of ``block_size`` consecutive slices are dealt to the splits in turn, each block going to the
    split furthest below its share so far (for 0.6/0.2/0.2: train, val, train, test, train, ...), so
    every split samples the whole body range. Where two neighbouring blocks go to different splits, the
    first ``gap`` slices of the later block are dropped: slices on different sides are then at least
    ``gap + 1`` apart.

    Args:
        num_slices: N, e.g. ``len(images)`` from ``load_ct_segmentation_slices`` (positions in z order).
        block_size: slices per block.
        fractions: share of blocks per split (e.g. train, val, test); must sum to 1.
        gap: slices dropped at each boundary between splits.

    Returns:
        One sorted int64 index array per fraction.
    """
    fractions = [float(f) for f in fractions]
    if min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {fractions}")
    if block_size < 1 or gap < 0:
        raise ValueError("block_size must be >= 1 and gap >= 0")
    starts = list(range(0, num_slices, block_size))
    needed = sum(f > 0 for f in fractions)
    if len(starts) < needed:
        raise ValueError(f"{num_slices} slices make {len(starts)} blocks of {block_size}; {needed} splits need "
                         f"at least {needed} blocks (lower block_size)")
    assigned = [0] * len(fractions)
    owner = []
    for b in range(len(starts)):
        deficit = [f * (b + 1) - a for f, a in zip(fractions, assigned)]
        split = max(range(len(fractions)), key=lambda s: (deficit[s], -s))
        assigned[split] += 1
        owner.append(split)
    parts: list[list[int]] = [[] for _ in fractions]
    for b, start in enumerate(starts):
        first = start + (gap if b > 0 and owner[b] != owner[b - 1] else 0)
        parts[owner[b]].extend(range(first, min(start + block_size, num_slices)))
    return tuple(np.asarray(p, dtype=np.int64) for p in parts)


def split_slabs(depth: int, fractions: Sequence[float], gap: int) -> list[slice]:
    """Three contiguous train/val/test slabs along D, with ``gap`` slices dropped between neighbours.

    The 3D protocols train on patches of whole slabs, so each split must be one contiguous piece of the scan
    (:func:`split_slice_blocks` would interleave blocks too thin for a patch).

    Args:
        depth: slices along D.
        fractions: shares of the usable slices (``depth - 2 * gap``) for train and val; test gets the rest.
        gap: slices dropped between train and val and between val and test.

    Returns:
        ``[train, val, test]`` slices along D.

    Raises:
        ValueError: a slab would be empty.
    """
    usable = depth - 2 * gap
    sizes = [int(usable * f) for f in fractions[:2]]
    sizes.append(usable - sum(sizes))
    out, start = [], 0
    for n in sizes:
        out.append(slice(start, start + n))
        start += n + gap
    if min(sizes) < 1:
        raise ValueError(f"{depth} slices cannot make train/val/test slabs with fractions {fractions} and gap {gap}")
    return out
