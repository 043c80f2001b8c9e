"""One run owns its folder: a second holder is refused naming the owner; a dead owner never blocks."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from organfm.engine.runlock import LOCK_NAME, RunFolderBusy, RunLock


def test_a_second_owner_of_a_run_folder_is_refused_with_the_owners_pid(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from organfm.engine.runlock import RunLock; "
                               f"RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderBusy, match=f"{tmp_path} is in use by another organfm run \\(pid {holder.pid}\\)"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    lock = RunLock(tmp_path).acquire()  # the kernel released the dead holder's lock: no manual clean-up
    assert lock.stale_pid == holder.pid  # and the crash is reported
    lock.release()


def test_within_one_process_a_second_lock_is_refused_until_the_first_is_released(tmp_path):
    run_dir = tmp_path / "run"  # created by acquire
    with RunLock(run_dir) as first:
        assert (run_dir / LOCK_NAME).read_text() == f"{os.getpid()}\n"
        with pytest.raises(RunFolderBusy, match=f"pid {os.getpid()}"):
            RunLock(run_dir).acquire()  # flock is per open file: another open of the same file conflicts
        assert first.stale_pid is None
    with RunLock(run_dir) as again:  # released on exit, the pid cleared: nothing stale
        assert again.stale_pid is None
    assert (run_dir / LOCK_NAME).read_text() == ""


def test_the_lock_is_released_when_the_block_raises(tmp_path):
    with pytest.raises(KeyError):
        with RunLock(tmp_path):
            raise KeyError("boom")
    RunLock(tmp_path).acquire().release()


def test_release_twice_and_a_garbled_lock_file_are_harmless(tmp_path):
    (tmp_path / LOCK_NAME).write_text("not a pid\n")
    lock = RunLock(tmp_path).acquire()
    assert lock.stale_pid is None
    lock.release()
    lock.release()
    assert issubclass(RunFolderBusy, ValueError)  # the CLI reports ValueErrors as config errors, not tracebacks
