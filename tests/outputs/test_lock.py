"""One writer per output folder: a second is refused with the owner's pid; a killed owner never blocks."""
from __future__ import annotations

import pytest

from organfm.outputs import FolderBusy, FolderLock
from organfm.outputs.lock import lock_path
from tests.outputs.conftest import lock_held_by_another_process


def test_a_second_writer_of_a_folder_is_refused_with_the_owners_pid(tmp_path):
    out = tmp_path / "feats"
    with lock_held_by_another_process(out, "embed") as holder:
        with pytest.raises(FolderBusy, match=rf"--out .*feats is being written by another organfm embed \(pid "
                                             rf"{holder.pid}\): wait for it to finish, stop it, or choose another"):
            FolderLock(out, "embed").acquire()
    with FolderLock(out, "embed") as lock:  # the kernel released the killed holder's lock
        assert lock.stale_pid == holder.pid
    assert not lock_path(out).exists()  # removed on release: nothing is left beside the folder


def test_the_lock_lives_beside_the_folder_so_a_rename_of_the_folder_keeps_it(tmp_path):
    out = tmp_path / "cache"
    with FolderLock(out, "cache"):
        assert lock_path(out) == tmp_path / ".cache.organfm-lock" and lock_path(out).is_file()
        assert not out.exists()  # the lock writes nothing into the folder itself
        with pytest.raises(FolderBusy):
            FolderLock(out, "cache").acquire()  # another open file: refused even within one process
