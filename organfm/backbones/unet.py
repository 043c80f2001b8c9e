"""A small U-Net for CPU: per-pixel/voxel features behind the backbone contract, 2D or 3D.

The dense stand-in for RaSD's SwinUNETR when there is no GPU: same contract (``dense`` features of
width E at input resolution), a few hundred thousand parameters instead of 28 million.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from organfm.backbones.dense import DenseBackbone, check_dense_input, dense_outputs, pad_to_multiple
from organfm.backbones.weights import load_backbone_weights, resolve_backbone_args

__all__ = ["UNet", "UNetBackbone"]

_DEFAULTS: dict[str, Any] = {"spatial_dims": 2, "in_chans": 1, "num_features": 32, "channels": (16, 32, 64, 128)}


def _conv(spatial_dims: int) -> type[nn.Module]:
    return nn.Conv2d if spatial_dims == 2 else nn.Conv3d


class _DoubleConv(nn.Sequential):
    """(conv3 → GroupNorm → LeakyReLU) x 2; GroupNorm works for any batch and any spatial size."""

    def __init__(self, spatial_dims: int, in_ch: int, out_ch: int) -> None:
        conv = _conv(spatial_dims)
        groups = 8 if out_ch % 8 == 0 else 1
        super().__init__(conv(in_ch, out_ch, 3, padding=1, bias=False), nn.GroupNorm(groups, out_ch),
                         nn.LeakyReLU(0.01, inplace=True),
                         conv(out_ch, out_ch, 3, padding=1, bias=False), nn.GroupNorm(groups, out_ch),
                         nn.LeakyReLU(0.01, inplace=True))


class UNet(nn.Module):
    """Encoder-decoder with skip connections: L levels, 2x max-pool down, transposed-conv up.

    Args:
        spatial_dims: 2 or 3.
        in_chans: Input channels C.
        channels: Width of each level, shallow to deep (L = len(channels)).
        out_channels: E, the width of the per-pixel output (a 1x1 conv, no activation).
    """

    def __init__(self, spatial_dims: int, in_chans: int, channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if len(channels) < 2:
            raise ValueError(f"a U-Net needs at least 2 levels, got channels={tuple(channels)}")
        conv = _conv(spatial_dims)
        up = nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d
        self.pool = nn.MaxPool2d(2) if spatial_dims == 2 else nn.MaxPool3d(2)
        self.down = nn.ModuleList(_DoubleConv(spatial_dims, c_in, c_out)
                                  for c_in, c_out in zip((in_chans, *channels[:-1]), channels))
        self.up = nn.ModuleList(up(deep, shallow, 2, stride=2) for deep, shallow in zip(channels[:0:-1], channels[-2::-1]))
        self.merge = nn.ModuleList(_DoubleConv(spatial_dims, 2 * c, c) for c in channels[-2::-1])
        self.head = conv(channels[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *S) with S divisible by 2^(L-1) -> per-pixel features (B, E, *S)."""
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


class UNetBackbone(DenseBackbone, nn.Module):
    """``unet_small``: a ``UNet`` behind the backbone contract.

    Inputs of any size are zero-padded to a multiple of 2^(L-1) and the output cropped back.
    Architecture arguments left as ``None`` come from ``pretrained_file``'s metadata when it has
    them (an ``organfm export``), else from the defaults.

    Args:
        in_chans: Input channels (default 1).
        spatial_dims: 2 or 3 (default 2).
        num_features: E, the per-pixel feature width (default 32, RaSD's ``out_channels``).
        channels: Level widths (default (16, 32, 64, 128)).
        pretrained_file: Local weights (``.safetensors`` from ``organfm export``, or ``.pth``).
        drop_path_rate: Accepted for the common ``create_backbone`` call; must be 0 (no stochastic depth).

    Attributes:
        backbone_args: The resolved architecture arguments (written into exported weights).
    """

    def __init__(self, *, in_chans: int | None = None, spatial_dims: int | None = None,
                 num_features: int | None = None, channels: Sequence[int] | None = None,
                 pretrained_file: str | None = None, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        if drop_path_rate:
            raise ValueError(f"unet_small has no stochastic depth: drop_path_rate must be 0, got {drop_path_rate}")
        given = dict(in_chans=in_chans, spatial_dims=spatial_dims, num_features=num_features, channels=channels)
        args = resolve_backbone_args(given, _DEFAULTS, pretrained_file)
        self.backbone_args = {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}
        self.spatial_dims, self.in_chans = int(args["spatial_dims"]), int(args["in_chans"])
        self.num_features = int(args["num_features"])
        self.model = UNet(self.spatial_dims, self.in_chans, args["channels"], self.num_features)
        self._multiple = 2 ** (len(args["channels"]) - 1)
        if pretrained_file is not None:
            load_backbone_weights(self.model, pretrained_file)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, C, *S) -> ``dense``/``feature_map`` (B, E, *S) per-pixel features, ``skips`` [dense], ``cls`` (B, E)."""
        check_dense_input(x, self.spatial_dims, self.in_chans)
        padded, crop = pad_to_multiple(x, self._multiple)
        return dense_outputs(self.model(padded)[crop])

