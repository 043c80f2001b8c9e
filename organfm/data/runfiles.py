"""Run files the data layer writes (split files, their keys, skip logs): whole or not at all.

A file is written to a temporary name in its own folder, flushed to disk (``fsync``), then moved over
the target with ``os.replace``, which is atomic on POSIX and Windows. A crash, a kill or a full disk
leaves either the previous file or the new one, never a half-written one that a later run would trust.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["file_mode", "write_atomic", "printable"]


def file_mode() -> int:
    """The permission bits ``open()`` gives a new file under the current umask (0644 under 022).

    ``tempfile.mkstemp`` (and the safetensors writer) make owner-only files; a run file renamed from one gets
    these bits instead, so colleagues on a shared server read what the umask lets them read.
    """
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomic(path: str | os.PathLike[str], data: str | bytes, *, mode: int | None = None) -> None:
    """Replace ``path`` by ``data`` atomically (parent folders are created).

    Args:
        path: the file to write.
        data: text (written as UTF-8) or bytes.
        mode: permission bits for the new file (e.g. ``0o600`` for a secret); default: the umask's.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode() if mode is None else mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def printable(text: str) -> str:
    """``text`` with undecodable bytes of file names (surrogate escapes) shown as ``\\xe9``.

    File names that are not UTF-8 reach Python as lone surrogates, which cannot be printed or written
    to a UTF-8 file; this turns ``caf\\udce9`` into the readable, unambiguous ``caf\\xe9``.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
