"""Whose folder is it: refuse folders a command did not write, stage whole-folder writes, name a full disk.

``--out`` is the one argument that can destroy data: ``organfm cache --out imgs`` once replaced a folder of
images by the cache of those images. So a command writes only into a folder that is absent, empty or its own
output, recognised by the marker file :data:`MARKER` (``{"command": "cache", ...}``) that it writes first.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

__all__ = ["MARKER", "DiskFullError", "OutputFolderError", "StagedFolder", "check_output_folder", "disk_full_guard",
           "is_disk_full", "require_free_space", "write_marker"]

MARKER = ".organfm-output"
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# numpy's ndarray.tofile reports a short write this way, with no errno: on a local disk that is a full disk
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")

Recognise = Callable[[Path], bool]


class OutputFolderError(ValueError):
    """``--out`` names a file, a folder another command or the user wrote, or a partial folder in the way."""


class DiskFullError(OSError):
    """The device of an output folder is full (or over quota); the message names the folder and the fix."""

    def __init__(self, message: str) -> None:
        super().__init__(message)  # one argument: str(e) is the message, without an "[Errno ...]" prefix


def _marker_command(folder: Path) -> str | None:
    """The command named by ``folder``'s marker file, or None when it has none (or an unreadable one)."""
    try:
        return str(json.loads((folder / MARKER).read_text(encoding="utf-8")).get("command"))
    except (OSError, ValueError, AttributeError):
        return None


def write_marker(folder: str | os.PathLike[str], command: str, **facts: object) -> None:
    """Mark ``folder`` as the output of ``organfm <command>`` (written before anything else goes in).

    Args:
        folder: an existing folder.
        command: the command's name (``cache``, ``embed``, ``synth``, ``export``).
        **facts: more JSON-serialisable facts to record (format, version).
    """
    (Path(folder) / MARKER).write_text(json.dumps({"command": command, **facts}) + "\n", encoding="utf-8")


def check_output_folder(out: str | os.PathLike[str], command: str, *, recognise: Recognise | None = None) -> bool:
    """Refuse ``--out`` unless organfm ``command`` may write there.

    Args:
        out: the ``--out`` path.
        command: the command's name, as in the marker file.
        recognise: also accepts a folder without a marker for which this returns True (outputs written before
            markers existed, e.g. a cache folder by its ``meta.json``).

    Returns:
        True when ``out`` is an earlier output of ``command``; False when it is absent or an empty folder.

    Raises:
        OutputFolderError: ``out`` is a file, another command's output, or a non-empty folder that ``command``
            did not write (one line: the path, what it holds, the fix).
    """
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return False
    if not out.is_dir():
        raise OutputFolderError(f"--out {out} is a file, not a folder: organfm {command} writes a folder; choose "
                                "the path of a new or empty folder")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return False
    owner = _marker_command(out)
    if owner == command or (owner is None and recognise is not None and recognise(out)):
        return True
    if owner is not None:
        raise OutputFolderError(f"--out {out} is the output of organfm {owner}, not of organfm {command}: choose "
                                "another folder")
    shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
    raise OutputFolderError(f"--out {out} is a folder organfm {command} did not write (it holds {shown}); organfm "
                            "never replaces or deletes it: choose a new or empty folder")


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or an exception it was raised from) says the device is full or over quota."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and (seen.errno in _FULL_ERRNOS or _SHORT_WRITE.search(str(seen))):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _full_message(folder: Path, command: str, what: str) -> str:
    return (f"no space left on the device of {folder}: organfm {command} stopped; {what}: free some space or "
            "choose another --out")


