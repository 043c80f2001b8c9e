"""Which encoder to evaluate: a model spec string becomes a backbone factory and its data contract.

A spec is one of:

- ``runs/coda-20261123-101500``: a run folder; uses ``<run>/export/backbone.safetensors`` +
  ``backbone.json``, or, when the export is missing, the latest checkpoint read into memory (loading never
  writes into a run folder: the weights get the bytes and the hash an export of that checkpoint would have,
  and a text side goes to a temporary folder outside the run, removed when the process ends);
- ``runs/.../export``: an export folder holding ``backbone.safetensors`` + ``backbone.json``;
- ``path/to/weights.safetensors``: weights with their contract JSON beside them (``backbone.json`` or
  ``<stem>.json``);
- ``random:<arch>``: random initialisation (seeded) of a timm or organfm architecture, the floor every
  pretrained model must beat;
- ``timm:<arch>:<file>``: a timm architecture with local weights (``.safetensors``/``.pth``) and no
  contract; mean/std come from timm's pretrained config, averaged to one channel.

The model hash (weights-file bytes, or the spec string and seed for ``random:``) names the *weights*, so a
re-exported run with new weights never reuses stale features. It does not cover the input size, which a
``random:``/``timm:`` contract takes from the caller: every feature cache keys on the size too (the
``organfm embed`` shard reuse key holds the input size, mean/std and data settings; the evaluation cache,
the split's identity). An export that also holds a text tower
(``<export>/text/``, written for models trained with texts) names it in ``contract["text"]``, which the
zero-shot and retrieval protocols read.

Every backbone a factory builds carries its :class:`~organfm.backbones.contract.BackboneContract` as
``backbone.contract``; the returned dict is that contract's :meth:`~BackboneContract.to_dict`.
"""
from __future__ import annotations

import atexit
import copy
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from organfm.backbones.contract import BackboneContract

__all__ = ["hash_file", "load_encoder", "parse_models"]

_DEFAULT_MEAN, _DEFAULT_STD = 0.5, 0.5


def load_encoder(spec: str, *, image_size: int | None = None,
                 seed: int = 0) -> tuple[Callable[[], nn.Module], dict[str, Any]]:
    """Resolve ``spec`` to a backbone factory and the contract its inputs must follow.

    Args:
        spec: run folder, export folder, ``.safetensors`` path, ``random:<arch>`` or ``timm:<arch>:<file>``
            (see the module docstring).
        image_size: S, the task's input size; becomes ``input_size`` of a ``random:``/``timm:`` contract.
        seed: initialisation seed of ``random:`` backbones (every call of the factory gives the same weights).

    Returns:
        ``(make_backbone, contract)``: ``make_backbone()`` builds a FRESH backbone (``create_backbone``: an
        organfm-registered network or a ``TimmBackbone``; ``forward`` -> (B, E)) with the weights loaded and
        ``backbone.contract`` set; ``contract`` is that contract as a dict: at least ``architecture``,
        ``mean``, ``std`` (lists of one float), ``input_size`` ``[1, S, S]``, ``spec``, ``weights`` (path or
        None) and ``model_hash`` (hex string); ``text`` (the text folder, for zero-shot and retrieval) when an
        export or run folder holds a text tower.

    Raises:
        FileNotFoundError: a path that does not exist, or a folder with neither an export nor a checkpoint.
        ValueError: an unknown architecture or a malformed spec.
    """
    from organfm.backbones import BackboneContract, create_backbone

    if spec.startswith("random:"):
        arch = spec[len("random:"):]
        _check_arch(arch, spec)
        size = [1, image_size, image_size] if image_size else None
        random_contract = BackboneContract(architecture=arch, mean=[_DEFAULT_MEAN], std=[_DEFAULT_STD],
                                           input_size=size, method="random-init", spec=spec,
                                           model_hash=_hash_text(f"{spec}|seed={seed}"))

        def make_random() -> nn.Module:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return _with_contract(create_backbone(arch, in_chans=1), random_contract)

        return make_random, dict(random_contract.to_dict(), weights=None)  # None: no file names these weights
    blob = None
    if spec.startswith("timm:"):
        arch, sep, file = spec[len("timm:"):].partition(":")
        if not sep or not file:
            raise ValueError(f"model spec {spec!r}: expected timm:<arch>:<weights file>")
        _check_arch(arch, spec)
        weights = Path(file).expanduser()
        if not weights.is_file():
            raise FileNotFoundError(f"model spec {spec!r}: weights {weights} do not exist")
        mean, std = _timm_mean_std(arch)
        contract = BackboneContract(architecture=arch, mean=[mean], std=[std], method="timm",
                                    input_size=[1, image_size, image_size] if image_size else None)
    else:
        from organfm.text.tower import text_folder

        weights, contract, blob = _export_of(Path(spec).expanduser())
        _check_arch(contract.architecture, spec)
        text = text_folder(spec)
        if text is None and isinstance(contract.text, dict):  # an unexported run trained with texts
            text = _text_outside_run(Path(spec).expanduser())
        contract.text = str(text) if text is not None else None
    contract = contract.replace(spec=spec, weights=str(weights.resolve()),
                                model_hash=_hash_bytes(blob) if blob is not None else hash_file(weights),
                                mean=contract.mean or [_DEFAULT_MEAN], std=contract.std or [_DEFAULT_STD])

    def make_pretrained() -> nn.Module:
        # organfm's own backbones rebuild their architecture from the file's metadata (backbone_args)
        if blob is None:
            backbone = create_backbone(contract.architecture, in_chans=int(contract.in_chans or 1),
                                       pretrained_file=contract.weights)
        else:
            backbone = _from_bytes(blob, contract)
        return _with_contract(backbone, contract)

    return make_pretrained, contract.to_dict()


