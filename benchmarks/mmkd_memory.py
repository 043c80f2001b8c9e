"""Peak memory of MMKD's teacher-feature store at two dataset sizes: it should not grow with the image count.

:func:`peak_rss` runs, in a fresh process, what a distillation run does with teacher features once they are
embedded: K teachers' (N, d) features as ``organfm embed``-style ``.npy`` shards, the projector fit, the organ
filter, the projection written to ``teacher-<k>.npy`` and one pass over every batch item's target
(``organfm.batches.features``). It returns the process's peak resident memory (``ru_maxrss``) and the bytes
one dense (K, N, d) copy of the features would take, for comparison. The image side (views, digests) is not
part of it: images are read per item by the dataset, as before.

    python -m benchmarks.mmkd_memory                   # 8 000 and 80 000 images, d = 512, K = 3
    python -m benchmarks.mmkd_memory 1000 20000 --dim 256
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["peak_rss", "compare"]


def _child(num_images: int, dim: int, teachers: int, embed_dim: int, folder: str, chunk: int) -> dict:
    import resource

    import numpy as np
    import torch

    import organfm.batches.features as features
    from organfm.batches.features import TeacherViewsDataset, _available, _fit, open_targets
    from organfm.features.shards import ShardRows, write_rows

    features.CHUNK = CHUNK = chunk

    torch.set_num_threads(1)
    root = Path(folder)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    feats = []
    for k in range(teachers):  # written chunk by chunk: the writer holds one chunk
        g = torch.Generator().manual_seed(k)
        path = write_rows(root / f"t{k}.npy", num_images, dim, lambda g=g: (
            (s, torch.randn(min(CHUNK, num_images - s), dim, generator=g)) for s in range(0, num_images, CHUNK)))
        feats.append(ShardRows([path]))

    class Organs:  # the dataset's organ ids, as a manifest lists them
        organ_ids = [i % 4 for i in range(num_images)]

        def __len__(self) -> int:
            return num_images

    options = {"embed_dim": embed_dim, "projector_hidden": 256, "projector_noise": 0.01, "projector_dropout": 0.2,
               "projector_steps": 20, "projector_lr": 1e-3, "projector_contrastive": 0.0}
    available = _available("organ", Organs(), feats, [None] * teachers, torch.zeros(num_images), 0)
    _fit(options, 0, [f"t{k}" for k in range(teachers)], feats, [None] * teachers, 0, available, root / "projected",
         chunk=chunk)
    saved = open_targets(root / "projected")

    class Views:  # no images: only the target side of an item
        def __len__(self) -> int:
            return num_images

        def __getitem__(self, key: tuple[int, int]) -> dict:
            return {}

    items = TeacherViewsDataset(Views(), saved["projected"], saved["available"])
    total = 0.0
    for i in range(num_images):
        total += float(items[(i, i)]["teacher"][0])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"num_images": num_images, "dim": dim, "teachers": teachers, "peak_rss_mb": peak / 1024,
            "growth_mb": (peak - base) / 1024, "dense_features_mb": teachers * num_images * dim * 4 / 2**20,
            "checksum": total if np.isfinite(total) else None}


def peak_rss(num_images: int, *, dim: int = 512, teachers: int = 3, embed_dim: int = 128, chunk: int = 4096,
             folder: str | Path | None = None) -> dict:
    """Run the feature store on ``num_images`` synthetic images in a fresh process; its peak RSS and more.

    Args:
        num_images: N.
        dim: d, each teacher's feature width.
        teachers: K.
        embed_dim: D of the projected targets.
        chunk: rows read, filtered or projected at a time (``organfm.batches.features.CHUNK``); memory is flat
            in N only above it.
        folder: where the shards go (a temporary folder by default; removed after).

    Returns:
        ``{"num_images", "peak_rss_mb", "growth_mb" (peak minus the peak after the imports),
        "dense_features_mb" (one dense (K, N, d) float32 copy), ...}``.
    """
    import tempfile

    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        code = ("import json, sys; from benchmarks.mmkd_memory import _child; "
                f"print(json.dumps(_child({int(num_images)}, {int(dim)}, {int(teachers)}, {int(embed_dim)}, "
                f"{str(tmp)!r}, {int(chunk)})))")
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parents[1],
                             # a fixed mmap threshold: glibc's adaptive one lets freed chunk buffers grow the heap
                             # (bounded, but it blurs what the code itself holds)
                             env={**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": str(1 << 20)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(sizes: tuple[int, int] = (8000, 80000), **kwargs) -> list[dict]:
    """:func:`peak_rss` at each size (the benchmark reports both, with the dense size for comparison)."""
    return [peak_rss(n, **kwargs) for n in sizes]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("sizes", nargs="*", type=int, default=[8000, 80000])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--teachers", type=int, default=3)
    a = p.parse_args(argv)
    for r in compare(tuple(a.sizes), dim=a.dim, teachers=a.teachers):
        print(f"N = {r['num_images']:>7}: peak RSS {r['peak_rss_mb']:.0f} MB (+{r['growth_mb']:.0f} MB after "
              f"imports); one dense copy of the features would be {r['dense_features_mb']:.0f} MB")


if __name__ == "__main__":
    main()
