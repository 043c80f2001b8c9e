"""``.npy`` files by ordinary writes: readable by numpy, rows may be left out, a full disk raises ENOSPC."""
from __future__ import annotations

import errno
import io

import numpy as np
import pytest

from organfm.outputs import NpyWriter, write_npy


def test_npy_writer_rows_left_out_shrink_the_header_in_place(tmp_path):
    rows = np.arange(5 * 2 * 3, dtype=np.uint8).reshape(5, 2, 3)
    writer = NpyWriter(tmp_path / "a.npy", (2, 3), np.uint8, max_rows=100000)
    writer.write(rows[0])
    writer.write(rows[2:])  # row 1 left out (an unreadable image)
    writer.close()
    got = np.load(tmp_path / "a.npy")
    assert got.shape == (4, 2, 3) and np.array_equal(got, rows[[0, 2, 3, 4]])
    assert np.array_equal(np.load(tmp_path / "a.npy", mmap_mode="r"), got)
    assert (tmp_path / "a.npy").stat().st_size == 128 + 4 * 6  # the header kept its aligned length


def test_write_npy_round_trips_and_reports_a_full_disk_as_enospc():
    a = np.random.default_rng(0).random((3, 4)).astype(np.float32)
    buf = io.BytesIO()
    write_npy(buf, a)
    buf.seek(0)
    assert np.array_equal(np.load(buf), a)
    with pytest.raises(OSError) as info:
        with open("/dev/full", "wb") as f:  # np.save here says "... requested and ... written", no errno
            write_npy(f, np.zeros((1024, 64), np.float32))
    assert info.value.errno == errno.ENOSPC


def test_a_block_that_is_not_whole_rows_is_refused(tmp_path):
    writer = NpyWriter(tmp_path / "b.npy", (4,), np.float32, max_rows=2)
    with pytest.raises(ValueError, match="not whole rows"):
        writer.write(np.zeros(3, np.float32))
    writer.abort()
