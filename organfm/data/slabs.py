"""Splitting the slices of ONE scan along z into train/val/test, so near-identical neighbours never cross a split.

One function, :func:`split_slabs`, with the policy as an explicit argument, because the two segmentation
protocols need different cuts: ``block_size=<n>`` deals thin blocks of n slices to the splits in turn (2D
segmentation: every split samples the whole body range), ``block_size=None`` cuts one contiguous slab per
split (3D segmentation: patches need thick, whole pieces). Either way slices of different splits are at least
``gap + 1`` apart. Within one scan this measures fitting, not generalisation to new patients.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["split_slabs"]


def split_slabs(num_slices: int, *, fractions: Sequence[float], gap: int,
                block_size: int | None) -> tuple[np.ndarray, ...]:
    """Split slice positions ``0 .. num_slices-1`` into one sorted index array per fraction.

    ``block_size=None`` (contiguous slabs, in the order of ``fractions``): ``gap`` slices are dropped at each of
    the k - 1 boundaries, the remaining ``num_slices - (k - 1) * gap`` are shared out, each split but the last
    getting ``floor(usable * fraction)`` and the last the rest. 112 slices, 0.6/0.2/0.2, gap 2 give 0-63,
    66-86, 89-111.

    ``block_size=n`` (interleaved blocks): blocks of n consecutive slices are dealt to the splits in turn, each
    block going to the split furthest below its share of blocks so far (ties to the earlier split; for
    0.6/0.2/0.2: train, val, train, test, train, ...), so every split samples the whole body range; where two
    neighbouring blocks go to different splits the first ``gap`` slices of the later block are dropped.

    Args:
        num_slices: N, positions in z order (e.g. ``len(images)`` of ``load_ct_segmentation_slices``, or D).
        fractions: share per split (e.g. train, val, test), >= 0 and summing to 1.
        gap: slices dropped at each boundary between splits (>= 0).
        block_size: slices per dealt block, or None for one contiguous slab per split.

    Returns:
        One sorted int64 index array per fraction.

    Raises:
        ValueError: bad fractions, gap or block size; a split with a positive fraction would be empty (too
            few slices, or interleaved blocks no thicker than ``gap``).
    """
    fractions = [float(f) for f in fractions]
    if not fractions or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {fractions}")
    if gap < 0 or (block_size is not None and block_size < 1):
        raise ValueError(f"gap must be >= 0 and block_size >= 1 (or None), got gap={gap}, block_size={block_size}")
    # each policy plans runs (split, first, stop) of consecutive slices; the arrays are assembled once below
    runs: list[tuple[int, int, int]] = []
    if block_size is None:
        usable = num_slices - (len(fractions) - 1) * gap
        sizes = [int(usable * f) for f in fractions[:-1]]
        sizes.append(usable - sum(sizes))
        if min(sizes) < 1:
            raise ValueError(f"{num_slices} slices cannot make {len(fractions)} contiguous slabs with fractions "
                             f"{fractions} and gap {gap}")
        start = 0
        for split, n in enumerate(sizes):
            runs.append((split, start, start + n))
            start += n + gap
    else:
        starts = list(range(0, num_slices, block_size))
        needed = sum(f > 0 for f in fractions)
        if len(starts) < needed:
            raise ValueError(f"{num_slices} slices make {len(starts)} blocks of {block_size}; {needed} splits need "
                             f"at least {needed} blocks (lower block_size)")
        assigned = [0] * len(fractions)
        previous = -1
        for b, start in enumerate(starts):
            deficit = [f * (b + 1) - a for f, a in zip(fractions, assigned)]
            split = max(range(len(fractions)), key=lambda s: (deficit[s], -s))
            assigned[split] += 1
            first = start + (gap if b > 0 and split != previous else 0)
            runs.append((split, first, min(start + block_size, num_slices)))
            previous = split
    parts: list[list[int]] = [[] for _ in fractions]
    for split, first, stop in runs:
        parts[split].extend(range(first, stop))
    # blocks no thicker than the gap lose every slice at a change of split: a split could end up empty
    empty = [k for k, (f, p) in enumerate(zip(fractions, parts)) if f > 0 and not p]
    if empty:
        raise ValueError(f"{num_slices} slices in blocks of {block_size} with gap {gap} leave split(s) {empty} "
                         "empty (block_size must exceed gap)")
    return tuple(np.asarray(p, dtype=np.int64) for p in parts)
