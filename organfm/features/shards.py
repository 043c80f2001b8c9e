"""Rows of ``.npy`` shard files read on demand, never loaded whole: the feature store of MMKD's teachers.

An ``organfm embed`` folder holds one model's (N, E) features as shards of rows; the projected teacher targets
are one (N, D) ``.npy`` per teacher. :class:`ShardRows` is a read-only (N, E) view over such files: it reads a
row, a list of rows or a range with positional reads (``os.pread``; the file's bytes are not mapped, so a
process's resident memory holds only the rows asked for), and is cheap to pickle into loader workers. Memory
of a reader is independent of N; every consumer (projector fit, filters, projection, batch items) walks it in
minibatches or :meth:`ShardRows.chunks`.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from organfm.data.errors import DataError
from organfm.outputs.atomic import write_atomic

__all__ = ["ShardRows", "write_rows"]


def _header(path: Path) -> tuple[int, tuple[int, ...], np.dtype]:
    """(byte offset of the data, shape, dtype) of a C-order ``.npy`` file."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        if fortran:
            raise DataError(f"{path}: a Fortran-order array; features are written C-order")
        return f.tell(), tuple(shape), dtype


class ShardRows:
    """A read-only (N, E) float32 view over 2-D ``.npy`` files whose rows are concatenated in order.

    Args:
        files: the shard files, in row order (all of width E).
        transform: applied to every tensor read ((n, E) -> (n, E')), e.g. a teacher's joint-space image head.
        who: prefix of error messages.

    Raises:
        DataError: a file that is not a 2-D ``.npy``, or shards of different widths (naming the file).
    """

    def __init__(self, files: Sequence[str | os.PathLike[str]], *,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None, who: str = "") -> None:
        if not files:
            raise DataError(f"{who}no feature shards")
        self.files = [Path(f) for f in files]
        self.transform = transform
        self._offsets, self._dtypes, stops = [], [], [0]
        width = None
        for path in self.files:
            try:
                offset, shape, dtype = _header(path)
            except (OSError, ValueError) as e:
                raise DataError(f"{who}{path}: cannot read features ({type(e).__name__}: {e})") from e
            if len(shape) != 2 or (width is not None and shape[1] != width):
                raise DataError(f"{who}{path}: features of shape {shape}, expected (n, {width or 'E'})")
            width = shape[1]
            self._offsets.append(offset)
            self._dtypes.append(dtype)
            stops.append(stops[-1] + shape[0])
        self.width = int(width or 0)
        self._stops = np.asarray(stops)
        self._fds: dict[int, int] = {}
        self._pid = -1

    def __len__(self) -> int:
        return int(self._stops[-1])

    @property
    def shape(self) -> tuple[int, int]:
        """(N, E') of the rows as read (after ``transform``; ``width`` is the stored E)."""
        if self.transform is None or not len(self):
            return len(self), self.width
        return len(self), int(self.read(0, 1).shape[1])

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> ShardRows:
        """The same rows with ``fn`` applied after this view's own transform."""
        out = object.__new__(ShardRows)
        out.__dict__.update(self.__getstate__())
        inner = self.transform
        out.transform = fn if inner is None else _Compose(inner, fn)
        out._fds, out._pid = {}, -1
        return out

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_fds"], state["_pid"] = {}, -1  # descriptors are per process: a worker opens its own
        return state

    def _fd(self, shard: int) -> int:
        if self._pid != os.getpid():
            self._fds, self._pid = {}, os.getpid()
        if shard not in self._fds:
            self._fds[shard] = os.open(self.files[shard], os.O_RDONLY)
        return self._fds[shard]

    def _read(self, shard: int, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of one shard (shard-local indices)."""
        dtype = self._dtypes[shard]
        row = self.width * dtype.itemsize
        want = (stop - start) * row
        data = os.pread(self._fd(shard), want, self._offsets[shard] + start * row)
        if len(data) != want:
            raise DataError(f"{self.files[shard]}: truncated ({len(data)} of {want} bytes at row {start})")
        return np.frombuffer(data, dtype=dtype).reshape(stop - start, self.width)

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) as an (n, E') float32 tensor."""
        parts = []
        for k in range(int(np.searchsorted(self._stops, start, side="right")) - 1, len(self.files)):
            lo, hi = int(self._stops[k]), int(self._stops[k + 1])
            if lo >= stop:
                break
            if hi > start:
                parts.append(self._read(k, max(start, lo) - lo, min(stop, hi) - lo))
        out = torch.from_numpy(np.concatenate(parts).astype(np.float32)) if parts else torch.zeros(0, self.width)
        return out if self.transform is None else self.transform(out)

    def __getitem__(self, rows: int | torch.Tensor | Sequence[int]) -> torch.Tensor:
        """One row (E',) for an int, else (len(rows), E') in the order given."""
        if isinstance(rows, (int, np.integer)):
            return self.read(int(rows), int(rows) + 1)[0]
        idx = torch.as_tensor(rows, dtype=torch.long).flatten()
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise IndexError(f"rows {idx.min()}..{idx.max()} out of range for {len(self)} rows")
        shard = np.searchsorted(self._stops, idx.numpy(), side="right") - 1
        raw = np.empty((len(idx), self.width), dtype=np.float32)
        for k in np.unique(shard):
            at = np.nonzero(shard == k)[0]
            for j in at:  # one positional read per row: no mapping, no more than the rows asked for
                i = int(idx[j]) - int(self._stops[k])
                raw[j] = self._read(int(k), i, i + 1)[0]
        out = torch.from_numpy(raw)
        return out if self.transform is None else self.transform(out)

    def chunks(self, size: int = 4096) -> Iterator[tuple[int, torch.Tensor]]:
        """``(start, rows [start, start + size))`` over all rows, in order."""
        for start in range(0, len(self), size):
            yield start, self.read(start, min(len(self), start + size))

    def close(self) -> None:
        """Close this process's file descriptors (they are reopened on the next read)."""
        if self._pid == os.getpid():
            for fd in self._fds.values():
                os.close(fd)
        self._fds = {}

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


class _Compose:
    """``outer(inner(x))``, picklable (a loader worker receives it)."""

    def __init__(self, inner: Callable[[torch.Tensor], torch.Tensor],
                 outer: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.inner, self.outer = inner, outer

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.outer(self.inner(x))


def write_rows(path: str | os.PathLike[str], num_rows: int, width: int,
               chunks: Callable[[], Iterator[tuple[int, torch.Tensor]]]) -> Path:
    """Write an (N, E) float32 ``.npy`` from ``(start, rows)`` chunks, holding one chunk in memory at a time.

    The file is written through :func:`~organfm.outputs.atomic.write_atomic` (temporary file, fsync, rename):
    a bad chunk, a short count or a full disk leaves the previous ``path`` as it was and no temporary behind.

    Args:
        path: the ``.npy`` file to write.
        num_rows: N, the number of rows the chunks must add up to.
        width: E, the width of every row.
        chunks: a callable returning an iterator of ``(start, rows)`` with ``rows`` of shape (n, E), in row
            order and without gaps.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: a chunk out of order or of the wrong width, or chunks that do not add up to ``num_rows``.
    """
    path = Path(path)

    def write(f: BinaryIO) -> None:
        # plain writes in row order: no mapping holds the file's pages
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                                                 "fortran_order": False, "shape": (num_rows, width)})
        written = 0
        for start, rows in chunks():
            if start != written or rows.shape[1:] != (width,):
                raise ValueError(f"{path}: chunk at row {start} of shape {tuple(rows.shape)} after {written} rows")
            f.write(np.ascontiguousarray(rows.detach().cpu().numpy(), dtype=np.float32).tobytes())
            written += len(rows)
        # raised inside the callback, so the rename never happens for a short file
        if written != num_rows:
            raise ValueError(f"{path}: {written} rows written for {num_rows}")

    return write_atomic(path, write)
