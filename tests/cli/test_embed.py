"""``organfm embed``: the command end to end (reuse, the folder lock, unreadable images, every image with its path
and split, csv and parquet tables) and what it hands to ``organfm.api.embed`` (formats, quiet, the exit code of
an interrupted run)."""
from __future__ import annotations

import csv
from types import SimpleNamespace

import numpy as np
import pytest

from organfm.cli.main import main
from organfm.features.store import load_features

SPEC = "random:test_resnet"


def _mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def _index_csv(folder):
    return list(csv.DictReader(open(folder / "index.csv")))


class _Spy:
    """Stands in for ``organfm.api.embed``: records the call, returns a result that prints ``line``."""

    def __init__(self, interrupted: bool = False) -> None:
        self.calls: list[tuple[tuple, dict]] = []
        self.interrupted = interrupted

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        if kwargs["log"] is not None:
            kwargs["log"]("shard 1 written")
        return SimpleNamespace(interrupted=self.interrupted, line=lambda: "feats: 3 images")


def test_the_command_passes_its_options_to_the_library_and_prints_the_summary(monkeypatch, capsys):
    spy = _Spy()
    monkeypatch.setattr("organfm.api.embed", spy)
    assert main(["embed", "--model", "m", "--out", "o", "--format", "csv", "--format", "npy", "--format", "parquet",
                 "--shard-size", "7", "--texts", "captions", "data=imgs", "data.split=test"]) == 0
    (args, kwargs), = spy.calls
    assert args == ("m", None, "o", ["data=imgs", "data.split=test"])
    assert kwargs["formats"] == ["npy", "csv", "parquet"]  # npy always, first, once
    assert (kwargs["shard_size"], kwargs["texts"], kwargs["joint"], kwargs["batch_size"]) == (7, "captions", False, 128)
    assert capsys.readouterr().out == "shard 1 written\nfeats: 3 images\n"
    assert main(["embed", "--model", "m", "--out", "o", "--quiet"]) == 0
    assert spy.calls[-1][1]["log"] is None and spy.calls[-1][1]["formats"] == ["npy"]
    assert capsys.readouterr().out == "feats: 3 images\n"


def test_an_interrupted_embed_exits_143_so_a_scheduler_sees_a_resumable_stop(monkeypatch, capsys):
    monkeypatch.setattr("organfm.api.embed", _Spy(interrupted=True))
    assert main(["embed", "--model", "m", "--out", "o", "--quiet"]) == 143
    assert "feats: 3 images" in capsys.readouterr().out


def test_cli_embed_twice_on_the_embedded_synthetic_data(tmp_path, capsys):
    args = ["embed", "--model", SPEC, "--out", str(tmp_path / "f"), "--shard-size", "16",
            "data.synthetic_organs=2", "data.synthetic_images_per_organ=8", "data.synthetic_size=32"]
    assert main(args) == 0
    first = capsys.readouterr().out
    before = _mtimes(tmp_path / "f")
    assert main(args) == 0
    second = capsys.readouterr().out
    assert "0 reused" in first and "0 shards written" in second and _mtimes(tmp_path / "f") == before
    assert main(["embed", "--model", SPEC, "--out", str(tmp_path / "g"), "trainer.seed=1"]) == 2
    assert "data.* keys only" in capsys.readouterr().err


def test_two_embeds_into_one_folder_the_second_refuses(tmp_path, capsys):
    from tests.outputs.conftest import lock_held_by_another_process

    out = tmp_path / "shared"
    args = ["embed", "--model", SPEC, "--out", str(out), "--quiet", "data.synthetic_organs=2",
            "data.synthetic_images_per_organ=4", "data.synthetic_size=32"]
    with lock_held_by_another_process(out, "embed") as holder:
        assert main(args) == 2
        assert f"being written by another organfm embed (pid {holder.pid})" in capsys.readouterr().err
    assert not out.exists()
    assert main(args) == 0


