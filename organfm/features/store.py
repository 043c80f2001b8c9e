"""One model's features for a whole image set, written as resumable shards (``organfm embed``).

Layout of an output folder::

    .organfm-output      the marker that makes the folder ``organfm embed``'s own (``organfm.outputs``)
    index.json           the model identity and contract, the data identity, the image count, the image-set
                         hash, the skipped rows and one entry per shard (file, item range, hash of its images,
                         reuse key, size and hash of the file, organ ids)
    index.csv            one line per image: row, shard, path (relative to the data root), organ, organ id,
                         label, split, skipped, duplicate_of (the first row with the same bytes; duplicates
                         are embedded, never dropped), and the source key
    shard-00000.npy      (n, E) float32 features of items [start, stop), in dataset order
    ...

The image-set hash is a blake2b digest of every image's pixels and shape as the dataset returns them
(before any resize), so it names the images, not the model: two models' folders of one dataset carry the
same hash, and a stored folder can be checked against a dataset without running any model.

Reuse and resume: a stored shard is kept without running the model only when its *reuse key* matches and
its file is intact. The key covers everything that defines a row: the weights hash, every preprocessing
setting (input size, mean/std, the ``data.*`` section but its path), each image's pixels and file bytes, the
organ and label of each row and which rows were skipped. The file must have the recorded size and hash, the
recorded shape and only finite values; a damaged shard is recomputed, never "reused". A killed call keeps
its finished shards. A shard whose images changed is recomputed (and counted in :class:`EmbedResult`);
``on_change="error"`` raises instead. A folder that holds another model's features, and any folder that
``organfm embed`` did not write, is never overwritten.

Skipped rows (``data.on_error=skip``): an unreadable image's row holds zeros, is flagged in ``index.json``
(``skipped``) and ``index.csv``, and is counted in :class:`EmbedResult`; it never holds the features of the
image the dataset substituted for it.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from organfm.data.dataset import resize_image
from organfm.data.errors import DataError
from organfm.data.records import hash_file
from organfm.features.shards import ShardRows
from organfm.outputs.atomic import write_atomic
from organfm.outputs.folder import MARKER as MARKER_NAME

__all__ = ["EmbedResult", "embed_dataset", "features_key", "image_digests", "is_features_folder", "load_features",
           "open_features", "open_features_folder", "set_hash", "write_atomic", "INDEX_CSV", "INDEX_FILE"]

INDEX_FILE = "index.json"
INDEX_CSV = "index.csv"
FORMAT = "organfm-features"
COMMAND = "embed"
# data.* keys that say where the data is, not what a row holds: moving a folder keeps its features
_LOCATION_KEYS = ("source", "split_file")


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
        rekeyed: of ``written``, shards recomputed because their labels, settings or skipped rows changed.
        repaired: of ``written``, shards recomputed because the stored file was damaged or missing.
        skipped: rows of unreadable images (zeros, flagged in the index).
    """

    out_dir: Path
    num_images: int
    feature_dim: int
    image_hash: str
    written: int
    reused: int
    changed: int
    rekeyed: int = 0
    repaired: int = 0
    skipped: int = 0
    duplicates: int = 0
    interrupted: bool = False

    def line(self) -> str:
        """The one-line summary ``organfm embed`` prints."""
        why = [f"{n} {what}" for n, what in ((self.changed, "their images changed"),
                                             (self.rekeyed, "labels, settings or skipped rows changed"),
                                             (self.repaired, "damaged or missing on disk")) if n]
        recomputed = f" ({'; '.join(why)})" if why else ""
        skipped = (f"; {self.skipped} unreadable, skipped: zero rows flagged in {INDEX_CSV}, see skips/"
                   if self.skipped else "")
        if self.duplicates:
            skipped += f"; {self.duplicates} exact duplicates embedded, marked in {INDEX_CSV} (duplicate_of)"
        if self.interrupted:
            return (f"{self.out_dir}: interrupted after {self.written + self.reused} shards (a stop signal); the "
                    "finished shards are kept: run the same command again to resume")
        return (f"{self.out_dir}: {self.num_images} images x {self.feature_dim} features, image hash "
                f"{self.image_hash[:12]}; {self.written} shards written{recomputed}, {self.reused} reused{skipped}")


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


