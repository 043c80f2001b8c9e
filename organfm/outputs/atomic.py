"""Files written whole or not at all: the one atomic-write guarantee every organfm writer shares.

A file is written to a temporary name in its own folder (``.<name>.<random>.tmp``), flushed to disk
(``fsync``), given the permission bits the umask gives any new file, and moved over the target with
``os.replace``, which is atomic on POSIX and Windows; the folder is then fsynced (where the platform allows
it) so the rename itself survives a power cut. A crash, a kill or a full disk leaves either the previous
file or the new one, never a half-written one that a later run would trust, and no temporary behind
(except after a ``kill -9``, when a ``.tmp`` file is all that is left).

Two forms: :func:`write_atomic` for bytes, text or a callback that writes to an open binary file, and
:func:`atomic_path` for writers that insist on a file *name* (safetensors, tokenizers, numpy headers).
"""
from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_path", "file_mode", "write_atomic"]

# a folder that cannot be fsynced (some network and FUSE file systems, Windows): the rename still happened
_NO_DIR_FSYNC = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF, errno.EACCES, errno.EPERM, errno.EISDIR}


def file_mode() -> int:
    """The permission bits ``open()`` gives a new file under the current umask (0644 under 022).

    ``tempfile.mkstemp`` (and the safetensors writer) make owner-only files; a file renamed from one gets
    these bits instead, so colleagues on a shared server read what the umask lets them read.

    Returns:
        ``0o666`` without the umask's bits.
    """
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_folder(folder: Path) -> None:
    """Make a rename inside ``folder`` durable, where the platform lets a folder be opened and fsynced."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open a folder: its rename is as durable as it gets
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in _NO_DIR_FSYNC:
            raise
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, mode: int | None = None) -> Iterator[Path]:
    """A temporary file name beside ``path``; on a clean exit its bytes replace ``path`` atomically.

    The caller writes the temporary file by name (and closes it) inside the ``with`` block; on exit it is
    fsynced, given ``mode`` and renamed over ``path``. An exception removes it and leaves ``path`` as it was.
    Parent folders are created.

    Args:
        path: the file to write.
        mode: permission bits for the new file (e.g. ``0o600`` for a secret); default: the umask's.

    Yields:
        The temporary file's path (it exists, empty).

    Examples:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("hello")
        >>> target.read_text()
        'hello'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # a read-only descriptor is enough to fsync on Linux and macOS, and works whatever the writer left
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, file_mode() if mode is None else mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(target.parent)


def write_atomic(path: str | os.PathLike[str], data: str | bytes | Callable[[BinaryIO], object], *,
                 mode: int | None = None) -> Path:
    """Replace ``path`` by ``data`` atomically (parent folders are created).

    Args:
        path: the file to write.
        data: text (written as UTF-8), bytes, or a callback ``write(f)`` that writes to the open binary
            temporary file (``lambda f: torch.save(state, f)``), so a large object is never held as bytes.
        mode: permission bits for the new file (e.g. ``0o600`` for a secret); default: the umask's.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(name, file_mode() if mode is None else mode)
        os.replace(name, target)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    _fsync_folder(target.parent)
    return target
