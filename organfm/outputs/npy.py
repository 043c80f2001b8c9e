"""``.npy`` files written with ordinary file I/O, row block by row block.

``np.lib.format.open_memmap`` on a full disk kills the process with SIGBUS (the pages are allocated only when
touched), and ``np.save`` reports a short write as "81920 requested and 5088 written" without an errno.
Writing the header and then the bytes through a Python file object gives an ``OSError(ENOSPC)`` that
:func:`organfm.outputs.folder.disk_full_guard` can name, and the result is a normal ``.npy`` file.
"""
from __future__ import annotations

import os
from typing import BinaryIO

import numpy as np

__all__ = ["NpyWriter", "write_npy"]


def _header(shape: tuple[int, ...], dtype: np.dtype, length: int | None = None) -> bytes:
    """An ``.npy`` version 1.0 header, padded to ``length`` bytes (default: the next multiple of 64)."""
    d = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(int(s) for s in shape)}
    text = repr(d).encode("latin1")
    if length is None:
        length = -(-(10 + len(text) + 1) // 64) * 64  # magic (6) + version (2) + size (2) + text + newline
    pad = length - 10 - len(text) - 1
    if pad < 0 or length - 10 > 0xFFFF:
        raise ValueError(f"an .npy header for shape {shape} does not fit in {length} bytes")
    return b"\x93NUMPY\x01\x00" + (length - 10).to_bytes(2, "little") + text + b" " * pad + b"\n"


def write_npy(f: BinaryIO, array: np.ndarray) -> None:
    """Write ``array`` as a whole ``.npy`` file to the open binary file ``f`` (C order)."""
    a = np.ascontiguousarray(array)
    f.write(_header(a.shape, a.dtype))
    f.write(memoryview(a).cast("B"))


class NpyWriter:
    """An ``.npy`` file of up to ``max_rows`` rows of shape ``row_shape``, filled in order.

    The header is written first for ``max_rows`` and rewritten in place on :meth:`close` for the rows
    actually written (it keeps its length, so the data does not move): a caller that leaves rows out (an
    unreadable image) needs neither a second pass nor a copy.

    Args:
        path: the file (created or truncated).
        row_shape: the shape of one row.
        dtype: the dtype.
        max_rows: the most rows that will be written.
    """

    def __init__(self, path: str | os.PathLike[str], row_shape: tuple[int, ...], dtype: np.dtype | type,
                 max_rows: int) -> None:
        self.dtype, self.row_shape = np.dtype(dtype), tuple(int(s) for s in row_shape)
        self.row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize
        self.rows = 0
        self._header_length = len(_header((max_rows, *self.row_shape), self.dtype))
        self.file = open(path, "wb")
        try:
            self.file.write(_header((max_rows, *self.row_shape), self.dtype))
        except BaseException:
            self.file.close()
            raise

    def write(self, rows: np.ndarray) -> None:
        """Append ``rows``: one row of ``row_shape`` or a block ``(k, *row_shape)``."""
        a = np.ascontiguousarray(rows, dtype=self.dtype)
        data = memoryview(a).cast("B")
        if data.nbytes % self.row_bytes:
            raise ValueError(f"{self.file.name}: a block of shape {a.shape} is not whole rows of {self.row_shape}")
        self.file.write(data)
        self.rows += data.nbytes // self.row_bytes

    def close(self) -> None:
        """Write the final header, flush the file to disk and close it."""
        try:
            self.file.seek(0)
            self.file.write(_header((self.rows, *self.row_shape), self.dtype, self._header_length))
            self.file.truncate(self._header_length + self.rows * self.row_bytes)
            self.file.flush()
            os.fsync(self.file.fileno())
        finally:
            self.file.close()

    def abort(self) -> None:
        """Close without finishing (the caller removes the file)."""
        self.file.close()
