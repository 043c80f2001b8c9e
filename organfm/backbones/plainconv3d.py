"""nnU-Net's PlainConvEncoder in 3D (Triad's CNN encoder [0]) behind the backbone contract.

Stage ``i`` is two 3³ convolutions (bias, InstanceNorm with affine, LeakyReLU), the first with stride
``strides[i]``. Masking for SimMIM pretraining happens in VOXEL space: masked voxels are replaced by one
learnable scalar (``mask_value``), so the exported encoder is a plain nnU-Net encoder plus one scalar.

The paper's encoder is 6 stages of 32, 64, 128, 256, 320, 320 channels with strides 1, 2, 2, 2, 2, 2
(``configs/triad_paper.yaml``); the default here is 4 stages of 8-64 channels, sized for CPU.

[0] Wang et al., "Triad: Vision Foundation Model for 3D Magnetic Resonance Imaging", arXiv 2502.14064;
    code: github.com/wangshansong1/Triad (``simmim_advanced.py``).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from organfm.backbones.base import SkipPooledBackbone
from organfm.backbones.weights import load_backbone_weights, resolve_backbone_args

__all__ = ["PlainConvEncoder", "PlainConv3DBackbone"]

_DEFAULTS: dict[str, Any] = {"in_chans": 1, "channels": (8, 16, 32, 64), "strides": (1, 2, 2, 2)}


class _Stage(nn.Sequential):
    """(conv3³ → InstanceNorm(affine) → LeakyReLU) x 2, the first conv strided (nnU-Net's StackedConvBlocks)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__(nn.Conv3d(in_ch, out_ch, 3, stride=stride, padding=1, bias=True),
                         nn.InstanceNorm3d(out_ch, affine=True), nn.LeakyReLU(0.01, inplace=True),
                         nn.Conv3d(out_ch, out_ch, 3, padding=1, bias=True),
                         nn.InstanceNorm3d(out_ch, affine=True), nn.LeakyReLU(0.01, inplace=True))


class PlainConvEncoder(nn.Module):
    """Stages of strided double convolutions; returns every stage's output (shallow to deep).

    Args:
        in_chans: input channels C.
        channels: width of each stage.
        strides: stride of each stage's first convolution (same length as ``channels``).
    """

    def __init__(self, in_chans: int, channels: Sequence[int], strides: Sequence[int]) -> None:
        super().__init__()
        if len(channels) != len(strides) or not channels:
            raise ValueError(f"channels {tuple(channels)} and strides {tuple(strides)} need the same, non-zero length")
        self.stages = nn.ModuleList(_Stage(c_in, c_out, s) for c_in, c_out, s
                                    in zip((in_chans, *channels[:-1]), channels, strides))
        # Triad's ``mask_token_vol``: one learnable voxel value for masked voxels (zero-initialised as there)
        self.mask_value = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Args:
            x: (B, C, D, H, W).
            mask: optional (B, 1, D, H, W) or (B, D, H, W), 1 where a voxel is hidden.

        Returns:
            Stage outputs [(B, C_i, D_i, H_i, W_i)], shallow to deep.
        """
        if mask is not None:
            m = (mask if mask.dim() == 5 else mask[:, None]).to(x.dtype)
            if m.shape[2:] != x.shape[2:] or m.shape[0] != x.shape[0]:
                raise ValueError(f"mask of shape {tuple(mask.shape)} does not match input {tuple(x.shape)}")
            x = x * (1 - m) + self.mask_value.to(x.dtype) * m
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips


class PlainConv3DBackbone(SkipPooledBackbone, nn.Module):
    """``plainconv3d``: a 3D :class:`PlainConvEncoder` behind the backbone contract.

    Architecture arguments left as ``None`` come from ``pretrained_file``'s metadata (an ``organfm
    export``), else from the CPU defaults.

    Args:
        in_chans: input channels (default 1).
        channels: stage widths (default (8, 16, 32, 64); the paper: (32, 64, 128, 256, 320, 320)).
        strides: first-conv stride per stage (default (1, 2, 2, 2); the paper: (1, 2, 2, 2, 2, 2)).
        spatial_dims: must be 3 (accepted so a batch source can state it).
        pretrained_file: local weights (``.safetensors`` from ``organfm export``, or ``.pth``).
        drop_path_rate: accepted for the common ``create_backbone`` call; must be 0.

    Attributes:
        num_features: E = channels[-1], the width of the pooled bottleneck.
        skip_channels: ``channels``.
        backbone_args: the resolved architecture arguments (written into exported weights).
    """

    def __init__(self, *, in_chans: int | None = None, channels: Sequence[int] | None = None,
                 strides: Sequence[int] | None = None, spatial_dims: int | None = None,
                 pretrained_file: str | None = None, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        if drop_path_rate:
            raise ValueError(f"plainconv3d has no stochastic depth: drop_path_rate must be 0, got {drop_path_rate}")
        if spatial_dims not in (None, 3):
            raise ValueError(f"plainconv3d is a 3D encoder: spatial_dims must be 3, got {spatial_dims}")
        args = resolve_backbone_args(dict(in_chans=in_chans, channels=channels, strides=strides), _DEFAULTS,
                                     pretrained_file)
        self.backbone_args = {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}
        self.spatial_dims, self.in_chans = 3, int(args["in_chans"])
        self.skip_channels = [int(c) for c in args["channels"]]
        self.num_features = self.skip_channels[-1]
        self.total_stride = 1
        for s in args["strides"]:
            self.total_stride *= int(s)
        self.model = PlainConvEncoder(self.in_chans, self.skip_channels, [int(s) for s in args["strides"]])
        if pretrained_file is not None:
            load_backbone_weights(self.model, pretrained_file, architecture="plainconv3d")

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 5 or x.shape[1] != self.in_chans:
            raise ValueError(f"plainconv3d expects (B, {self.in_chans}, D, H, W) volumes, got shape {tuple(x.shape)}")

    def forward_skips(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """(B, C, D, H, W) -> stage outputs [(B, C_i, D_i, H_i, W_i)] shallow to deep (``mask``: see the encoder)."""
        self._check(x)
        return self.model(x, mask)
