"""Which encoder to evaluate: a model spec string becomes a backbone factory and its data contract.

A spec is one of:

- ``runs/coda-20261123-101500``: a run folder; uses ``<run>/export/backbone.safetensors`` +
  ``backbone.json``, exported from the latest checkpoint first when the export is missing;
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
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

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
        organfm-registered network or a ``TimmBackbone``; ``forward`` -> (B, E)) with the weights loaded;
        ``contract`` holds at least ``architecture``, ``mean``, ``std`` (lists of one float), ``input_size``
        ``[1, S, S]``, ``spec``, ``weights`` (path or None) and ``model_hash`` (hex string); ``text`` (the
        text folder, for zero-shot and retrieval) when an export or run folder holds a text tower.

    Raises:
        FileNotFoundError: a path that does not exist, or a folder with neither an export nor a checkpoint.
        ValueError: an unknown architecture or a malformed spec.
    """
    from organfm.backbones import create_backbone

    if spec.startswith("random:"):
        arch = spec[len("random:"):]
        _check_arch(arch, spec)

        def make_random() -> nn.Module:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return create_backbone(arch, in_chans=1)

        size = [1, image_size, image_size] if image_size else None
        contract = {"architecture": arch, "mean": [_DEFAULT_MEAN], "std": [_DEFAULT_STD], "input_size": size,
                    "method": "random-init", "weights": None}
        return make_random, dict(contract, spec=spec, model_hash=_hash_text(f"{spec}|seed={seed}"))
    if spec.startswith("timm:"):
        arch, sep, file = spec[len("timm:"):].partition(":")
        if not sep or not file:
            raise ValueError(f"model spec {spec!r}: expected timm:<arch>:<weights file>")
        _check_arch(arch, spec)
        weights = Path(file).expanduser()
        if not weights.is_file():
            raise FileNotFoundError(f"model spec {spec!r}: weights {weights} do not exist")
        mean, std = _timm_mean_std(arch)
        contract = {"architecture": arch, "mean": [mean], "std": [std],
                    "input_size": [1, image_size, image_size] if image_size else None, "method": "timm"}
    else:
        from organfm.text.tower import text_folder

        weights, contract = _export_of(Path(spec).expanduser())
        arch = str(contract.get("architecture", ""))
        _check_arch(arch, spec)
        text = text_folder(spec)
        if text is not None:
            contract = dict(contract, text=str(text))
    weights_file = str(weights.resolve())

    def make_pretrained() -> nn.Module:
        # organfm's own backbones rebuild their architecture from the file's metadata (backbone_args)
        return create_backbone(arch, in_chans=int(contract.get("in_chans", 1)), pretrained_file=weights_file)

    contract = dict(contract, spec=spec, weights=weights_file, model_hash=hash_file(weights))
    contract.setdefault("mean", [_DEFAULT_MEAN])
    contract.setdefault("std", [_DEFAULT_STD])
    return make_pretrained, contract


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
    """blake2b-128 hex digest of a file's bytes, streamed (weights files can be hundreds of MB)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
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


def _export_of(path: Path) -> tuple[Path, dict[str, Any]]:
    """(weights file, contract) of a run folder, an export folder or a ``.safetensors`` file."""
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ValueError(f"model spec {path}: expected a .safetensors file, a run or export folder, "
                             "random:<arch> or timm:<arch>:<file>")
        for candidate in (path.with_suffix(".json"), path.parent / "backbone.json"):
            if candidate.is_file():
                return path, _read_contract(candidate)
        raise FileNotFoundError(f"{path}: no contract JSON beside it ({path.with_suffix('.json').name} or "
                                "backbone.json); use timm:<arch>:<file> for plain timm weights")
    if not path.is_dir():
        raise FileNotFoundError(f"model spec {path}: no such file or folder")
    for folder in (path, path / "export"):
        if (folder / "backbone.safetensors").is_file() and (folder / "backbone.json").is_file():
            return folder / "backbone.safetensors", _read_contract(folder / "backbone.json")
    if (path / "checkpoints").is_dir():
        from organfm.engine.checkpoint import export_backbone

        weights, contract = export_backbone(path)
        return weights, _read_contract(contract)
    raise FileNotFoundError(f"{path}: neither an export (backbone.safetensors + backbone.json) nor a run "
                            "folder with checkpoints/")


def _read_contract(path: Path) -> dict[str, Any]:
    try:
        contract = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the backbone contract ({type(e).__name__}: {e})") from e
    if not isinstance(contract, dict) or "architecture" not in contract:
        raise ValueError(f"{path}: a backbone contract needs an 'architecture' key")
    return contract
