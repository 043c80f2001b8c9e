"""``--out`` folders: refused unless new, empty or the command's own; staged whole; a full disk is one line."""
from __future__ import annotations

import errno
import json

import pytest

from organfm.outputs import (MARKER, DiskFullError, OutputFolderError, StagedFolder, check_output_folder,
                             disk_full_guard, is_disk_full, require_free_space, write_marker)


def _listing(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _user_folder(root):
    (root / "scans").mkdir(parents=True)
    (root / "scans" / "a.png").write_bytes(b"not mine")
    (root / "README.txt").write_text("my images\n")
    return root


def test_absent_and_empty_folders_are_free_and_an_own_output_is_recognised(tmp_path):
    assert check_output_folder(tmp_path / "new", "cache") is False
    (tmp_path / "empty").mkdir()
    assert check_output_folder(tmp_path / "empty", "cache") is False
    (tmp_path / "mine").mkdir()
    write_marker(tmp_path / "mine", "cache", format="x")
    assert check_output_folder(tmp_path / "mine", "cache") is True
    assert json.loads((tmp_path / "mine" / MARKER).read_text())["command"] == "cache"
    legacy = _user_folder(tmp_path / "legacy")  # an output written before markers, recognised by its files
    assert check_output_folder(legacy, "cache", recognise=lambda p: (p / "README.txt").is_file()) is True


def test_a_folder_the_command_did_not_write_is_refused_naming_it_and_left_in_place(tmp_path):
    user = _user_folder(tmp_path / "imgs")
    before = _listing(user)
    with pytest.raises(OutputFolderError, match=r"--out .*imgs is a folder organfm cache did not write \(it holds "
                                                r"README.txt, scans\).*choose a new or empty folder"):
        check_output_folder(user, "cache")
    with pytest.raises(OutputFolderError):
        with StagedFolder(user, "cache") as tmp:
            (tmp / "images.npy").write_bytes(b"new")
    assert _listing(user) == before
    assert not (tmp_path / "imgs.partial").exists()


def test_another_commands_output_and_a_file_are_refused(tmp_path):
    (tmp_path / "feats").mkdir()
    write_marker(tmp_path / "feats", "embed")
    with pytest.raises(OutputFolderError, match=r"feats is the output of organfm embed, not of organfm cache"):
        check_output_folder(tmp_path / "feats", "cache")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(OutputFolderError, match=r"--out .*notes.txt is a file, not a folder"):
        check_output_folder(tmp_path / "notes.txt", "synth")
    assert (tmp_path / "notes.txt").read_text() == "x"


def test_a_staged_folder_replaces_its_own_output_only_when_complete(tmp_path):
    out = tmp_path / "cache"
    with StagedFolder(out, "cache") as tmp:
        assert tmp.name == "cache.partial" and (tmp / MARKER).is_file()
        (tmp / "a").write_text("1")
    assert (out / "a").read_text() == "1" and not (tmp_path / "cache.partial").exists()
    with pytest.raises(RuntimeError, match="boom"):
        with StagedFolder(out, "cache") as tmp:
            (tmp / "a").write_text("2")
            raise RuntimeError("boom")
    assert (out / "a").read_text() == "1"  # the failure kept the old folder whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # and left no partial or old folder
    with StagedFolder(out, "cache") as tmp:
        (tmp / "b").write_text("3")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "b"]  # replaced whole: no stale file lingers


def test_a_stale_partial_of_the_command_is_removed_but_a_foreign_one_is_refused(tmp_path):
    out, partial = tmp_path / "c", tmp_path / "c.partial"
    partial.mkdir()
    write_marker(partial, "cache")
    (partial / "half.npy").write_bytes(b"killed midway")
    with StagedFolder(out, "cache") as tmp:
        assert not (tmp / "half.npy").exists()
    _user_folder(tmp_path / "d.partial")
    with pytest.raises(OutputFolderError, match=r"d.partial is in the way and organfm cache did not write it"):
        with StagedFolder(tmp_path / "d", "cache"):
            pass
    assert (tmp_path / "d.partial" / "README.txt").is_file()


def test_a_full_disk_inside_a_staged_write_is_one_line_naming_the_folder(tmp_path):
    out = tmp_path / "cache"
    with StagedFolder(out, "cache") as tmp:
        (tmp / "a").write_text("old")
    with pytest.raises(DiskFullError) as info:
        with StagedFolder(out, "cache"):
            raise OSError(errno.ENOSPC, "No space left on device")
    message = str(info.value)
    assert "\n" not in message and str(out) in message and "free some space or choose another --out" in message
    assert not message.startswith("[Errno")
    assert (out / "a").read_text() == "old" and not (tmp_path / "cache.partial").exists()


def test_full_disk_errors_are_recognised_with_and_without_an_errno(tmp_path):
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_disk_full(OSError("81920 requested and 5088 written"))  # numpy's short write
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    wrapped = ValueError("while writing")
    wrapped.__cause__ = OSError(errno.ENOSPC, "full")
    assert is_disk_full(wrapped)
    with pytest.raises(DiskFullError, match=r"no space left on the device of .*feats: organfm embed stopped"):
        with disk_full_guard(tmp_path / "feats", "embed"), open("/dev/full", "wb") as f:
            f.write(b"x" * 10)  # a real ENOSPC, from the kernel's always-full device
    with pytest.raises(PermissionError):  # anything else passes through unchanged
        with disk_full_guard(tmp_path, "embed"):
            raise PermissionError(errno.EACCES, "Permission denied")


def test_free_space_is_checked_before_a_large_write(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 << 20, 9 << 20, 1 << 20))
    with pytest.raises(DiskFullError, match=r"not enough space for .*new: organfm cache needs about 64.0 MiB and the "
                                            r"device has 1.0 MiB free"):
        require_free_space(tmp_path / "new", 64 << 20, "cache")  # a folder not yet made: its device is checked
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 << 30, 1 << 30, 9 << 30))
    require_free_space(tmp_path / "new", 64 << 20, "cache")
