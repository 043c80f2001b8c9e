"""Helpers for output-folder tests: a process that holds a folder lock."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def lock_held_by_another_process(out: Path, command: str) -> Iterator[subprocess.Popen]:
    """A live child process holding ``FolderLock(out, command)`` for the duration of the block."""
    holder = subprocess.Popen([sys.executable, "-c", "import time; from organfm.outputs import FolderLock; "
                               f"FolderLock({str(out)!r}, {command!r}).acquire(); print('held', flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()
