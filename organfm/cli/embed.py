"""``organfm embed --model SPEC data=... --out DIR [data.key=value ...]``: one model's features of a dataset."""
from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser"]

_HELP = """Write one model's pooled features of EVERY image of a dataset (data.split=all by default; exact
duplicates are embedded and marked, never dropped) as .npy shards, plus index.csv (one line per row: its path
relative to the data root, organ, label, split, duplicate_of) and index.json (the model's identity and data
contract, the data identity, the image count and a hash of the images). SPEC: a run folder, an export folder,
a .safetensors file with its contract JSON, random:<arch> or timm:<arch>:<weights>. The data is any data.source
(folder, manifest, .npz, .tar/.tar.gz, synthetic) with data.* overrides. A second call reuses every finished
shard and rewrites nothing; an interrupted call (Ctrl-C, SIGTERM from a cluster) stops at a shard boundary and
resumes when run again; shards whose images, labels or settings changed, or whose file is damaged, are
recomputed (--on-change error refuses changed images instead). With data.on_error=skip an unreadable image's
row is zeros, flagged in index.csv and counted. DIR must be new, empty or an earlier organfm embed folder; one
organfm embed at a time writes it. For a model trained with texts (imagetext, mmkd with texts), --joint adds
joint-images.npy (each image in the model's image-text space) and --texts MODE joint-texts.npy (each image's
text: a manifest text column, or a caption templated from organ and modality).

examples:
  organfm embed --model runs/coda-x --out feats/coda data=images/
  organfm embed --model runs/coda-x --out feats/coda data=images/ --format csv
  organfm embed --model random:convnext_atto --image-size 64 --out feats/scratch data=MedNIST.tar.gz data.split=test"""


def _embed(args: argparse.Namespace) -> int:
    from organfm.api import embed

    formats = ["npy"] + [f for f in (args.format or []) if f != "npy"]
    result = embed(args.model, None, args.out, args.overrides, formats=formats, joint=args.joint, texts=args.texts,
                   text_column=args.text_column, caption_modality=args.caption_modality,
                   log=None if args.quiet else lambda line: print(line, flush=True), shard_size=args.shard_size,
                   batch_size=args.batch_size, image_size=args.image_size, device=args.device, seed=args.seed,
                   on_change=args.on_change)
    print(result.line(), flush=True)
    return 143 if result.interrupted else 0  # 128 + SIGTERM: a scheduler sees a stopped, resumable job


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``embed`` on the top-level subparsers."""
    p = sub.add_parser("embed", help="write one model's features of a dataset (sharded, resumable)",
                       description=_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="SPEC", help="run folder, export, random:<arch>, timm:<arch>:<file>")
    p.add_argument("--out", required=True, metavar="DIR", help="features folder (e.g. feats/coda)")
    p.add_argument("--image-size", type=int, default=None,
                   help="input size when the model has no contract (random:/timm: specs; default: native size)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--shard-size", type=int, default=4096, help="images per .npy shard")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed of random:<arch>")
    p.add_argument("--on-change", choices=("recompute", "error"), default="recompute",
                   help="stored shards whose images changed: recompute them (default) or stop with an error")
    p.add_argument("--quiet", action="store_true", help="no line per shard")
    p.add_argument("--format", action="append", choices=("npy", "csv", "parquet"), default=None,
                   help="also write the ids and features as one table: features.csv, or features.parquet (needs "
                        "pyarrow); repeatable. The .npy shards and index.csv are always written")
    p.add_argument("--joint", action="store_true", help="also each image in the model's joint image-text space")
    p.add_argument("--texts", choices=("none", "auto", "column", "captions"), default="none",
                   help="also each image's text in the joint space (implies --joint)")
    p.add_argument("--text-column", default="text", help="the manifest column of each image's text")
    p.add_argument("--caption-modality", default="medical", help="modality word of templated captions")
    p.add_argument("overrides", nargs="*", metavar="data.key=value")
    p.set_defaults(func=_embed)
    return p
