"""``organfm cache``: decode a data source once into the uint8 shard format that training memory-maps.

    organfm cache data=path/to/images --out cache/mednist-64 --size 64
    organfm pretrain --method coda data=cache/mednist-64 views.on_device=true

A second call with an unchanged source (same ``data.*`` settings, same files, sizes and mtimes) reuses the
folder; a changed source is cached again (its content hash changes with it).

``--out`` is only ever an earlier cache (or a new or empty folder): a folder of images or a run folder is
refused and left as it is. The new cache is written into ``<out>.partial`` and renamed into place, so a
failure (a full disk included) keeps the previous cache and leaves no partial folder. With
``data.on_error=skip`` an unreadable image is left out of the cache and counted, never replaced by another.
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

    ``out`` must be absent, empty or an earlier cache; a folder of images, a run folder or any other folder
    is refused and left as it is, and so is a folder inside the source (the cache would become part of
    its own source). One ``organfm cache`` at a time writes ``out`` (:class:`organfm.outputs.FolderLock`).

    Args:
        data: a ``DataConfig``.
        out: the shard folder.
        size: side of the stored square images (default: the first image's height).
        force: rebuild even when the fingerprint matches.
        verify: on reuse, recompute the content hash of the stored arrays.
        progress: print progress lines.

    Returns:
        (``meta.json`` content, whether the folder was reused).

    Raises:
        OutputFolderError: ``out`` is a file, a folder ``organfm cache`` did not write, or inside the source.
        FolderBusy: another ``organfm cache`` is writing ``out``.
        DiskFullError: the device of ``out`` is full (the previous ``out`` is kept as it was).
    """
    from organfm.batches.views import build_image_dataset
    from organfm.data.shards import FORMAT, ShardDataset, is_shard_dir, source_fingerprint, write_shards
    from organfm.outputs import FolderLock, OutputFolderError, StagedFolder, check_output_folder

    out = Path(out)
    if data.source != "synthetic" and is_shard_dir(data.source):
        raise ValueError(f"{data.source} is already a shard cache: train on it directly")
    if data.source != "synthetic" and Path(data.source).exists():
        source = Path(data.source).resolve()
        if out.resolve() == source or source in out.resolve().parents:
            raise OutputFolderError(f"--out {out} is inside the data source {data.source}: the cache would replace "
                                    "or join its own images; choose a folder outside the source")
    check_output_folder(out, "cache", recognise=is_shard_dir)  # before the lock: a refusal leaves no lock file
    settings = {**asdict(data), "cache_size": size}
    with FolderLock(out, "cache"):
        owned = check_output_folder(out, "cache", recognise=is_shard_dir)
        fingerprint = source_fingerprint(settings, None if data.source == "synthetic" else data.source)
        if owned and is_shard_dir(out) and not force:
            meta = json.loads((out / "meta.json").read_text())
            if meta.get("source_fingerprint") == fingerprint:
                if verify:
                    ShardDataset(out, verify=True)
                return meta, True
        contract = {"mode": data.intensity, "window": data.window, "source": data.source, "settings": settings}
        with StagedFolder(out, "cache", recognise=is_shard_dir, facts={"format": FORMAT}) as tmp:
            # skips are logged inside the new folder, so they move into place with it
            dataset = build_image_dataset(data, skip_log_dir=str(tmp / "skips"))
            at_index = int(getattr(dataset, "summary", dict)().get("skipped_at_index", 0) or 0)
            meta = write_shards(dataset, tmp, size=size, contract=contract, fingerprint=fingerprint,
                                progress=progress, skipped_at_index=at_index)
        return meta, False


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
    skipped = meta.get("skipped", 0)
    skips = f", {skipped} unreadable, skipped: see {Path(args.out) / 'skips'}/" if skipped else ""
    print(f"{'reused' if reused else 'cached'} {meta['num_items']} images of {shape} uint8 in {args.out} "
          f"({len(meta['organs'])} organs{skips}, content hash {meta['content_hash'][:16]}); train with "
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
