"""``organfm embed --model SPEC data=... --out DIR [data.key=value ...]``: one model's features of a dataset."""
from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

__all__ = ["add_parser"]

_HELP = """Write one model's pooled features of every image of a dataset as .npy shards plus index.json (the
model's identity and data contract, the data identity, the image count and a hash of the images). SPEC: a run
folder, an export folder, a .safetensors file with its contract JSON, random:<arch> or timm:<arch>:<weights>.
The data is any data.source (folder, manifest, .npz, .tar/.tar.gz, synthetic) with data.* overrides, e.g.
data=../shared/data/mednist/MedNIST.tar.gz data.split=null. A second call reuses every finished shard and
rewrites nothing; an interrupted call resumes; shards whose images, labels or settings changed, or whose
file is damaged, are recomputed (--on-change error refuses changed images instead). With data.on_error=skip
an unreadable image's row is zeros, flagged in index.csv and counted. DIR must be new, empty or an earlier
organfm embed folder; one organfm embed at a time writes it. For a model trained with texts (clip, mmkd
with texts), --joint adds joint-images.npy (each image in the model's image-text space) and --texts MODE joint-texts.npy (each image's
text: a manifest text column, or a caption templated from organ and modality)."""


def _embed(args: argparse.Namespace) -> int:
    from organfm.config import Config, ConfigError, apply_overrides, parse_overrides
    from organfm.evaluation.embed import is_features_folder, open_features_folder
    from organfm.outputs import FolderLock, check_output_folder

    overrides = parse_overrides(args.overrides)
    bad = [k for k in overrides if k != "data" and not k.startswith("data.")]
    if bad:
        raise ConfigError(f"organfm embed takes data.* keys only, not {', '.join(bad)}")
    cfg = apply_overrides(Config(), overrides)
    check_output_folder(args.out, "embed", recognise=is_features_folder)  # a refusal writes nothing, not a lock
    with FolderLock(args.out, "embed"):  # two embeds into one folder would interleave two models' shards
        open_features_folder(args.out)  # marked before skips/ is written into it
        return _embed_locked(args, cfg)


def _embed_locked(args: argparse.Namespace, cfg: Any) -> int:
    from organfm.batches.views import build_image_dataset
    from organfm.evaluation.embed import embed_dataset

    dataset = build_image_dataset(cfg.data, skip_log_dir=f"{args.out}/skips")
    joint_wanted, texts = args.joint or args.texts != "none", None
    if joint_wanted:  # a model without a text tower, or an empty text, fails before any image is embedded
        from organfm.batches.texts import dataset_texts
        from organfm.evaluation.models import load_encoder

        if "text" not in load_encoder(args.model, image_size=args.image_size)[1]:
            raise ValueError(f"--joint/--texts: {args.model} has no text tower (export/text/); only models trained "
                             "with texts (method imagetext, or mmkd with texts) have a joint image-text space")
        texts = dataset_texts(dataset, mode=args.texts, column=args.text_column, modality=args.caption_modality,
                              where=str(cfg.data.source))
    result = embed_dataset(args.model, dataset, args.out, data_identity=asdict(cfg.data), shard_size=args.shard_size,
                           batch_size=args.batch_size, image_size=args.image_size, device=args.device,
                           seed=args.seed, on_change=args.on_change,
                           log=None if args.quiet else lambda line: print(line, flush=True))
    print(result.line(), flush=True)
    if joint_wanted:
        from organfm.evaluation.joint import embed_joint

        joint = embed_joint(args.out, texts=texts)
        made = "joint-images.npy" + (" and joint-texts.npy" if texts is not None else "")
        print(f"{args.out}: {made} {'reused' if joint['reused'] else 'written'}", flush=True)
    return 0


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``embed`` on the top-level subparsers."""
    p = sub.add_parser("embed", help="write one model's features of a dataset (sharded, resumable)",
                       description=_HELP)
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
    p.add_argument("--joint", action="store_true", help="also each image in the model's joint image-text space")
    p.add_argument("--texts", choices=("none", "auto", "column", "captions"), default="none",
                   help="also each image's text in the joint space (implies --joint)")
    p.add_argument("--text-column", default="text", help="the manifest column of each image's text")
    p.add_argument("--caption-modality", default="medical", help="modality word of templated captions")
    p.add_argument("overrides", nargs="*", metavar="data.key=value")
    p.set_defaults(func=_embed)
    return p
