"""Offline RaSD data: write image/label-map pairs to disk, byte-identical for a given seed.

2D pairs are PNG (8-bit image, label PNG holding the label ids), 3D pairs NIfTI (``.nii.gz``: float32
image, uint8 labels). ``manifest.csv`` lists them. NIfTI files are gzipped with a fixed header
(mtime 0, no file name): nibabel's own writer stamps the current time into the gzip header, which
would make two runs of the same seed differ.
"""
from __future__ import annotations

import csv
import gzip
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch.utils.data import DataLoader

from organfm.data.sample import IMAGE, INDEX
from organfm.outputs.atomic import write_atomic
from organfm.synthesis.organs import LABEL_MAP
from organfm.synthesis.pairs import RaSDPairs

__all__ = ["NIFTI_AFFINE", "export_pairs", "label_palette", "save_nifti", "save_preview"]

MANIFEST = "manifest.csv"
PREVIEW = "preview.png"
MANIFEST_FIELDS = ("index", "image", "label", "dim", "size", "num_labels", "labels_present", "seed")

# Array axes (D, H, W) -> (superior, posterior, patient left): organfm's NiftiReader displays a
# volume in exactly this orientation, so reading a written volume returns the array unchanged.
NIFTI_AFFINE = np.array([[0.0, 0.0, -1.0, 0.0], [0.0, -1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


def export_pairs(out_dir: str | Path, *, n: int, dim: int = 2, size: int = 64, seed: int = 0,
                 num_labels: int | None = None, preview: bool = False, num_workers: int = 0,
                 progress: bool = True) -> Path:
    """Write items ``0 .. n-1`` of ``RaSDPairs`` (the online trainer's stream for ``seed``) to ``out_dir``.

    Layout: ``images/rasd_<index>.{png,nii.gz}``, ``labels/rasd_<index>.{png,nii.gz}``,
    ``manifest.csv`` and, with ``preview``, ``preview.png`` (see ``save_preview``).

    Args:
        out_dir: Output folder (created; files of the same names are overwritten).
        n: Number of pairs.
        dim: 2 (PNG) or 3 (NIfTI).
        size: Side S of the square / cubic images.
        seed: Seed of the stream; the same seed writes byte-identical files.
        num_labels: K; ``None`` gives S//32 in 2D and S//16 in 3D (at least 2).
        preview: Also write a grid of images and label maps.
        num_workers: Worker processes generating pairs (the files do not depend on it).
        progress: Show a progress bar on stderr.

    Returns:
        The manifest path.
    """
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    pairs = RaSDPairs((size,) * dim, num_labels=num_labels, seed=seed)
    suffix = ".png" if dim == 2 else ".nii.gz"
    rows, shown = [], []
    for item in _progress(_generate(pairs, n, num_workers), n, enabled=progress):
        index = int(item[INDEX])
        name = f"rasd_{index:06d}{suffix}"
        image, labels = item[IMAGE][0].numpy(), item[LABEL_MAP][0].numpy()
        if dim == 2:
            _save_png(np.round(image * 255.0).astype(np.uint8), out / "images" / name)
            _save_png(labels.astype(np.uint8 if pairs.num_labels <= 256 else np.uint16), out / "labels" / name)
        else:
            save_nifti(image.astype(np.float32), out / "images" / name)
            save_nifti(labels.astype(np.uint8 if pairs.num_labels <= 256 else np.int16), out / "labels" / name)
        rows.append({"index": index, "image": f"images/{name}", "label": f"labels/{name}", "dim": dim, "size": size,
                     "num_labels": pairs.num_labels, "labels_present": int(np.unique(labels).size), "seed": seed})
        if preview and len(shown) < 16:
            shown.append((item[IMAGE], item[LABEL_MAP]))
    manifest = out / MANIFEST
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    if preview:
        save_preview([img for img, _ in shown], [lab for _, lab in shown], out / PREVIEW,
                     num_labels=pairs.num_labels)
    return manifest


def save_nifti(array: np.ndarray, path: str | Path, *, affine: np.ndarray = NIFTI_AFFINE) -> None:
    """Write a (D, H, W) array as ``.nii.gz`` (1 mm voxels) with a deterministic gzip stream.

    Args:
        array: (D, H, W) voxels in organfm's display orientation.
        path: Destination ending in ``.nii.gz``.
        affine: Voxel-to-world matrix; the default makes organfm's ``NiftiReader`` return ``array``.
    """
    import nibabel as nib

    image = nib.Nifti1Image(np.ascontiguousarray(array), affine)
    image.header.set_xyzt_units("mm")
    raw = image.to_bytes()
    def write(f: BinaryIO) -> None:
        # filename="" and mtime=0: the gzip header then holds no name and no timestamp.
        with gzip.GzipFile(filename="", mode="wb", fileobj=f, compresslevel=6, mtime=0) as gz:
            gz.write(raw)

    write_atomic(path, write)


def label_palette(num_labels: int) -> np.ndarray:
    """Fixed, well-separated RGB colours, one per label: hues stepped by the golden angle.

    Args:
        num_labels: K.

    Returns:
        uint8 array (K, 3).
    """
    import colorsys

    colours = [colorsys.hsv_to_rgb((k * 0.618033988749895) % 1.0, 0.65 if k % 2 else 0.9, 0.95 if k % 3 else 0.75)
               for k in range(num_labels)]
    return np.round(np.array(colours) * 255).astype(np.uint8)


def save_preview(images: Sequence[torch.Tensor], label_maps: Sequence[torch.Tensor], path: str | Path, *,
                 num_labels: int, columns: int = 8, tile: int = 128) -> Path:
    """A grid PNG: each image above its colour-coded label map (3D: the middle axial slice).

    Args:
        images: Images (1, *S) in [0, 1].
        label_maps: int64 label maps (1, *S), one per image.
        path: Destination PNG.
        num_labels: K, for the palette.
        columns: Pairs per row.
        tile: Side of each tile in pixels (nearest-neighbour upscaling).

    Returns:
        ``path``.
    """
    from PIL import Image

    if len(images) != len(label_maps) or not images:
        raise ValueError("save_preview needs as many label maps as images, and at least one")
    palette = label_palette(num_labels)
    columns = min(columns, len(images))
    rows = -(-len(images) // columns)
    gap = 4
    canvas = Image.new("RGB", (columns * (tile + gap) + gap, rows * 2 * (tile + gap) + gap), (255, 255, 255))
    for i, (image, labels) in enumerate(zip(images, label_maps)):
        image2d, labels2d = _middle_slice(image), _middle_slice(labels)
        grey = np.round(image2d.clamp(0, 1).numpy() * 255).astype(np.uint8)
        tiles = (Image.fromarray(grey, "L").convert("RGB"), Image.fromarray(palette[labels2d.numpy()], "RGB"))
        x = gap + (i % columns) * (tile + gap)
        y = gap + (i // columns) * 2 * (tile + gap)
        for row, picture in enumerate(tiles):
            canvas.paste(picture.resize((tile, tile), Image.NEAREST), (x, y + row * (tile + gap)))
    canvas.save(path, format="PNG")
    return Path(path)


def _middle_slice(x: torch.Tensor) -> torch.Tensor:
    """(1, H, W) -> (H, W); (1, D, H, W) -> its middle axial slice (H, W)."""
    x = x[0]
    return x[x.shape[0] // 2] if x.dim() == 3 else x


def _save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    # PIL writes no time or text chunks by default: the bytes depend on the pixels only.
    Image.fromarray(array).save(path, format="PNG")


def _generate(pairs: RaSDPairs, n: int, num_workers: int) -> Iterable[dict[str, Any]]:
    if num_workers <= 0:
        return (pairs[i] for i in range(n))
    return DataLoader(pairs, batch_size=None, sampler=range(n), num_workers=num_workers)


def _progress(items: Iterable[dict[str, Any]], total: int, *, enabled: bool) -> Iterator[dict[str, Any]]:
    """Pass ``items`` through, advancing a rich progress bar on stderr."""
    if not enabled:
        yield from items
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("[bold]synth"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("synth", total=total)
        for item in items:
            yield item
            bar.advance(task)

