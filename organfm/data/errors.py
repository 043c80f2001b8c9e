"""Bad input: the one exception type for unreadable data, and the log of items skipped over it.

A skipped item happens inside whichever process reads it (often a DataLoader worker), so an
in-process counter alone cannot tell the training process how many items were lost. Each process
therefore appends to its own ``skips-<pid>.tsv`` file in a shared folder, and
:func:`read_skip_log` gathers them all.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DataError", "read_skip_log", "append_skip_log"]


class DataError(ValueError):
    """An input file (or archive member) that cannot be read; the message names it and the reason."""


def append_skip_log(log_dir: str | os.PathLike[str], where: str, reason: str) -> None:
    """Append one ``where<TAB>reason`` line to this process's skip log in ``log_dir``.

    Args:
        log_dir: folder shared by all processes of a run (created if missing).
        where: the file, plus ``::member`` / ``[row]`` / ``#index`` when it is part of a file.
        reason: why it was skipped.
    """
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    # one file per process: appends from different processes never interleave inside a line
    with open(Path(log_dir) / f"skips-{os.getpid()}.tsv", "a", encoding="utf-8") as f:
        f.write(f"{_one_field(where)}\t{_one_field(reason)}\n")


def read_skip_log(log_dir: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Every skip recorded in ``log_dir`` by any process, as ``(where, reason)`` pairs.

    Args:
        log_dir: the folder given as ``skip_log_dir`` to the dataset.

    Returns:
        One pair per skip event (an item skipped twice counts twice); empty when the folder is
        missing. Files are read in name order, lines in the order they were written.
    """
    folder = Path(log_dir)
    if not folder.is_dir():
        return []
    skips = []
    for file in sorted(folder.glob("skips-*.tsv")):
        for line in file.read_text(encoding="utf-8").splitlines():
            where, _, reason = line.partition("\t")
            skips.append((where, reason))
    return skips


def _one_field(text: str) -> str:
    # tabs and newlines would break the two-column line format
    return " ".join(str(text).split())