def parse_models(text: str) -> dict[str, str]:
    """``"a=runs/x,scratch=random:resnet18"`` -> ``{"a": "runs/x", "scratch": "random:resnet18"}``.

    A bare spec (no ``NAME=``) is named after its last path part (``random:resnet18`` -> ``resnet18``).

    Raises:
        ValueError: an empty list or a name given twice.
    """
    models: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, spec = item.partition("=")
        if not sep:
            spec, name = item, Path(item.split(":")[-1]).name or item
        name, spec = name.strip(), spec.strip()
        if not name or not spec:
            raise ValueError(f"--models entry {item!r} is not NAME=SPEC")
        if name in models:
            raise ValueError(f"--models names {name!r} twice")
        models[name] = spec
    if not models:
        raise ValueError("--models is empty; expected NAME=SPEC[,NAME=SPEC...]")
    return models


def hash_file(path: str | Path) -> str:
    """blake2b-128 hex digest of a weights file, streamed (weights files can be hundreds of MB); a
    ``.safetensors`` file is hashed as :func:`_hash_bytes` hashes its bytes (canonical header, then data)."""
    import json
    import struct

    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        if str(path).endswith(".safetensors"):
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            raw = f.read(n) if 0 < n < (1 << 27) else b""
            try:
                header = json.loads(raw) if raw else None
            except ValueError:
                header = None
            if isinstance(header, dict):
                digest.update(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
            else:  # not a readable header: plain bytes from the start
                digest.update(head + raw)
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_text(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _check_arch(arch: str, spec: str) -> None:
    import timm

    from organfm.backbones import list_backbones

    if not arch or not (arch in list_backbones() or timm.is_model(arch)):
        raise ValueError(f"model spec {spec!r}: unknown architecture {arch!r} (organfm: {', '.join(list_backbones())}; "
                         "or any timm.list_models() name)")


def _timm_mean_std(arch: str) -> tuple[float, float]:
    import timm

    cfg = timm.get_pretrained_cfg(arch)
    mean, std = (getattr(cfg, "mean", None), getattr(cfg, "std", None)) if cfg is not None else (None, None)
    if not mean or not std:
        return _DEFAULT_MEAN, _DEFAULT_STD
    # timm sums the RGB stem to one channel, so a gray input stands for equal RGB values: average the stats
    return float(sum(mean) / len(mean)), float(sum(std) / len(std))


def _with_contract(backbone: nn.Module, contract: BackboneContract) -> nn.Module:
    """``backbone`` carrying its own copy of ``contract``, its identity fields that ``contract`` leaves unknown
    taken from the contract ``create_backbone`` attached (a ``random:`` contract is made before the network)."""
    from organfm.backbones.contract import attach_contract

    own = backbone.contract
    identity = ("backbone_args", "in_chans", "num_features", "spatial_dims")
    filled = contract.replace(**{k: getattr(own, k) for k in identity if getattr(contract, k) is None})
    return attach_contract(backbone, copy.deepcopy(filled))  # a copy: editing one backbone's leaves the others'


def _hash_bytes(data: bytes) -> str:
    """The model hash of safetensors bytes: the header canonicalised (sorted keys), then the tensor data.

    safetensors writes the header's metadata from a hash map, in an order that changes from call to call, so
    the same tensors and metadata can be different bytes; the hash names the content, not that order.
    """
    import json
    import struct

    digest = hashlib.blake2b(digest_size=16)
    n = struct.unpack("<Q", data[:8])[0] if len(data) >= 8 else -1
    try:
        header = json.loads(data[8:8 + n]) if 0 < n <= len(data) - 8 else None
    except ValueError:
        header = None
    if not isinstance(header, dict):  # not safetensors: the bytes as they are
        digest.update(data)
        return digest.hexdigest()
    digest.update(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    digest.update(data[8 + n:])
    return digest.hexdigest()


def _from_bytes(blob: bytes, contract: BackboneContract) -> nn.Module:
    """The backbone of in-memory safetensors bytes, built by ``create_backbone`` like one from an export file.

    ``create_backbone`` reads weights from a file only (metadata, strict checks, timm layouts), so the bytes go
    to a private temporary file outside any run folder for the duration of the call.
    """
    from organfm.backbones import create_backbone

    fd, tmp = tempfile.mkstemp(prefix="organfm-weights-", suffix=".safetensors")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        return create_backbone(contract.architecture, in_chans=int(contract.in_chans or 1), pretrained_file=tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _text_outside_run(run: Path) -> Path:
    """The text side of ``run``'s latest checkpoint, written to a temporary folder removed at exit."""
    from organfm.engine.checkpoint import export_text, read_export
    from organfm.text.tower import TEXT_DIR

    _, contract, state = read_export(run)
    out = Path(tempfile.mkdtemp(prefix="organfm-text-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    export_text(contract.text, state, f"{contract.network}.text.", run, out)
    return out / TEXT_DIR


def _export_of(path: Path) -> tuple[Path, BackboneContract, bytes | None]:
    """(weights file, contract, None) of an export folder or a ``.safetensors`` file; (checkpoint, contract,
    safetensors bytes) of a run folder without an export, read into memory (nothing is written)."""
    from organfm.backbones.contract import CONTRACT_FILE, read_contract

    if path.is_file():
        if path.suffix != ".safetensors":
            raise ValueError(f"model spec {path}: expected a .safetensors file, a run or export folder, "
                             "random:<arch> or timm:<arch>:<file>")
        for candidate in (path.with_suffix(".json"), path.parent / CONTRACT_FILE):
            if candidate.is_file():
                return path, read_contract(candidate), None
        raise FileNotFoundError(f"{path}: no contract JSON beside it ({path.with_suffix('.json').name} or "
                                "backbone.json); use timm:<arch>:<file> for plain timm weights")
    if not path.is_dir():
        raise FileNotFoundError(f"model spec {path}: no such file or folder")
    for folder in (path, path / "export"):
        if (folder / "backbone.safetensors").is_file() and (folder / CONTRACT_FILE).is_file():
            return folder / "backbone.safetensors", read_contract(folder / CONTRACT_FILE), None
    if (path / "checkpoints").is_dir():
        from safetensors.torch import save

        from organfm.engine.checkpoint import latest_checkpoint, read_export, weights_metadata

        checkpoint = latest_checkpoint(path)
        weights, contract, _ = read_export(path, checkpoint=checkpoint)
        # the bytes `organfm export` would write, so an export made later names the same model (same hash)
        return checkpoint, contract, save(weights, metadata=weights_metadata(contract))
    raise FileNotFoundError(f"{path}: neither an export (backbone.safetensors + backbone.json) nor a run "
                            "folder with checkpoints/")
