"""One model's features for a whole image set, written as resumable shards (``organfm embed``).

Layout of an output folder::

    index.json           the model identity and contract, the data identity, the image count, the image-set
                         hash and one entry per shard (file, item range, hash of its images, organ ids)
    shard-00000.npy      (n, E) float32 features of items [start, stop), in dataset order
    ...

The image-set hash is a blake2b digest of every image's pixels and shape as the dataset returns them
(before any resize), so it names the images, not the model: two models' folders of one dataset carry the
same hash, and a stored folder can be checked against a dataset without running any model.

Reuse and resume: a shard whose file exists and whose images hash as recorded is kept without running the
model; a killed call keeps its finished shards. A shard whose images changed is recomputed (and counted in
:class:`EmbedResult`); ``on_change="error"`` raises instead. A folder that holds another model's features is
never overwritten.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from organfm.data.errors import DataError

__all__ = ["EmbedResult", "embed_dataset", "image_digests", "load_features", "set_hash", "write_atomic", "INDEX_FILE"]

INDEX_FILE = "index.json"
FORMAT = "organfm-features"


@dataclass
class EmbedResult:
    """What one :func:`embed_dataset` call did.

    Attributes:
        out_dir: the features folder.
        num_images: N.
        feature_dim: E.
        image_hash: hash of the image set.
        written: shards computed by this call.
        reused: shards kept from an earlier call.
        changed: of ``written``, shards recomputed because their images changed.
    """

    out_dir: Path
    num_images: int
    feature_dim: int
    image_hash: str
    written: int
    reused: int
    changed: int


def image_digest(image: torch.Tensor) -> bytes:
    """16-byte digest of one image's shape and float32 pixels."""
    a = np.ascontiguousarray(image.detach().cpu().numpy().astype(np.float32, copy=False))
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(list(a.shape)).encode())
    h.update(a.tobytes())
    return h.digest()


def set_hash(digests: Iterable[bytes]) -> str:
    """Hex hash of an ordered list of image digests (a shard's, or the whole set's)."""
    h = hashlib.blake2b(digest_size=16)
    for d in digests:
        h.update(d)
    return h.hexdigest()


def image_digests(dataset: Any, start: int = 0, stop: int | None = None) -> list[bytes]:
    """Digests of items ``[start, stop)`` of a dataset whose items hold ``"image"`` (reads every image)."""
    stop = len(dataset) if stop is None else stop
    return [image_digest(dataset[i]["image"]) for i in range(start, stop)]


