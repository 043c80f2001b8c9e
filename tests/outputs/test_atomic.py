"""``organfm.outputs.atomic``: whole files or the old ones, umask modes, no temporaries left behind."""
from __future__ import annotations

import os

import pytest

from organfm.outputs.atomic import atomic_path, file_mode, write_atomic


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_file_mode_follows_the_umask(umask_027):
    assert file_mode() == 0o640


def test_text_bytes_and_callbacks_replace_the_file_with_the_umask_mode(tmp_path, umask_027):
    path = tmp_path / "sub" / "a.txt"
    assert write_atomic(path, "é\n") == path  # parent folders are created
    assert path.read_bytes() == "é\n".encode()
    write_atomic(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    write_atomic(path, lambda f: f.write(b"cb"))
    assert path.read_bytes() == b"cb" and path.stat().st_mode & 0o777 == 0o640
    write_atomic(path, "secret", mode=0o600)
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["a.txt"]


@pytest.mark.parametrize("form", ["write_atomic", "atomic_path"])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, form):
    path = tmp_path / "a.txt"
    path.write_text("old")

    def fail(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        if form == "write_atomic":
            write_atomic(path, fail)
        else:
            with atomic_path(path) as tmp:
                tmp.write_bytes(b"half")
                raise OSError(28, "No space left on device")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_path_fsyncs_the_temporary_before_the_rename(tmp_path, monkeypatch, umask_027):
    path = tmp_path / "w.bin"
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else "?")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".w.bin.") and tmp.name.endswith(".tmp")
        tmp.write_bytes(b"x")
        assert not path.exists()
    assert path.read_bytes() == b"x" and path.stat().st_mode & 0o777 == 0o640
    assert synced[0].endswith(".tmp") or synced[0] == "?"
    assert len(synced) == 2  # the file, then its folder (the rename)
