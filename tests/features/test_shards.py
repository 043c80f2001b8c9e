"""Feature shards read on demand: rows across shards equal the concatenated arrays; bad files are named."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from organfm.data.errors import DataError
from organfm.features.shards import ShardRows, write_rows


@pytest.fixture
def shards(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal((0, 4)).astype(np.float32),
              rng.standard_normal((5, 4)).astype(np.float16)]  # an empty shard and a float16 one
    files = []
    for i, a in enumerate(arrays):
        np.save(tmp_path / f"part-{i}.npy", a)
        files.append(tmp_path / f"part-{i}.npy")
    return files, np.concatenate([a.astype(np.float32) for a in arrays])


def test_ranges_rows_and_chunks_equal_the_concatenated_arrays(shards):
    files, whole = shards
    rows = ShardRows(files)
    assert len(rows) == 8 and rows.shape == (8, 4)
    for start, stop in [(0, 8), (2, 4), (3, 8), (7, 8), (5, 5)]:  # across the empty and the float16 shard
        got = rows.read(start, stop)
        assert got.dtype == torch.float32 and np.array_equal(got.numpy(), whole[start:stop])
    order = [7, 0, 3, 3, 2]  # any order, repeats allowed
    assert np.array_equal(rows[order].numpy(), whole[order])
    assert np.array_equal(rows[torch.tensor([6, 1])].numpy(), whole[[6, 1]])
    assert np.array_equal(rows[4].numpy(), whole[4])
    assert [(s, len(c)) for s, c in rows.chunks(3)] == [(0, 3), (3, 3), (6, 2)]
    assert np.array_equal(torch.cat([c for _, c in rows.chunks(3)]).numpy(), whole)
    with pytest.raises(IndexError, match="out of range for 8 rows"):
        rows[[0, 8]]


def _row_sums(x: torch.Tensor) -> torch.Tensor:
    return x.sum(1, keepdim=True)


def test_transforms_compose_and_survive_pickling_into_a_worker(shards):
    files, whole = shards
    doubled = ShardRows(files, transform=lambda x: 2 * x)
    summed = doubled.map(_row_sums)  # outer after inner: sums of the doubled rows
    assert summed.shape == (8, 1)
    np.testing.assert_allclose(summed.read(0, 8).numpy()[:, 0], 2 * whole.sum(1), rtol=1e-5)
    assert np.array_equal(doubled[1].numpy(), 2 * whole[1])  # map left the original view as it was
    plain = ShardRows(files)
    plain.read(0, 2)  # opens descriptors, which must not travel
    clone = pickle.loads(pickle.dumps(plain))
    assert clone._fds == {} and np.array_equal(clone.read(0, 8).numpy(), whole)
    plain.close()
    assert np.array_equal(plain.read(6, 8).numpy(), whole[6:8])  # reopened after close


def test_bad_shards_are_named(tmp_path, shards):
    files, _ = shards
    np.save(tmp_path / "wide.npy", np.zeros((2, 5), np.float32))
    with pytest.raises(DataError, match=r"teacher a: .*wide.npy: features of shape \(2, 5\), expected \(n, 4\)"):
        ShardRows([files[0], tmp_path / "wide.npy"], who="teacher a: ")
    np.save(tmp_path / "flat.npy", np.zeros(4, np.float32))
    with pytest.raises(DataError, match=r"flat.npy: features of shape \(4,\)"):
        ShardRows([tmp_path / "flat.npy"])
    np.save(tmp_path / "fortran.npy", np.asfortranarray(np.zeros((3, 2), np.float32)))
    with pytest.raises(DataError, match="Fortran-order"):
        ShardRows([tmp_path / "fortran.npy"])
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="junk.npy: cannot read features"):
        ShardRows([tmp_path / "junk.npy"])
    with pytest.raises(DataError, match="no feature shards"):
        ShardRows([])
    cut = tmp_path / "cut.npy"
    cut.write_bytes(files[0].read_bytes()[:-8])  # the last row loses two floats
    with pytest.raises(DataError, match=r"cut.npy: truncated \(40 of 48 bytes at row 0\)"):
        ShardRows([cut]).read(0, 3)


def test_write_rows_round_trips_and_refuses_chunks_out_of_order(tmp_path):
    data = torch.arange(12, dtype=torch.float64).reshape(6, 2)
    path = write_rows(tmp_path / "out.npy", 6, 2, lambda: ((s, data[s:s + 4]) for s in (0, 4)))
    loaded = np.load(path)
    assert loaded.dtype == np.float32 and np.array_equal(loaded, data.numpy())
    assert np.array_equal(ShardRows([path]).read(0, 6).numpy(), data.numpy())
    with pytest.raises(ValueError, match="chunk at row 4 of shape"):
        write_rows(tmp_path / "gap.npy", 6, 2, lambda: ((s, data[s:s + 2]) for s in (0, 4)))
    with pytest.raises(ValueError, match="5 rows written for 6"):
        write_rows(tmp_path / "short.npy", 6, 2, lambda: iter([(0, data[:5])]))
    assert not (tmp_path / "gap.npy").exists() and not (tmp_path / "short.npy").exists()  # never a partial file


@pytest.mark.parametrize("chunks, error", [
    (lambda data: iter([(0, data[:2]), (3, data[3:])]), "chunk at row 3"),   # a gap after two rows were written
    (lambda data: iter([(0, data[:5])]), "5 rows written for 6"),            # the count is short at the end
])
def test_a_failed_write_rows_keeps_the_old_file_and_leaves_no_temporary(tmp_path, chunks, error):
    old = np.full((3, 2), 7.0, np.float32)
    np.save(tmp_path / "out.npy", old)
    data = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    with pytest.raises(ValueError, match=error):
        write_rows(tmp_path / "out.npy", 6, 2, lambda: chunks(data))
    assert np.array_equal(np.load(tmp_path / "out.npy"), old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npy"]


def test_write_rows_fsyncs_the_file_before_the_rename(tmp_path, monkeypatch):
    # the guarantee of organfm.outputs.atomic: the bytes are on disk before the new name can be seen
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    write_rows(tmp_path / "out.npy", 2, 1, lambda: iter([(0, torch.ones(2, 1))]))
    assert events[:2] == ["fsync", "replace"]
    assert np.array_equal(np.load(tmp_path / "out.npy"), np.ones((2, 1), np.float32))
