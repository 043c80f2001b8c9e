"""Bad input: the one exception type for unreadable data, and the log of items skipped over it.

A skipped item happens inside whichever process reads it (often a DataLoader worker), so an
in-process counter alone cannot tell the training process how many items were lost. Each process
therefore keeps its own ``skips-<pid>.tsv`` file in a shared folder: the first ``MAX_LOGGED_SKIPS``
skips in full (a truncated volume must not fill the log with one line per slice) and a
``#skipped<TAB>N`` line with the exact total. The file is rewritten atomically on every skip, so it
is whole whenever it is read; :func:`read_skip_log` and :func:`count_skips` gather all processes.
"""
from __future__ import annotations

import os
from pathlib import Path

from organfm.data.runfiles import printable
from organfm.outputs.atomic import write_atomic

__all__ = ["DataError", "MAX_LOGGED_SKIPS", "append_skip_log", "count_skips", "read_skip_log"]

MAX_LOGGED_SKIPS = 20  # per process; the total is always exact
_TOTAL = "#skipped"


class DataError(ValueError):
    """An input file (or archive member) that cannot be read; the message names it and the reason.

    Undecodable bytes of file names in the message are shown escaped (``caf\\xe9.png``), so the
    message can always be printed and logged.
    """

    def __init__(self, message: object = "") -> None:
        super().__init__(printable(str(message)))


class _ProcessSkips:
    """This process's skips in one log folder: the first lines in full and the exact total."""

    def __init__(self, folder: Path) -> None:
        self.file = folder / f"skips-{os.getpid()}.tsv"
        self.lines: list[str] = []
        self.total = 0

    def add(self, where: str, reason: str) -> None:
        self.total += 1
        if len(self.lines) < MAX_LOGGED_SKIPS:
            self.lines.append(f"{_one_field(where)}\t{_one_field(reason)}\n")
        write_atomic(self.file, "".join(self.lines) + f"{_TOTAL}\t{self.total}\n")


_LOGS: dict[tuple[str, int], _ProcessSkips] = {}  # keyed by pid too: a forked worker starts its own file


def append_skip_log(log_dir: str | os.PathLike[str], where: str, reason: str) -> None:
    """Record one skip in this process's skip log in ``log_dir`` (created if missing).

    Args:
        log_dir: folder shared by all processes of a run.
        where: the file, plus ``::member`` / ``[row]`` / ``#index`` when it is part of a file.
        reason: why it was skipped.
    """
    key = (str(Path(log_dir).resolve()), os.getpid())
    if key not in _LOGS:
        _LOGS[key] = _ProcessSkips(Path(key[0]))
    _LOGS[key].add(where, reason)


def read_skip_log(log_dir: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """The skips logged in full in ``log_dir`` by any process, as ``(where, reason)`` pairs.

    Args:
        log_dir: the folder given as ``skip_log_dir`` to the dataset.

    Returns:
        Up to ``MAX_LOGGED_SKIPS`` pairs per process (use :func:`count_skips` for the total); empty
        when the folder is missing. Files are read in name order, lines in the order they were written.
    """
    skips = []
    for lines in _skip_files(log_dir):
        for line in lines:
            if not line.startswith("#"):
                where, _, reason = line.partition("\t")
                skips.append((where, reason))
    return skips


def count_skips(log_dir: str | os.PathLike[str]) -> int:
    """The exact number of skip events in ``log_dir``, summed over all processes (0 if missing)."""
    total = 0
    for lines in _skip_files(log_dir):
        counts = [int(line.split("\t")[1]) for line in lines if line.startswith(_TOTAL + "\t")]
        total += counts[-1] if counts else sum(1 for line in lines if not line.startswith("#"))
    return total


def _skip_files(log_dir: str | os.PathLike[str]) -> list[list[str]]:
    folder = Path(log_dir)
    if not folder.is_dir():
        return []
    return [file.read_text(encoding="utf-8", errors="backslashreplace").splitlines()
            for file in sorted(folder.glob("skips-*.tsv"))]


def _one_field(text: str) -> str:
    # tabs and newlines would break the two-column line format; escaped names stay writable as UTF-8
    return printable(" ".join(str(text).split()))