def test_cli_embed_counts_unreadable_images_in_its_summary_line(tmp_path, capsys):
    from PIL import Image

    for organ in ("hand", "lung"):
        (tmp_path / "imgs" / organ).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((16, 16), 40 * i + (organ == "lung"), np.uint8)).save(
                tmp_path / "imgs" / organ / f"{i}.png")
    (tmp_path / "imgs" / "hand" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    assert main(["embed", "--model", SPEC, "--out", str(tmp_path / "f"), "--quiet", "--image-size", "32",
                 f"data={tmp_path / 'imgs'}", "data.split=null", "data.on_error=skip", "data.dedup=false"]) == 0
    assert "1 unreadable, skipped" in capsys.readouterr().out
    rows = _index_csv(tmp_path / "f")
    assert [r["key"] for r in rows if r["skipped"] == "1"] == ["hand/broken.png"]


def _image_folder(root, n_per_organ=6, duplicate=True):
    from PIL import Image

    rng = np.random.default_rng(3)
    for organ in ("hand", "lung"):
        (root / organ).mkdir(parents=True)
        for i in range(n_per_organ):
            Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(root / organ / f"img {i:02d}.png")
    if duplicate:  # the same bytes twice: embedded both times, the second marked
        (root / "lung" / "copy.png").write_bytes((root / "hand" / "img 00.png").read_bytes())


def test_cli_embed_covers_every_image_with_its_path_split_and_duplicates(tmp_path, capsys):
    _image_folder(tmp_path / "imgs")
    assert main(["embed", "--model", SPEC, "--out", str(tmp_path / "f"), "--quiet", "--image-size", "32",
                 f"data={tmp_path / 'imgs'}"]) == 0
    line = capsys.readouterr().out
    assert "13 images" in line and "1 exact duplicates embedded" in line  # not the 80 % train split
    rows = _index_csv(tmp_path / "f")
    assert len(rows) == 13
    assert sorted(r["path"] for r in rows) == sorted(p.relative_to(tmp_path / "imgs").as_posix()
                                                     for p in (tmp_path / "imgs").rglob("*.png"))
    assert {r["split"] for r in rows} <= {"train", "val", "test"} and len({r["split"] for r in rows}) > 1
    by_path = {r["path"]: r for r in rows}
    assert by_path["lung/copy.png"]["duplicate_of"] == by_path["hand/img 00.png"]["row"]
    assert by_path["hand/img 00.png"]["duplicate_of"] == ""
    assert by_path["lung/img 01.png"]["organ"] == "lung"


def test_cli_embed_split_selects_and_csv_format_writes_ids_beside_features(tmp_path, capsys):
    _image_folder(tmp_path / "imgs", duplicate=False)
    assert main(["embed", "--model", SPEC, "--out", str(tmp_path / "f"), "--quiet", "--image-size", "32",
                 "--format", "csv", f"data={tmp_path / 'imgs'}", "data.split=train"]) == 0
    rows = _index_csv(tmp_path / "f")
    assert 0 < len(rows) < 12 and {r["split"] for r in rows} == {"train"}
    table = list(csv.DictReader(open(tmp_path / "f" / "features.csv")))
    feats, _ = load_features(tmp_path / "f")
    assert [r["path"] for r in table] == [r["path"] for r in rows]
    width = feats.shape[1]
    assert float(table[1][f"f{width - 1}"]) == pytest.approx(float(feats[1, -1]), rel=1e-6)


def test_parquet_without_pyarrow_is_a_clear_message_before_any_work(tmp_path, capsys, no_pyarrow):
    assert main(["embed", "--model", SPEC, "--out", str(tmp_path / "f"), "--format", "parquet",
                 "data.synthetic_organs=2", "data.synthetic_images_per_organ=2"]) == 2
    assert "--format parquet needs pyarrow" in capsys.readouterr().err
    assert not (tmp_path / "f").exists()