@contextmanager
def disk_full_guard(folder: str | os.PathLike[str], command: str, *,
                    what: str = "the files finished so far are kept") -> Iterator[None]:
    """Turn a full-disk ``OSError`` raised inside the block into a :class:`DiskFullError` naming ``folder``.

    Args:
        folder: the output folder, named in the message.
        command: the command's name.
        what: what the user finds on disk afterwards.
    """
    try:
        yield
    except DiskFullError:
        raise
    except OSError as e:
        if is_disk_full(e):
            raise DiskFullError(_full_message(Path(folder), command, what)) from e
        raise


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def require_free_space(folder: str | os.PathLike[str], nbytes: int, command: str) -> None:
    """Refuse to start a write of ``nbytes`` into ``folder`` that the device has no room for.

    Checked first because the failure otherwise comes late (after minutes of decoding), and a memory map
    written on a full disk dies of SIGBUS rather than raising.

    Raises:
        DiskFullError: the device has less than ``nbytes`` (plus 1 MiB for the small files) free.
    """
    free = shutil.disk_usage(_existing_ancestor(Path(folder))).free
    if free < nbytes + (1 << 20):
        raise DiskFullError(f"not enough space for {folder}: organfm {command} needs about {_size(nbytes)} and the "
                            f"device has {_size(free)} free: free some space or choose another --out")


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB" if nbytes < 2**30 else f"{nbytes / 2**30:.2f} GiB"


class StagedFolder:
    """``with StagedFolder(out, "cache") as tmp:`` builds a whole new ``out`` in ``tmp`` (``<out>.partial``).

    On entry ``out`` is checked (:func:`check_output_folder`), a ``<out>.partial`` left by a killed call of the
    same command is removed, and the new partial folder is created with its marker. On success the partial
    folder replaces ``out`` (renames only); on any failure it is removed and ``out`` is left as it was, and a
    full disk becomes a :class:`DiskFullError` naming ``out``. The caller holds the folder's
    :class:`~organfm.outputs.lock.FolderLock`, so no live process owns the partial folder that is removed.

    Args:
        out: the output folder.
        command: the command's name.
        recognise: see :func:`check_output_folder`.
        facts: recorded in the marker.
    """

    def __init__(self, out: str | os.PathLike[str], command: str, *, recognise: Recognise | None = None,
                 facts: dict[str, object] | None = None) -> None:
        self.out, self.command, self.recognise = Path(out), command, recognise
        absolute = self.out.absolute()  # "." has no name of its own
        self.partial = absolute.with_name(absolute.name + ".partial")
        self.facts = facts or {}

    def __enter__(self) -> Path:
        check_output_folder(self.out, self.command, recognise=self.recognise)
        partial = self.partial
        if partial.exists() or partial.is_symlink():
            if partial.is_symlink() or not partial.is_dir() or (
                    any(partial.iterdir()) and _marker_command(partial) != self.command):
                raise OutputFolderError(f"{partial} is in the way and organfm {self.command} did not write it: move "
                                        "it away or choose another --out")
            shutil.rmtree(partial)  # our own, left by a killed call
        with disk_full_guard(self.out, self.command, what=f"{self.out} is as it was"):
            partial.mkdir(parents=True)
            write_marker(partial, self.command, **self.facts)
        return partial

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if exc is None:
            try:
                self._swap()
            except BaseException:
                shutil.rmtree(self.partial, ignore_errors=True)
                raise
            return False
        shutil.rmtree(self.partial, ignore_errors=True)
        if is_disk_full(exc) and not isinstance(exc, DiskFullError):
            raise DiskFullError(_full_message(self.out, self.command, f"{self.out} is as it was and "
                                              f"{self.partial.name} was removed")) from exc
        return False

    def _swap(self) -> None:
        """``partial`` becomes ``out``; the previous ``out`` (checked again: still ours) is removed after."""
        if not check_output_folder(self.out, self.command, recognise=self.recognise):
            if self.out.exists():
                self.out.rmdir()  # an empty folder (checked above): rename cannot replace it on every system
            os.replace(self.partial, self.out)
            return
        old = Path(tempfile.mkdtemp(dir=self.partial.parent, prefix=f".{self.partial.name}.old-"))
        os.replace(self.out, old)  # onto an empty folder: allowed by rename(2)
        os.replace(self.partial, self.out)
        shutil.rmtree(old, ignore_errors=True)