def _resize(image: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or tuple(image.shape[1:]) == (size,) * (image.ndim - 1):
        return image
    mode = "bilinear" if image.ndim == 3 else "trilinear"
    out = F.interpolate(image[None].float(), size=(size,) * (image.ndim - 1), mode=mode, align_corners=False,
                        antialias=image.ndim == 3)[0]
    return out.clamp(0.0, 1.0)


def _read_index(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable features index ({type(e).__name__}: {e}); delete the folder to "
                        "recompute") from e
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise DataError(f"{path}: not an organfm features index (format {index.get('format')!r})")
    return index


def write_atomic(path: Path, write: Callable[[Any], None], binary: bool = True) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp makes owner-only files; features are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_index(path: Path, index: dict[str, Any]) -> None:
    write_atomic(path, lambda f: f.write(json.dumps(index, indent=1)), binary=False)


def embed_dataset(spec: str, dataset: Any, out_dir: str | os.PathLike[str], *, data_identity: dict[str, Any]
                  | None = None, shard_size: int = 4096, batch_size: int = 128, image_size: int | None = None,
                  device: str = "cpu", seed: int = 0, on_change: str = "recompute",
                  log: Callable[[str], None] | None = None) -> EmbedResult:
    """Write (or complete, or reuse) the features of ``spec`` for every item of ``dataset``.

    Args:
        spec: a model spec of :func:`organfm.evaluation.models.load_encoder` (run, export, ``random:<arch>``,
            ``timm:<arch>:<file>``).
        dataset: items ``{"image": (C, H, W) in [0, 1], "organ": int}``; ``organs`` attribute if any.
        out_dir: the features folder.
        data_identity: what the data is (e.g. the ``data.*`` section), recorded in the index.
        shard_size: items per shard file.
        batch_size: images per forward pass.
        image_size: input size S when the model's contract has none (``random:``/``timm:`` specs); the
            contract's own ``input_size`` wins otherwise. Images are resized to S x S (bilinear, antialiased).
        device: where the model runs.
        seed: initialisation seed of ``random:`` specs.
        on_change: a stored shard whose images changed: ``"recompute"`` it, or ``"error"``.
        log: receives one line per written shard.

    Returns:
        :class:`EmbedResult`.

    Raises:
        ValueError: ``out_dir`` holds another model's features, or images changed with ``on_change="error"``.
    """
    from organfm.evaluation.features import extract_features
    from organfm.evaluation.models import load_encoder

    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size and batch_size must be >= 1, got {shard_size} and {batch_size}")
    if on_change not in ("recompute", "error"):
        raise ValueError(f"on_change must be 'recompute' or 'error', got {on_change!r}")
    make, contract = load_encoder(spec, image_size=image_size, seed=seed)
    size = (contract.get("input_size") or [None])[-1] or image_size
    out = Path(out_dir)
    index_path = out / INDEX_FILE
    old = _read_index(index_path)
    if old is not None and old.get("model", {}).get("model_hash") != contract["model_hash"]:
        raise ValueError(f"{out} holds the features of another model ({old['model'].get('spec')}); "
                         f"choose another --out for {spec}, or delete {out}")
    old_shards = {(s["start"], s["stop"]): s for s in (old or {}).get("shards", [])}
    n = len(dataset)
    if n == 0:
        raise DataError(f"{data_identity or dataset}: no images to embed")
    model_info = {k: contract.get(k) for k in ("spec", "architecture", "model_hash", "weights", "method", "mean",
                                               "std", "input_size", "intensity", "organs")}
    model_info["input_size"] = [1, size, size] if size else contract.get("input_size")
    index: dict[str, Any] = {"format": FORMAT, "version": 1, "model": model_info,
                             "data": {"identity": data_identity or {}, "organs": list(getattr(dataset, "organs", []))},
                             "num_images": n, "feature_dim": None, "image_hash": None, "shards": [], "complete": False}
    backbone = None
    all_digests: list[bytes] = []
    written = reused = changed = 0
    for start in range(0, n, shard_size):
        stop = min(n, start + shard_size)
        items = [dataset[i] for i in range(start, stop)]
        digests = [image_digest(item["image"]) for item in items]
        all_digests += digests
        shard_hash = set_hash(digests)
        name = f"shard-{start // shard_size:05d}.npy"
        prev = old_shards.get((start, stop))
        if prev is not None and prev["image_hash"] == shard_hash and (out / prev["file"]).is_file():
            index["shards"].append(prev)
            index["feature_dim"] = prev["feature_dim"]
            reused += 1
            continue
        if prev is not None and prev["image_hash"] != shard_hash:
            if on_change == "error":
                raise ValueError(f"{out / prev['file']}: the images of items {start}-{stop - 1} changed since "
                                 "these features were written (image hash differs)")
            changed += 1
        if backbone is None:
            backbone = make()
        images = torch.stack([_resize(item["image"], size) for item in items])
        feats = extract_features(backbone, images, batch_size=batch_size, device=device, mean=contract["mean"],
                                 std=contract["std"]).numpy().astype(np.float32)
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / name, lambda f: np.save(f, feats))
        index["shards"].append({"file": name, "start": start, "stop": stop, "image_hash": shard_hash,
                                "feature_dim": int(feats.shape[1]),
                                "organ": [int(item.get("organ", -1)) for item in items]})
        index["feature_dim"] = int(feats.shape[1])
        written += 1
        _write_index(index_path, index)  # a killed call keeps the shards written so far
        if log:
            log(f"{out / name}: items {start}-{stop - 1}, {feats.shape[1]} features")
    index["image_hash"] = set_hash(all_digests)
    index["complete"] = True
    index = json.loads(json.dumps(index))  # as read back, so an unchanged index compares equal
    if written or old != index:  # a second identical call rewrites nothing
        out.mkdir(parents=True, exist_ok=True)
        _write_index(index_path, index)
    return EmbedResult(out_dir=out, num_images=n, feature_dim=int(index["feature_dim"]),
                       image_hash=index["image_hash"], written=written, reused=reused, changed=changed)


def load_features(folder: str | os.PathLike[str], *, who: str = "") -> tuple[torch.Tensor, dict[str, Any]]:
    """All features of a complete features folder, checked.

    Args:
        folder: an :func:`embed_dataset` output folder.
        who: prefix of error messages (e.g. ``"teacher coda: "``).

    Returns:
        ``(features (N, E) float32, index)``.

    Raises:
        DataError: no index, an incomplete folder, a missing shard, a shard whose dimension or row count
            disagrees with the index, or a shard holding NaN/inf; each names the file.
    """
    folder = Path(folder)
    index = _read_index(folder / INDEX_FILE)
    if index is None:
        raise DataError(f"{who}{folder}: no {INDEX_FILE} (not an `organfm embed` output folder)")
    if not index.get("complete"):
        raise DataError(f"{who}{folder / INDEX_FILE}: incomplete features (an interrupted embed); run "
                        "`organfm embed` again to finish it")
    dim = index.get("feature_dim")
    parts = []
    for shard in index["shards"]:
        path = folder / shard["file"]
        try:
            a = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(f"{who}{path}: cannot read features ({type(e).__name__}: {e})") from e
        if a.ndim != 2 or a.shape[1] != dim or a.shape[0] != shard["stop"] - shard["start"]:
            raise DataError(f"{who}{path}: features of shape {tuple(a.shape)}, but the index says "
                            f"({shard['stop'] - shard['start']}, {dim}) (dimension mismatch)")
        if not np.isfinite(a).all():
            bad = int((~np.isfinite(a)).any(axis=1).sum())
            raise DataError(f"{who}{path}: {bad} feature rows hold NaN or inf")
        parts.append(torch.from_numpy(a.astype(np.float32)))
    feats = torch.cat(parts)
    if feats.shape[0] != index["num_images"]:
        raise DataError(f"{who}{folder / INDEX_FILE}: shards hold {feats.shape[0]} rows for {index['num_images']} "
                        "images")
    return feats, index
