"""``organfm cache``: decode a data source once into the uint8 shard format that training memory-maps.

    organfm cache data=path/to/images --out cache/mednist-64 --size 64
    organfm pretrain --method coda data=cache/mednist-64 views.on_device=true

A second call with an unchanged source (same ``data.*`` settings, same files, sizes and mtimes) reuses the
folder; a changed source is cached again (its content hash changes with it).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "cache"]


def cache(data, out: str | Path, *, size: int | None = None, force: bool = False, verify: bool = False,
          progress: bool = False) -> tuple[dict[str, Any], bool]:
    """Cache the ``data.*`` section's source into the shard folder ``out``, or reuse it.

    Args:
        data: a ``DataConfig``.
        out: the shard folder.
        size: side of the stored square images (default: the first image's height).
        force: rebuild even when the fingerprint matches.
        verify: on reuse, recompute the content hash of the stored arrays.
        progress: print progress lines.

    Returns:
        (``meta.json`` content, whether the folder was reused).
    """
    from organfm.batches.views import build_image_dataset
    from organfm.data.shards import ShardDataset, build_shards, is_shard_dir, source_fingerprint

    if data.source != "synthetic" and is_shard_dir(data.source):
        raise ValueError(f"{data.source} is already a shard cache: train on it directly")
    settings = {**asdict(data), "cache_size": size}
    fingerprint = source_fingerprint(settings, None if data.source == "synthetic" else data.source)
    if is_shard_dir(out) and not force:
        meta = json.loads((Path(out) / "meta.json").read_text())
        if meta.get("source_fingerprint") == fingerprint:
            if verify:
                ShardDataset(out, verify=True)
            return meta, True
    dataset = build_image_dataset(data)
    contract = {"mode": data.intensity, "window": data.window, "source": data.source, "settings": settings}
    return build_shards(dataset, out, size=size, contract=contract, fingerprint=fingerprint, progress=progress), False


def _cache(args: argparse.Namespace) -> int:
    from organfm.config import ConfigError, load_config, parse_overrides

    other = [k for k in parse_overrides(args.overrides) if k != "data" and not k.startswith("data.")]
    if other:
        raise ConfigError(f"organfm cache reads only data.* settings, not {', '.join(other)}")
    data = load_config(None, None, args.overrides).data
    source = Path(data.source)
    if data.source != "synthetic" and source.exists():
        data.source = str(source.resolve())
    meta, reused = cache(data, args.out, size=args.size, force=args.force, verify=args.verify,
                         progress=not args.no_progress)
    shape = "x".join(map(str, meta["shape"]))
    print(f"{'reused' if reused else 'cached'} {meta['num_items']} images of {shape} uint8 in {args.out} "
          f"({len(meta['organs'])} organs, content hash {meta['content_hash'][:16]}); train with "
          f"data={args.out} views.on_device=true", flush=True)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``cache`` on the top-level subparsers."""
    p = sub.add_parser("cache", help="decode a data source once into memory-mapped uint8 shards",
                       description="Decode every image of data=... once (intensity scaling as data.* says), resize "
                                   "it to SIZE x SIZE and store uint8 arrays, organ ids, the data contract and a "
                                   "content hash in OUT. Reused while the source is unchanged.")
    p.add_argument("overrides", nargs="*", metavar="data.key=value", help="data=PATH and other data.* settings")
    p.add_argument("--out", required=True, help="the shard folder")
    p.add_argument("--size", type=int, default=None, help="side of the stored images (default: the first image's)")
    p.add_argument("--force", action="store_true", help="rebuild even if the source looks unchanged")
    p.add_argument("--verify", action="store_true", help="on reuse, recompute the stored content hash")
    p.add_argument("--no-progress", action="store_true", help="no progress lines")
    p.set_defaults(func=_cache)
    return p
