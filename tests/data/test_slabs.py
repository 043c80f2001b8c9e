"""z-splits of one scan: contiguous slabs (3D) and interleaved blocks (2D), known answers and the gap guarantee."""
from __future__ import annotations

import numpy as np
import pytest

from organfm.data.slabs import split_slabs


def _min_distance_across_splits(parts: tuple[np.ndarray, ...]) -> int:
    owner = np.full(max(int(p.max()) for p in parts if len(p)) + 1, -1)
    for s, p in enumerate(parts):
        owner[p] = s
    kept = np.flatnonzero(owner >= 0)
    return min(int(j - i) for i in kept for j in kept if j > i and owner[i] != owner[j])


def test_contiguous_slabs_known_answer():
    # usable 112 - 2 * 2 = 108: floor(64.8) = 64, floor(21.6) = 21, rest 23
    train, val, test = split_slabs(112, fractions=[0.6, 0.2, 0.2], gap=2, block_size=None)
    assert train.tolist() == list(range(0, 64))
    assert val.tolist() == list(range(66, 87))
    assert test.tolist() == list(range(89, 112))
    assert _min_distance_across_splits((train, val, test)) == 3  # gap + 1


def test_interleaved_blocks_known_answer():
    # 6 blocks of 8 dealt by deficit: train, val, train, test, train, train; the later block of every
    # change of split loses its first slice (gap 1); blocks 4 and 5 are both train, so 40 is kept
    train, val, test = split_slabs(45, fractions=(0.6, 0.2, 0.2), gap=1, block_size=8)
    assert train.tolist() == list(range(0, 8)) + list(range(17, 24)) + list(range(33, 45))
    assert val.tolist() == list(range(9, 16))
    assert test.tolist() == list(range(25, 32))
    assert _min_distance_across_splits((train, val, test)) == 2


# interleaved blocks no thicker than the gap are an error (test_errors_name_the_problem), so not listed here
@pytest.mark.parametrize(("block_size", "gap"), [(b, g) for b in (None, 2, 4, 8) for g in (0, 1, 3)
                                                 if b is None or b > g])
def test_splits_are_disjoint_sorted_and_gap_apart(block_size, gap):
    parts = split_slabs(60, fractions=[0.5, 0.25, 0.25], gap=gap, block_size=block_size)
    everything = np.concatenate(parts)
    assert len(np.unique(everything)) == len(everything) and everything.max() < 60
    assert all(np.all(np.diff(p) > 0) for p in parts)
    assert _min_distance_across_splits(parts) >= gap + 1
    if gap == 0:  # nothing dropped: every slice lands somewhere
        assert sorted(everything.tolist()) == list(range(60))


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="cannot make 3 contiguous slabs"):
        split_slabs(6, fractions=[0.6, 0.2, 0.2], gap=2, block_size=None)
    with pytest.raises(ValueError, match="blocks"):
        split_slabs(10, fractions=[0.6, 0.2, 0.2], gap=1, block_size=8)
    with pytest.raises(ValueError, match="sum to 1"):
        split_slabs(100, fractions=[0.6, 0.2], gap=1, block_size=None)
    with pytest.raises(ValueError, match="block_size"):
        split_slabs(100, fractions=[0.6, 0.2, 0.2], gap=1, block_size=0)
    # blocks of 2 with gap 2: every block at a change of split is dropped whole, val and test would be empty
    with pytest.raises(ValueError, match=r"leave split\(s\) \[1, 2\] empty"):
        split_slabs(60, fractions=[0.5, 0.25, 0.25], gap=2, block_size=2)