def _resize_to(image: torch.Tensor, size: int | None) -> torch.Tensor:
    return image if size is None else resize_image(image, size)


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


def _write_index(path: Path, index: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(index, indent=1))


def is_features_folder(folder: Path) -> bool:
    """A folder written by ``organfm embed`` before output markers existed: it has a features index."""
    try:
        return json.loads((folder / INDEX_FILE).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def open_features_folder(out_dir: str | os.PathLike[str]) -> Path:
    """Create ``out_dir`` as an ``organfm embed`` folder, or accept it as one; refuse anything else.

    Raises:
        OutputFolderError: ``out_dir`` is a file or a non-empty folder ``organfm embed`` did not write.
    """
    from organfm.outputs import check_output_folder, disk_full_guard, write_marker

    out = Path(out_dir)
    owned = check_output_folder(out, COMMAND, recognise=is_features_folder)
    if not owned or not (out / MARKER_NAME).is_file():
        with disk_full_guard(out, COMMAND):
            out.mkdir(parents=True, exist_ok=True)
            write_marker(out, COMMAND, format=FORMAT)
    return out


def _intact(path: Path, entry: dict[str, Any]) -> bool:
    """Whether a stored shard file is the one its index entry describes: size, hash, shape, finite values."""
    try:
        if "bytes" in entry and path.stat().st_size != entry["bytes"]:
            return False
        if "file_hash" in entry and hash_file(path) != entry["file_hash"]:
            return False
        a = np.load(path, mmap_mode="r", allow_pickle=False)
        return (a.ndim == 2 and a.shape == (entry["stop"] - entry["start"], entry["feature_dim"])
                and bool(np.isfinite(a).all()))
    except (OSError, ValueError, KeyError):
        return False


def _row_key(settings: str, digests: list[bytes], organs: list[int], labels: list[str], sources: list[str],
             skipped: list[int]) -> str:
    """The reuse key of a shard: everything that defines its rows (see the module docstring)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(settings.encode())
    for d in digests:
        h.update(d)
    h.update(json.dumps([organs, labels, sources, skipped]).encode())
    return h.hexdigest()


def _column(dataset: Any, name: str, n: int) -> list[Any] | None:
    """A per-item attribute of the dataset (``labels``, ``records``) when it has one entry per item."""
    try:
        values = getattr(dataset, name, None)
        return list(values) if values is not None and len(values) == n else None
    except TypeError:
        return None


def _index_csv(rows: list[dict[str, Any]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    fields = ["row", "shard", "path", "organ", "organ_id", "label", "split", "skipped", "duplicate_of", "key"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _data_root(source: Any) -> Path | None:
    """The folder the rows' paths are relative to: the source folder, or the folder of a source file."""
    if not source or source == "synthetic":
        return None
    path = Path(str(source)).expanduser()
    return path if path.is_dir() else path.parent


def _row_ids(record: Any, row: int, root: Path | None, first_of: dict[str, int]) -> dict[str, Any]:
    """``path`` (relative to the data root; ``archive::member`` inside archives), ``split``, ``duplicate_of``."""
    if record is None:
        return {"path": "", "split": "", "duplicate_of": ""}
    path = str(record.path)
    if root is not None:
        try:
            path = Path(path).resolve().relative_to(root.resolve()).as_posix()
        except ValueError:  # outside the root (a manifest's absolute paths): kept as written
            pass
    if record.member is not None:
        path = f"{path}::{record.member}"
    if record.row is not None:
        path = f"{path}[{record.row}]"
    if record.index is not None:
        path = f"{path}#{record.index}"
    digest = getattr(record, "content_hash", "") or ""
    duplicate_of = first_of.setdefault(digest, row) if digest else row
    return {"path": path, "split": record.split or "", "duplicate_of": "" if duplicate_of == row else duplicate_of}


def embed_dataset(spec: str, dataset: Any, out_dir: str | os.PathLike[str], *, data_identity: dict[str, Any]
                  | None = None, shard_size: int = 4096, batch_size: int = 128, image_size: int | None = None,
                  device: str = "cpu", seed: int = 0, on_change: str = "recompute",
                  log: Callable[[str], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> EmbedResult:
    """Write (or complete, or reuse) the features of ``spec`` for every item of ``dataset``.

    Args:
        spec: a model spec of :func:`organfm.features.encoders.load_encoder` (run, export, ``random:<arch>``,
            ``timm:<arch>:<file>``).
        dataset: items ``{"image": (C, H, W) in [0, 1], "organ": int, "index": int}``; ``organs``, ``labels``
            and ``records`` attributes if any. An item whose ``index`` is not the one asked for is the
            substitute of an unreadable one (``on_error="skip"``): its row is zeros and flagged.
        out_dir: the features folder (absent, empty, or an earlier ``organfm embed`` folder).
        data_identity: what the data is (e.g. the ``data.*`` section), recorded in the index; all of it but
            the paths is part of the reuse key.
        shard_size: items per shard file.
        batch_size: images per forward pass.
        image_size: input size S when the model's contract has none (``random:``/``timm:`` specs); the
            contract's own ``input_size`` wins otherwise. Images are resized to S x S (bilinear, antialiased).
        device: where the model runs.
        seed: initialisation seed of ``random:`` specs.
        on_change: a stored shard whose images changed: ``"recompute"`` it, or ``"error"``.
        log: receives one line per written shard.
        should_stop: asked after each shard; True ends the call there (the finished shards and the index are
            kept, ``EmbedResult.interrupted`` is set; a SIGTERM from a cluster, see ``organfm embed``).

    Returns:
        :class:`EmbedResult`.

    Raises:
        ValueError: ``out_dir`` holds another model's features, or images changed with ``on_change="error"``.
        OutputFolderError: ``out_dir`` is a file or a folder ``organfm embed`` did not write.
        DiskFullError: the device of ``out_dir`` is full (the shards finished so far are kept).
    """
    from organfm.features.extraction import extract_features
    from organfm.features.encoders import load_encoder
    from organfm.outputs import check_output_folder, disk_full_guard, require_free_space, write_npy

    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size and batch_size must be >= 1, got {shard_size} and {batch_size}")
    if on_change not in ("recompute", "error"):
        raise ValueError(f"on_change must be 'recompute' or 'error', got {on_change!r}")
    out = Path(out_dir)
    check_output_folder(out, COMMAND, recognise=is_features_folder)  # before the model loads: fail fast
    make, contract = load_encoder(spec, image_size=image_size, seed=seed)
    if len(contract.get("input_size") or []) == 4:  # (C, D, H, W): a volume encoder, and embed feeds 2D images
        raise ValueError(f"{spec} is a 3D model (it reads (C, D, H, W) = {list(contract['input_size'])} volumes); "
                         "organfm embed feeds it 2D images. Embed with a 2D model, or evaluate this one on volumes: "
                         "organfm evaluate with protocols=[finetune3d] or [segmentation3d] "
                         "(e.g. --task configs/tasks/adrenalmnist3d.yaml)")
    size = (contract.get("input_size") or [None])[-1] or image_size
    index_path = out / INDEX_FILE
    old = _read_index(index_path)
    if old is not None and old.get("model", {}).get("model_hash") != contract["model_hash"]:
        raise ValueError(f"{out} holds the features of another model ({old['model'].get('spec')}); "
                         f"choose another --out for {spec}, or delete {out}")
    old_shards = {(s["start"], s["stop"]): s for s in (old or {}).get("shards", [])}
    n = len(dataset)
    if n == 0:
        raise DataError(f"{data_identity or dataset}: no images to embed")
    open_features_folder(out)
    model_info = {k: contract.get(k) for k in ("spec", "architecture", "model_hash", "weights", "method", "mean",
                                               "std", "input_size", "intensity", "organs")}
    model_info["input_size"] = [1, size, size] if size else contract.get("input_size")
    settings = json.dumps({"model_hash": contract["model_hash"], "input_size": model_info["input_size"],
                           "mean": contract.get("mean"), "std": contract.get("std"),
                           "data": {k: v for k, v in (data_identity or {}).items() if k not in _LOCATION_KEYS}},
                          sort_keys=True, default=str)
    organ_names = list(getattr(dataset, "organs", []))
    labels = _column(dataset, "labels", n)
    records = _column(dataset, "records", n)
    root = _data_root((data_identity or {}).get("source"))
    first_of: dict[str, int] = {}  # content hash -> first row: duplicates are embedded, and marked
    index: dict[str, Any] = {"format": FORMAT, "version": 2, "model": model_info,
                             "data": {"identity": data_identity or {}, "organs": organ_names},
                             "num_images": n, "feature_dim": None, "image_hash": None, "shards": [], "skipped": [],
                             "complete": False}
    backbone = None
    all_digests: list[bytes] = []
    rows: list[dict[str, Any]] = []
    written = reused = changed = rekeyed = repaired = 0

    def guard() -> Any:
        return disk_full_guard(out, COMMAND, what="the shards finished so far are kept: run the same command "
                                                  "again to resume")

    for start in range(0, n, shard_size):
        if start and should_stop is not None and should_stop():  # a shard boundary: what is written is whole
            return EmbedResult(out_dir=out, num_images=n, feature_dim=int(index["feature_dim"] or 0),
                               image_hash="", written=written, reused=reused, changed=changed, rekeyed=rekeyed,
                               repaired=repaired, skipped=len(index["skipped"]), interrupted=True)
        stop = min(n, start + shard_size)
        items = [dataset[i] for i in range(start, stop)]
        skipped = [i for i, item in zip(range(start, stop), items) if int(item.get("index", i)) != i]
        digests = [image_digest(item["image"]) for item in items]
        all_digests += digests
        shard_hash = set_hash(digests)
        organs = [int(item.get("organ", -1)) for item in items]
        row_labels = ["" if labels is None or labels[i] is None else str(labels[i]) for i in range(start, stop)]
        sources = [] if records is None else [f"{r.key}\t{getattr(r, 'content_hash', '')}"
                                              for r in records[start:stop]]
        key = _row_key(settings, digests, organs, row_labels, sources, skipped)
        name = f"shard-{start // shard_size:05d}.npy"
        index["skipped"] += skipped
        for i, organ, label in zip(range(start, stop), organs, row_labels):
            rows.append({"row": i, "shard": name, "organ": organ_names[organ] if 0 <= organ < len(organ_names)
                         else ("" if organ < 0 else str(organ)), "organ_id": organ, "label": label,
                         "skipped": int(i in skipped), "key": records[i].key if records is not None else "",
                         **_row_ids(records[i] if records is not None else None, i, root, first_of)})
        prev = old_shards.get((start, stop))
        if prev is not None and prev.get("key") == key:
            if _intact(out / prev["file"], prev):
                index["shards"].append(prev)
                index["feature_dim"] = prev["feature_dim"]
                reused += 1
                continue
            repaired += 1
        elif prev is not None and prev["image_hash"] != shard_hash:
            if on_change == "error":
                raise ValueError(f"{out / prev['file']}: the images of items {start}-{stop - 1} changed since "
                                 "these features were written (image hash differs)")
            changed += 1
        elif prev is not None:
            rekeyed += 1
        if backbone is None:
            backbone = make()
        good = [k for k, i in enumerate(range(start, stop)) if i not in skipped]
        feats = None
        if good:
            images = torch.stack([_resize_to(items[k]["image"], size) for k in good])
            got = extract_features(backbone, images, batch_size=batch_size, device=device, mean=contract["mean"],
                                   std=contract["std"]).numpy().astype(np.float32)
            feats = np.zeros((stop - start, got.shape[1]), dtype=np.float32)
            feats[good] = got  # a skipped row stays zeros: never another image's features
        else:
            dim = index["feature_dim"] or int(contract.get("num_features") or 0)
            if not dim:
                got = extract_features(backbone, torch.stack([_resize_to(items[0]["image"], size)]), batch_size=1,
                                       device=device, mean=contract["mean"], std=contract["std"])
                dim = int(got.shape[1])  # only the width: every row of this shard is skipped
            feats = np.zeros((stop - start, dim), dtype=np.float32)
        path = out / name
        with guard():
            require_free_space(out, feats.nbytes + 4096, COMMAND)
            write_atomic(path, lambda f: write_npy(f, feats))
        index["shards"].append({"file": name, "start": start, "stop": stop, "image_hash": shard_hash, "key": key,
                                "feature_dim": int(feats.shape[1]), "bytes": path.stat().st_size,
                                "file_hash": hash_file(path), "organ": organs, "skipped": skipped})
        index["feature_dim"] = int(feats.shape[1])
        written += 1
        with guard():
            _write_index(index_path, index)  # a killed call keeps the shards written so far
        if log:
            log(f"{out / name}: items {start}-{stop - 1}, {feats.shape[1]} features")
    index["image_hash"] = set_hash(all_digests)
    index["complete"] = True
    index = json.loads(json.dumps(index))  # as read back, so an unchanged index compares equal
    table = _index_csv(rows)
    csv_path = out / INDEX_CSV
    with guard():
        if written or old != index:  # a second identical call rewrites nothing
            _write_index(index_path, index)
        if not csv_path.is_file() or csv_path.read_text(encoding="utf-8") != table:
            write_atomic(csv_path, table)
    return EmbedResult(out_dir=out, num_images=n, feature_dim=int(index["feature_dim"]),
                       image_hash=index["image_hash"], written=written, reused=reused, changed=changed,
                       rekeyed=rekeyed, repaired=repaired, skipped=len(index["skipped"]),
                       duplicates=sum(1 for r in rows if r["duplicate_of"] != ""))


def features_key(index: dict[str, Any]) -> str:
    """What a folder's stored features are, for caches built on them (MMKD's projected targets, the joint
    files): each shard's reuse key (weights, input size, mean/std, data settings, pixels, organs, labels,
    skips) and the size and hash of its bytes."""
    shards = [[s.get("key"), s.get("file_hash"), s.get("bytes"), s["start"], s["stop"]] for s in index["shards"]]
    return hashlib.blake2b(json.dumps([index.get("model", {}).get("input_size"), shards]).encode(),
                           digest_size=16).hexdigest()


def load_features(folder: str | os.PathLike[str], *, who: str = "") -> tuple[torch.Tensor, dict[str, Any]]:
    """All features of a complete features folder, checked, as one (N, E) tensor in memory.

    For large sets read them row by row instead: :func:`open_features`.

    Raises:
        DataError: as :func:`open_features`.
    """
    rows, index = open_features(folder, who=who)
    return rows.read(0, len(rows)), index


def open_features(folder: str | os.PathLike[str], *, who: str = "",
                  chunk: int = 4096) -> tuple[ShardRows, dict[str, Any]]:
    """The features of a complete features folder as an (N, E) :class:`~organfm.features.shards.ShardRows`
    view (read on demand, never loaded whole), checked shard by shard in chunks of ``chunk`` rows.

    Args:
        folder: an :func:`embed_dataset` output folder.
        who: prefix of error messages (e.g. ``"teacher coda: "``).
        chunk: rows held in memory at a time by the check.

    Returns:
        ``(rows, index)``.

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
    files = []
    for shard in index["shards"]:
        path = folder / shard["file"]
        one = ShardRows([path], who=who)
        if one.width != dim or len(one) != shard["stop"] - shard["start"]:
            raise DataError(f"{who}{path}: features of shape {one.shape}, but the index says "
                            f"({shard['stop'] - shard['start']}, {dim}) (dimension mismatch)")
        bad = sum(int((~torch.isfinite(rows)).any(1).sum()) for _, rows in one.chunks(chunk))
        if bad:
            raise DataError(f"{who}{path}: {bad} feature rows hold NaN or inf")
        one.close()
        files.append(path)
    rows = ShardRows(files, who=who)
    if len(rows) != index["num_images"]:
        raise DataError(f"{who}{folder / INDEX_FILE}: shards hold {len(rows)} rows for {index['num_images']} "
                        "images")
    return rows, index
