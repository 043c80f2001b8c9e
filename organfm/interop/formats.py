"""The ``--format`` of ``organfm export``: which framework's loader the exported encoder is written for.

Each format is a pair (check, save): the check runs before the export writes anything, so a backbone that a
format cannot hold is refused with the mismatch named and no file touched; the save writes the format's files
into the export folder beside ``backbone.safetensors``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from organfm.interop.monai import MONAI_ARGS, MONAI_WEIGHTS, check_monai_exportable, save_monai_export
from organfm.interop.nnunet import NNUNET_ARCHITECTURE, NNUNET_WEIGHTS, check_nnunet_exportable, save_nnunet_export

__all__ = ["EXPORT_FORMATS", "FORMAT_FILES", "check_export_format", "remove_stale_formats", "save_export_format"]

_CHECKS: dict[str, Callable[..., None]] = {"nnunet": check_nnunet_exportable, "monai": check_monai_exportable}
_SAVES: dict[str, Callable[..., list[Path]]] = {"nnunet": save_nnunet_export, "monai": save_monai_export}
EXPORT_FORMATS = tuple(_CHECKS)
FORMAT_FILES: dict[str, tuple[str, ...]] = {"nnunet": (NNUNET_WEIGHTS, NNUNET_ARCHITECTURE),
                                            "monai": (MONAI_WEIGHTS, MONAI_ARGS)}


def _known(name: str) -> str:
    if name not in _CHECKS:
        raise ValueError(f"unknown export format {name!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    return name


def check_export_format(name: str, weights: Mapping[str, torch.Tensor], contract: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` (naming the mismatch) unless format ``name`` can hold these weights.

    Args:
        name: ``nnunet`` or ``monai``.
        weights: the exported backbone's state dict.
        contract: the export's data contract (``architecture``, ``backbone_args``).
    """
    _CHECKS[_known(name)](str(contract.get("architecture")), contract.get("backbone_args") or {}, weights)


def save_export_format(name: str, folder: str | Path, weights: Mapping[str, torch.Tensor],
                       contract: Mapping[str, Any]) -> list[Path]:
    """Write format ``name``'s files into the export ``folder``; returns their paths."""
    return _SAVES[_known(name)](folder, weights, contract)


def remove_stale_formats(folder: str | Path, keep: str | None = None) -> None:
    """Delete other formats' files left by an earlier export: they would hold the previous weights."""
    for name, files in FORMAT_FILES.items():
        if name != keep:
            for file in files:
                (Path(folder) / file).unlink(missing_ok=True)
