"""``swin3d`` weights as the state dict of MONAI's ``SwinUNETR(use_v2=True).swinViT`` [0].

organfm's ``swin3d`` wraps MONAI's own ``SwinTransformer`` (``MaskedSwinViT.vit``, built with ``use_v2=True``),
so the conversion only renames: the ``vit.`` prefix goes, and the SimMIM ``mask_token`` (pretraining only) is
dropped. The result loads with ``strict=True`` into ``SwinUNETR(..., feature_size=embed_dim, use_v2=True).swinViT``
of the same depths, heads, window and patch size; ``monai_swinunetr.json`` (written beside it) holds those
constructor arguments.

[0] Hatamizadeh et al., "Swin UNETR: Swin Transformers for Semantic Segmentation of Brain Tumors in MRI
    Images", BrainLes 2021; MONAI ``monai.networks.nets.SwinUNETR``.
"""
from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from organfm.outputs.atomic import write_atomic

__all__ = ["MONAI_ARGS", "MONAI_WEIGHTS", "build_monai_weights", "build_swinunetr_args", "check_monai_exportable",
           "save_monai_export"]

MONAI_WEIGHTS = "monai_swinvit.pt"
MONAI_ARGS = "monai_swinunetr.json"

_PREFIX = "vit."
_DROPPED = ("mask_token",)


def check_monai_exportable(architecture: str, backbone_args: Mapping[str, Any],
                           weights: Mapping[str, torch.Tensor]) -> None:
    """Refuse, naming the mismatch, weights that are not a MONAI ``SwinTransformer``.

    Args:
        architecture: the export's backbone name (must be ``swin3d``).
        backbone_args: its ``embed_dim``, ``depths``, ``num_heads``, ``window_size``, ``patch_size``.
        weights: the exported ``MaskedSwinViT`` state dict.

    Raises:
        ValueError: another architecture, tensors outside ``vit.*``, or sizes SwinUNETR cannot take.
    """
    if architecture != "swin3d":
        raise ValueError(f"--format monai writes MONAI SwinUNETR's swinViT, which only the swin3d backbone matches; "
                         f"this export is {architecture!r} (for plainconv3d use --format nnunet)")
    foreign = sorted(k for k in weights if not k.startswith(_PREFIX) and k not in _DROPPED)
    if foreign:
        raise ValueError(f"--format monai: tensors {foreign[:5]} are not part of MONAI's SwinTransformer")
    embed_dim = int(backbone_args.get("embed_dim", 0))
    if embed_dim % 12:  # SwinUNETR.__init__ refuses it: say so at export time, not at the user's load
        raise ValueError(f"--format monai: SwinUNETR needs feature_size (swin3d embed_dim) divisible by 12, "
                         f"this export has {embed_dim}")


def build_swinunetr_args(backbone_args: Mapping[str, Any]) -> dict[str, Any]:
    """The ``SwinUNETR`` arguments whose ``swinViT`` is this ``swin3d`` (the caller adds ``out_channels``)."""
    return {"in_channels": int(backbone_args.get("in_chans", 1)), "feature_size": int(backbone_args["embed_dim"]),
            "depths": [int(d) for d in backbone_args["depths"]],
            "num_heads": [int(h) for h in backbone_args["num_heads"]],
            "window_size": int(backbone_args["window_size"]), "patch_size": int(backbone_args["patch_size"]),
            "spatial_dims": 3, "use_v2": True}


def build_monai_weights(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MONAI ``SwinTransformer`` names -> tensors: ``vit.`` stripped, ``mask_token`` dropped."""
    return {k[len(_PREFIX):]: v.detach().clone().contiguous() for k, v in weights.items() if k.startswith(_PREFIX)}


def save_monai_export(folder: str | Path, weights: Mapping[str, torch.Tensor], contract: Mapping[str, Any]) -> list[Path]:
    """Write ``monai_swinvit.pt`` (a plain state dict) + ``monai_swinunetr.json`` into ``folder`` (atomically).

    Args:
        folder: the export folder.
        weights: the exported ``swin3d`` state dict.
        contract: the export's data contract (``architecture``, ``backbone_args``).

    Returns:
        The two paths written.

    Raises:
        ValueError: the weights are not a MONAI SwinTransformer (see :func:`check_monai_exportable`).
    """
    args = contract.get("backbone_args") or {}
    check_monai_exportable(str(contract.get("architecture")), args, weights)
    buffer = io.BytesIO()
    torch.save(build_monai_weights(weights), buffer)  # tensors only: torch.load(weights_only=True) reads it
    folder = Path(folder)
    weights_path, args_path = folder / MONAI_WEIGHTS, folder / MONAI_ARGS
    write_atomic(weights_path, buffer.getvalue())
    write_atomic(args_path, json.dumps(build_swinunetr_args(args), indent=2) + "\n")
    return [weights_path, args_path]
