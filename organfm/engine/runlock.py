"""One run owns its folder: an exclusive advisory lock held for the run's whole life.

Two processes writing one run folder interleave checkpoints, config and export (a Coda run would finish
naming a DINO run's checkpoint). ``flock`` is released by the kernel when its holder dies, so a lock file
left by a killed run never blocks a resume; the pid written into it names the live owner in the refusal.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

__all__ = ["RunFolderBusy", "RunLock"]

LOCK_NAME = ".organfm.lock"


class RunFolderBusy(ValueError):
    """Another live process holds the run folder."""


class RunLock:
    """Context manager: ``with RunLock(run_dir): ...`` or ``acquire()`` / ``release()``.

    Args:
        run_dir: the run folder (created if absent).

    Attributes:
        stale_pid: pid recorded by a previous owner that died without releasing (None if there was none);
            reported so a user knows the folder was left by a crash.
    """

    # subclasses that lock other folders (organfm.outputs.FolderLock) name their own owner and fix
    busy_message = ("{folder} is in use by another organfm run (pid {pid}): wait for it to finish, stop it, or "
                    "choose another trainer.out_dir")

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None
        self.stale_pid: int | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_pid(fd)
            os.close(fd)
            raise RunFolderBusy(self.busy_message.format(folder=self.path.parent, pid=owner or "unknown")) from None
        previous = _read_pid(fd)
        if previous and previous != os.getpid() and not _alive(previous):
            self.stale_pid = previous
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except ValueError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
