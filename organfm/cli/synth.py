"""``organfm synth``: write RaSD image/label-map pairs to disk (the offline mode of the synthesis engine).

``--out`` is a new or empty folder or an earlier ``organfm synth`` output, which is replaced whole (through
``<out>.partial``); any other folder is refused and left as it is.
"""
from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser"]


def _is_synth_folder(folder: Path) -> bool:
    """A folder written by ``organfm synth`` before output markers existed: its manifest has synth's columns."""
    from organfm.synthesis.export import MANIFEST, MANIFEST_FIELDS

    try:
        with open(folder / MANIFEST, encoding="utf-8") as f:
            return f.readline().strip() == ",".join(MANIFEST_FIELDS)
    except (OSError, UnicodeDecodeError):
        return False


def _synth(args: argparse.Namespace) -> int:
    from organfm.outputs import FolderLock, StagedFolder, check_output_folder
    from organfm.synthesis import export_pairs
    from organfm.synthesis.export import MANIFEST

    out = Path(args.out)
    check_output_folder(out, "synth", recognise=_is_synth_folder)  # a refusal writes nothing, not even a lock
    # a new set replaces an earlier one whole: files of a larger earlier --n must not linger
    with FolderLock(out, "synth"), StagedFolder(out, "synth", recognise=_is_synth_folder) as tmp:
        export_pairs(tmp, n=args.n, dim=args.dim, size=args.size, seed=args.seed, num_labels=args.num_labels,
                     preview=args.preview, num_workers=args.workers, progress=not args.no_progress)
    manifest = out / MANIFEST
    extra = f", preview {out / 'preview.png'}" if args.preview else ""
    print(f"wrote {args.n} {args.dim}D pairs of {args.size}^{args.dim} to {out} "
          f"(manifest {manifest}{extra})", flush=True)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``synth`` on the top-level subparsers."""
    p = sub.add_parser("synth", help="write synthetic RaSD image/label pairs (PNG or NIfTI + manifest)",
                       description="Write N random RaSD image/label-map pairs: PNG in 2D, NIfTI (.nii.gz) in 3D, "
                                   "listed in manifest.csv. The same seed writes byte-identical files; item i is "
                                   "the pair the online trainer (organfm pretrain --method rasd) draws at index i.")
    p.add_argument("--n", type=int, required=True, help="number of pairs")
    p.add_argument("--dim", type=int, choices=(2, 3), default=2, help="2: PNG images, 3: NIfTI volumes")
    p.add_argument("--size", type=int, default=64, help="side length S (S^2 images or S^3 volumes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-labels", type=int, default=None, help="labels K (default: S//32 in 2D, S//16 in 3D)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--preview", action="store_true", help="also write preview.png: images above their label maps")
    p.add_argument("--workers", type=int, default=0, help="generator processes (the files do not depend on it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_synth)
    return p
