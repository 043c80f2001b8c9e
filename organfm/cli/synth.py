"""``organfm synth``: write RaSD image/label-map pairs to disk (the offline mode of the synthesis engine)."""
from __future__ import annotations

import argparse

__all__ = ["add_parser"]


def _synth(args: argparse.Namespace) -> int:
    from organfm.synthesis import export_pairs

    manifest = export_pairs(args.out, n=args.n, dim=args.dim, size=args.size, seed=args.seed,
                            num_labels=args.num_labels, preview=args.preview, num_workers=args.workers,
                            progress=not args.no_progress)
    extra = f", preview {manifest.parent / 'preview.png'}" if args.preview else ""
    print(f"wrote {args.n} {args.dim}D pairs of {args.size}^{args.dim} to {manifest.parent} "
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
