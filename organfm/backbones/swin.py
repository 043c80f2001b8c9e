"""MONAI SwinUNETR behind the backbone contract: RaSD's network, 2D or 3D, per-pixel/voxel features.

RaSD [0] pretrains ``SwinUNETR(feature_size=48, use_v2=True, out_channels=32)`` and treats the
``out_channels`` output map as the dense feature f. The wrapped ``model`` keeps MONAI's parameter names, so
an exported file loads straight into ``monai.networks.nets.SwinUNETR`` for downstream fine-tuning, as the
paper's scripts do (non-strictly, with a new ``out`` layer for the task's classes).

[0] Wei et al., RaSD, arXiv 2602.12317; code: github.com/yweibs/RaSD (``train_RaSD.py``).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from organfm.backbones.dense import DenseBackbone, check_dense_input, dense_outputs, pad_to_multiple
from organfm.backbones.weights import load_backbone_weights, resolve_backbone_args

__all__ = ["SwinUNETRBackbone"]

_DEFAULTS: dict[str, Any] = {"spatial_dims": 2, "in_chans": 1, "num_features": 32, "feature_size": 48}
# Five 2x reductions; at the deepest level instance norm needs more than one voxel in training mode.
_MULTIPLE, _MINIMUM = 32, 64


class SwinUNETRBackbone(DenseBackbone, nn.Module):
    """``swin_unetr``: MONAI ``SwinUNETR(use_v2=True)`` whose output map is the dense feature.

    Inputs are zero-padded at their far end to a multiple of 32 (and to at least 64 per side) and
    the output cropped back, so any size works. MONAI is imported on construction only.

    Args:
        in_chans: Input channels (default 1).
        spatial_dims: 2 or 3 (default 2).
        num_features: E, the width of the dense output (``out_channels``; RaSD uses 32).
        feature_size: SwinUNETR width (default 48, as RaSD; a multiple of 12).
        use_checkpoint: Gradient checkpointing; ``None`` turns it on in 3D, as RaSD's 3D trainer.
        pretrained_file: Local weights (``.safetensors`` from ``organfm export``, or ``.pth``).
        drop_path_rate: Stochastic depth of the Swin blocks (MONAI's ``dropout_path_rate``).

    Attributes:
        backbone_args: The resolved architecture arguments (written into exported weights).
    """

    def __init__(self, *, in_chans: int | None = None, spatial_dims: int | None = None,
                 num_features: int | None = None, feature_size: int | None = None,
                 use_checkpoint: bool | None = None, pretrained_file: str | None = None,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        from monai.networks.nets import SwinUNETR

        given = dict(in_chans=in_chans, spatial_dims=spatial_dims, num_features=num_features,
                     feature_size=feature_size)
        args = resolve_backbone_args(given, _DEFAULTS, pretrained_file)
        self.backbone_args = dict(args)
        self.spatial_dims, self.in_chans = int(args["spatial_dims"]), int(args["in_chans"])
        self.num_features = int(args["num_features"])
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if args["feature_size"] % 12:
            raise ValueError(f"SwinUNETR's feature_size must be a multiple of 12, got {args['feature_size']}")
        self.model = SwinUNETR(in_channels=self.in_chans, out_channels=self.num_features,
                               feature_size=int(args["feature_size"]), spatial_dims=self.spatial_dims,
                               use_v2=True, dropout_path_rate=drop_path_rate,
                               use_checkpoint=self.spatial_dims == 3 if use_checkpoint is None else use_checkpoint)
        if pretrained_file is not None:
            load_backbone_weights(self.model, pretrained_file)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, C, *S) -> ``dense``/``feature_map`` (B, E, *S) per-pixel features, ``skips`` [dense], ``cls`` (B, E)."""
        check_dense_input(x, self.spatial_dims, self.in_chans)
        padded, crop = pad_to_multiple(x, _MULTIPLE, minimum=_MINIMUM)
        return dense_outputs(self.model(padded)[crop])
