"""``organfm cache --out``: never deletes what it did not write; staged, locked, skips counted, disk full named."""
from __future__ import annotations

import errno
import json

import numpy as np
import pytest
from PIL import Image

from organfm.cli.cache import cache
from organfm.cli.main import main
from organfm.config import load_config
from organfm.data.shards import ShardDataset
from organfm.outputs import DiskFullError, FolderBusy, OutputFolderError
from tests.outputs.conftest import lock_held_by_another_process


def _images(root, n=3):
    rng = np.random.default_rng(0)
    for organ in ("liver", "lung"):
        (root / organ).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (24, 24), dtype=np.uint8)).save(root / organ / f"p{i}.png")
    (root / "README.txt").write_text("my images\n")
    return root


def _listing(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _data(source, *extra):
    return load_config(None, None, [f"data={source}", "data.split=null", "data.dedup=false", *extra]).data


def _run_folder(root):
    (root / "checkpoints").mkdir(parents=True)
    (root / "checkpoints" / "step-00000001.ckpt").write_bytes(b"weights")
    (root / "config.yaml").write_text("method: coda\n")
    (root / ".organfm.lock").write_text("")
    return root


def test_cache_out_naming_its_own_source_refuses_and_leaves_every_file(tmp_path, capsys):
    src = _images(tmp_path / "imgs")
    before = _listing(src)
    assert main(["cache", f"data={src}", "data.split=null", "--out", str(src), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "organfm cache: error: --out" in err and str(src) in err
    assert _listing(src) == before
    assert not (tmp_path / "imgs.partial").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["imgs"]
    with pytest.raises(OutputFolderError, match="inside the data source"):  # a folder inside it too
        cache(_data(src), src / "cache")
    assert _listing(src) == before


def test_cache_out_naming_a_run_folder_or_another_image_folder_refuses_and_keeps_it(tmp_path, capsys):
    src = _images(tmp_path / "imgs")
    for other in (_run_folder(tmp_path / "runs" / "r1"), _images(tmp_path / "other")):
        before = _listing(other)
        assert main(["cache", f"data={src}", "data.split=null", "--out", str(other), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "did not write" in err and "choose a new or empty folder" in err and str(other) in err
        assert _listing(other) == before
        assert not other.with_name(other.name + ".partial").exists()
        assert not other.with_name(f".{other.name}.organfm-lock").exists()


def test_cache_out_naming_a_file_is_a_clear_message(tmp_path, capsys):
    src = _images(tmp_path / "imgs")
    (tmp_path / "notes.txt").write_text("keep me")
    assert main(["cache", f"data={src}", "data.split=null", "--out", str(tmp_path / "notes.txt")]) == 2
    err = capsys.readouterr().err
    assert "notes.txt is a file, not a folder" in err and "Errno" not in err
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_a_rebuilt_cache_replaces_the_old_one_whole_and_a_failed_one_keeps_it(tmp_path, monkeypatch):
    src = _images(tmp_path / "imgs")
    first, _ = cache(_data(src), tmp_path / "c")
    assert (tmp_path / "c" / ".organfm-output").is_file()
    import organfm.data.shards as shards

    def broken(*args, **kwargs):
        raise RuntimeError("decoder crashed")

    monkeypatch.setattr(shards, "to_uint8", broken)
    with pytest.raises(RuntimeError, match="decoder crashed"):
        cache(_data(src), tmp_path / "c", force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "imgs"]  # no c.partial, no lock file
    assert ShardDataset(tmp_path / "c", verify=True).content_hash == first["content_hash"]
    monkeypatch.undo()
    second, reused = cache(_data(src), tmp_path / "c", size=12)
    assert not reused and second["shape"] == [1, 12, 12] and ShardDataset(tmp_path / "c", verify=True)


def test_a_full_disk_is_one_line_naming_the_folder_and_the_old_cache_survives(tmp_path, monkeypatch, capsys):
    src = _images(tmp_path / "imgs")
    first, _ = cache(_data(src), tmp_path / "c")
    from organfm.outputs.npy import NpyWriter

    def full(self, rows):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(NpyWriter, "write", full)
    with pytest.raises(DiskFullError, match=r"no space left on the device of .*c: organfm cache stopped; .*c is as "
                                            r"it was and c.partial was removed"):
        cache(_data(src), tmp_path / "c", force=True)
    assert not (tmp_path / "c.partial").exists()
    assert ShardDataset(tmp_path / "c", verify=True).content_hash == first["content_hash"]
    monkeypatch.undo()
    import shutil
    from collections import namedtuple

    monkeypatch.setattr(shutil, "disk_usage", lambda p: namedtuple("u", "total used free")(1 << 30, 1 << 30, 0))
    assert main(["cache", f"data={src}", "data.split=null", "data.dedup=false", "--out", str(tmp_path / "d"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not enough space for" in err and "choose another --out" in err
    assert not (tmp_path / "d").exists() and not (tmp_path / "d.partial").exists()


def test_two_caches_into_one_folder_the_second_refuses(tmp_path, capsys):
    src = _images(tmp_path / "imgs")
    with lock_held_by_another_process(tmp_path / "c", "cache") as holder:
        assert main(["cache", f"data={src}", "data.split=null", "--out", str(tmp_path / "c"), "--no-progress"]) == 2
        assert f"being written by another organfm cache (pid {holder.pid})" in capsys.readouterr().err
        with pytest.raises(FolderBusy):
            cache(_data(src), tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_an_unreadable_image_is_left_out_counted_and_logged_never_replaced(tmp_path, capsys):
    src = _images(tmp_path / "imgs")
    (src / "lung" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    assert main(["cache", f"data={src}", "data.split=null", "data.dedup=false", "data.on_error=skip",
                 "--out", str(tmp_path / "c"), "--no-progress"]) == 0
    line = capsys.readouterr().out
    assert "cached 6 images" in line and "1 unreadable, skipped: see" in line
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["num_items"] == 6 and meta["skipped"] == 1
    ds = ShardDataset(tmp_path / "c", verify=True)
    stored = {ds[i]["image"].numpy().tobytes() for i in range(len(ds))}
    assert len(stored) == 6  # no image stored twice in place of the broken one
    from organfm.data.errors import read_skip_log

    assert any("broken.png" in where for where, _ in read_skip_log(tmp_path / "c" / "skips"))
