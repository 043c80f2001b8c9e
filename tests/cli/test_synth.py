"""``organfm synth`` as a user drives it: files, manifest, preview, argument errors."""
from __future__ import annotations

import csv

import pytest

from organfm.cli.main import main


def test_synth_writes_pairs_manifest_and_preview(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["synth", "--n", "3", "--dim", "2", "--size", "16", "--seed", "1", "--out", str(out),
                 "--preview", "--no-progress"]) == 0
    assert "wrote 3 2D pairs" in capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert len(rows) == 3 and all((out / r["image"]).is_file() and (out / r["label"]).is_file() for r in rows)
    assert (out / "preview.png").is_file()


def test_synth_3d_writes_nifti(tmp_path):
    assert main(["synth", "--n", "1", "--dim", "3", "--size", "16", "--out", str(tmp_path), "--num-labels", "3",
                 "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["rasd_000000.nii.gz"]


def test_synth_rejects_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["synth", "--n", "1", "--dim", "4", "--out", str(tmp_path)])
    assert main(["synth", "--n", "0", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "n must be >= 1" in capsys.readouterr().err


def test_synth_refuses_a_folder_it_did_not_write_and_leaves_it(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert main(["synth", "--n", "1", "--size", "16", "--out", str(tmp_path / "mine"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "did not write" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]
    assert main(["synth", "--n", "1", "--size", "16", "--out", str(tmp_path / "mine" / "notes.txt"),
                 "--no-progress"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_synth_replaces_its_own_output_whole(tmp_path):
    out = tmp_path / "s"
    assert main(["synth", "--n", "3", "--size", "16", "--out", str(out), "--no-progress"]) == 0
    assert main(["synth", "--n", "1", "--size", "16", "--out", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in (out / "images").iterdir()) == ["rasd_000000.png"]  # none of the old 3 lingers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no partial folder, no lock file
    legacy = tmp_path / "legacy"  # an output written before markers existed: recognised by its manifest
    assert main(["synth", "--n", "1", "--size", "16", "--out", str(legacy), "--no-progress"]) == 0
    (legacy / ".organfm-output").unlink()
    assert main(["synth", "--n", "2", "--size", "16", "--out", str(legacy), "--no-progress"]) == 0
