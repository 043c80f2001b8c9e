"""One process at a time writes an output folder: the pretraining run lock, for ``--out`` folders.

Two ``organfm embed`` calls into one folder once both printed "29 shards written" and left one model's
features. The lock is the run lock's ``flock`` (released by the kernel when its holder dies, so a killed
call never blocks the next). It lives beside the folder, not in it: ``organfm cache`` replaces its folder by
a rename, and the lock must cover the ``<out>.partial`` folder too. The lock file is removed on release.
"""
from __future__ import annotations

import os
from pathlib import Path

from organfm.engine.runlock import RunFolderBusy, RunLock

__all__ = ["FolderBusy", "FolderLock", "lock_path"]

FolderBusy = RunFolderBusy  # one refusal type for run folders and output folders (a ValueError: CLI exit 2)


def lock_path(out: str | os.PathLike[str]) -> Path:
    """The lock file of output folder ``out``: ``<parent>/.<name>.organfm-lock``."""
    out = Path(out).absolute()  # "." has no name of its own
    return out.with_name(f".{out.name}.organfm-lock")


class FolderLock(RunLock):
    """``with FolderLock(out, "embed"): ...``: refuse a second writer of ``out`` with the owner's pid.

    Args:
        out: the output folder (need not exist yet; its parent is created).
        command: the command's name, shown in the refusal.
    """

    def __init__(self, out: str | os.PathLike[str], command: str) -> None:
        super().__init__(Path(out).parent)
        self.path = lock_path(out)
        shown = str(out).replace("{", "{{").replace("}", "}}")
        self.busy_message = (f"--out {shown} is being written by another organfm {command} (pid {{pid}}): wait for "
                             "it to finish, stop it, or choose another --out")

    def acquire(self) -> "FolderLock":
        while True:
            super().acquire()
            assert self._fd is not None
            try:
                current = os.stat(self.path).st_ino == os.fstat(self._fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                return self
            # the previous holder removed this file after we opened it: lock the file now at the path
            super().release()

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # while still holding it: a waiter then sees a stale inode
        super().release()
