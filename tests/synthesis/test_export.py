"""The offline writer: PNG / NIfTI pairs, manifest, byte-identical output per seed, preview grid."""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from organfm.data.nifti import NiftiReader
from organfm.synthesis import LABEL_MAP, RaSDPairs, export_pairs, save_nifti
from organfm.synthesis.export import label_palette


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_2d_pairs_are_pngs_of_the_online_stream(tmp_path):
    manifest = export_pairs(tmp_path / "a", n=3, dim=2, size=16, seed=4, num_labels=3, progress=False)
    rows = list(csv.DictReader(open(manifest)))
    assert [r["image"] for r in rows] == [f"images/rasd_{i:06d}.png" for i in range(3)]
    pairs = RaSDPairs((16, 16), num_labels=3, seed=4)
    for row in rows:
        item = pairs[int(row["index"])]
        image = np.asarray(Image.open(tmp_path / "a" / row["image"]))
        labels = np.asarray(Image.open(tmp_path / "a" / row["label"]))
        assert image.dtype == np.uint8 and image.shape == (16, 16)
        assert np.array_equal(image, np.round(item["image"][0].numpy() * 255).astype(np.uint8))
        assert np.array_equal(labels, item[LABEL_MAP][0].numpy())
        assert int(row["labels_present"]) == len(np.unique(labels)) and row["num_labels"] == "3"


def test_same_seed_gives_byte_identical_files(tmp_path):
    for name, dim, seed in (("a", 2, 1), ("b", 2, 1), ("c", 2, 2), ("d", 3, 1), ("e", 3, 1)):
        export_pairs(tmp_path / name, n=2, dim=dim, size=16, seed=seed, progress=False)
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    assert digests(tmp_path / "a") != digests(tmp_path / "c")
    assert digests(tmp_path / "d") == digests(tmp_path / "e")
    assert sorted(digests(tmp_path / "d")) == ["images/rasd_000000.nii.gz", "images/rasd_000001.nii.gz",
                                                "labels/rasd_000000.nii.gz", "labels/rasd_000001.nii.gz",
                                                "manifest.csv"]


def test_worker_processes_write_the_same_files(tmp_path):
    export_pairs(tmp_path / "a", n=3, dim=2, size=16, seed=3, progress=False)
    export_pairs(tmp_path / "b", n=3, dim=2, size=16, seed=3, num_workers=1, progress=True)
    assert digests(tmp_path / "a") == digests(tmp_path / "b")


def test_nifti_is_deterministic_and_reads_back_unchanged(tmp_path):
    volume = np.random.default_rng(0).random((4, 5, 6)).astype(np.float32)
    save_nifti(volume, tmp_path / "v.nii.gz")
    raw = (tmp_path / "v.nii.gz").read_bytes()
    assert raw[:2] == b"\x1f\x8b" and raw[4:8] == b"\x00\x00\x00\x00"  # gzip mtime 0
    assert not raw[3] & 0x08  # no file name in the gzip header
    back, meta = NiftiReader().read_volume(str(tmp_path / "v.nii.gz"))
    assert np.array_equal(back, volume) and meta["spacing"] == (1.0, 1.0, 1.0)


def test_3d_labels_round_trip_through_nifti(tmp_path):
    manifest = export_pairs(tmp_path, n=1, dim=3, size=16, seed=0, num_labels=4, progress=False)
    row = next(csv.DictReader(open(manifest)))
    item = RaSDPairs((16,) * 3, num_labels=4, seed=0)[0]
    image, _ = NiftiReader().read_volume(str(tmp_path / row["image"]))
    labels, _ = NiftiReader().read_volume(str(tmp_path / row["label"]))
    assert np.array_equal(image, item["image"][0].numpy())
    assert np.array_equal(labels, item[LABEL_MAP][0].numpy())


@pytest.mark.parametrize("dim", [2, 3])
def test_preview_grid(tmp_path, dim):
    export_pairs(tmp_path, n=3, dim=dim, size=16, seed=0, num_labels=3, preview=True, progress=False)
    grid = Image.open(tmp_path / "preview.png")
    assert grid.mode == "RGB" and grid.size == (3 * 132 + 4, 2 * 132 + 4)  # 3 pairs, tile 128, gap 4


def test_palette_colours_are_distinct():
    palette = label_palette(16)
    assert palette.shape == (16, 3) and len({tuple(c) for c in palette}) == 16


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="dim"):
        export_pairs(tmp_path, n=1, dim=4, progress=False)
    with pytest.raises(ValueError, match="n must"):
        export_pairs(tmp_path, n=0, progress=False)
    assert torch.is_tensor(RaSDPairs((16, 16))[0]["image"])
