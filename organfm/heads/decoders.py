"""U-Net for segmentation: a pretrained encoder's multi-scale features + a randomly initialised decoder [0].

The encoder is any organfm backbone; the decoder uses only the backbone contract:
    - ``backbone.forward_skips(x) -> list[Tensor]``: multi-scale feature maps, shallow to deep
      (ConvNeXt: strides 4, 8, 16, 32; ResNet: 2, 4, 8, 16, 32);
    - ``backbone.skip_channels: list[int]``: the channels of each map;
    - ``backbone.spatial_dims``: 2 or 3.

The decoder walks from the deepest map to the shallowest: upsample (bilinear) to the next skip's size,
concatenate, two conv-norm-ReLU blocks. A last stage upsamples to the input size and concatenates the
input image itself, so an encoder whose finest map has stride 4 (ConvNeXt's patchify stem) still gets a
full-resolution boundary; a 1x1 conv gives the class logits.

3D: convolutions, norms and the interpolation mode come from ``spatial_dims`` (2 → Conv2d /
BatchNorm2d / bilinear, 3 → Conv3d / BatchNorm3d / trilinear), as in MONAI's ``spatial_dims`` networks,
so a 3D encoder with ``spatial_dims = 3`` and 5D skips plugs in without a second decoder class.

[0] Ronneberger, Fischer, Brox. U-Net: Convolutional Networks for Biomedical Image Segmentation. MICCAI 2015.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BackboneUNet", "ConvNormAct", "UNetDecoder"]

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_INTERPOLATION = {2: "bilinear", 3: "trilinear"}


def _check_dims(spatial_dims: int) -> None:
    if spatial_dims not in _CONV:
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")


class ConvNormAct(nn.Sequential):
    """3x3(x3) convolution (no bias), batch norm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, *, spatial_dims: int = 2) -> None:
        _check_dims(spatial_dims)
        super().__init__(_CONV[spatial_dims](in_channels, out_channels, 3, padding=1, bias=False),
                         _NORM[spatial_dims](out_channels), nn.ReLU(inplace=True))


def _resize(x: torch.Tensor, size: Sequence[int], spatial_dims: int) -> torch.Tensor:
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode=_INTERPOLATION[spatial_dims], align_corners=False)


class UNetDecoder(nn.Module):
    """Decoder over skips ``[s_0 (finest), ..., s_L (deepest)]`` plus the input image.

    Args:
        encoder_channels: channels of each skip, shallow to deep.
        num_classes: K output channels (logits).
        in_chans: channels of the input image, concatenated at full resolution.
        decoder_channels: output channels of the stage that merges skip ``i`` (same length as
            ``encoder_channels`` minus one); default ``clamp(encoder_channels[i], 16, 256)``.
        final_channels: channels of the full-resolution stage.
        spatial_dims: 2 or 3.
    """

    def __init__(self, encoder_channels: Sequence[int], *, num_classes: int, in_chans: int = 1,
                 decoder_channels: Sequence[int] | None = None, final_channels: int = 16,
                 spatial_dims: int = 2) -> None:
        super().__init__()
        _check_dims(spatial_dims)
        encoder_channels = [int(c) for c in encoder_channels]
        if not encoder_channels:
            raise ValueError("the encoder gives no feature maps")
        if decoder_channels is None:
            decoder_channels = [min(max(c, 16), 256) for c in encoder_channels[:-1]]
        if len(decoder_channels) != len(encoder_channels) - 1:
            raise ValueError(f"decoder_channels needs {len(encoder_channels) - 1} entries, got {len(decoder_channels)}")
        self.spatial_dims = spatial_dims
        self.stages = nn.ModuleList()
        current = encoder_channels[-1]
        for skip, out in zip(reversed(encoder_channels[:-1]), reversed(list(decoder_channels))):
            self.stages.append(nn.Sequential(ConvNormAct(current + skip, out, spatial_dims=spatial_dims),
                                             ConvNormAct(out, out, spatial_dims=spatial_dims)))
            current = out
        self.final = nn.Sequential(ConvNormAct(current + in_chans, final_channels, spatial_dims=spatial_dims),
                                   ConvNormAct(final_channels, final_channels, spatial_dims=spatial_dims))
        self.classifier = _CONV[spatial_dims](final_channels, num_classes, 1)

    def forward(self, skips: Sequence[torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        """``skips`` shallow to deep, each (B, C_i, [D_i], H_i, W_i); ``image`` (B, C, [D], H, W) ->
        logits (B, K, [D], H, W)."""
        x = skips[-1]
        for stage, skip in zip(self.stages, reversed(skips[:-1])):
            x = stage(torch.cat([_resize(x, skip.shape[2:], self.spatial_dims), skip], dim=1))
        x = self.final(torch.cat([_resize(x, image.shape[2:], self.spatial_dims), image], dim=1))
        return self.classifier(x)


class BackboneUNet(nn.Module):
    """U-Net whose encoder is ``backbone`` (trained along, i.e. full fine-tuning) and whose decoder is new.

    Args:
        backbone: meets the backbone contract (``forward_skips``, ``skip_channels``, ``spatial_dims``,
            ``in_chans``; see the module docstring).
        num_classes: K, background included.
        decoder_channels, final_channels: see ``UNetDecoder``.

    Input (B, C, [D], H, W) -> logits (B, K, [D], H, W), the input's spatial size.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, decoder_channels: Sequence[int] | None = None,
                 final_channels: int = 16) -> None:
        super().__init__()
        for attr in ("forward_skips", "skip_channels", "spatial_dims"):
            if not hasattr(backbone, attr):
                raise TypeError(f"{type(backbone).__name__} does not meet the backbone contract: no {attr!r} "
                                "(organfm.backbones gives forward_skips, skip_channels and spatial_dims)")
        self.backbone = backbone
        self.spatial_dims = int(backbone.spatial_dims)
        self.encoder_channels = [int(c) for c in backbone.skip_channels]
        in_chans = int(getattr(backbone, "in_chans", 1))
        self.decoder = UNetDecoder(self.encoder_channels, num_classes=num_classes, in_chans=in_chans,
                                   decoder_channels=decoder_channels, final_channels=final_channels,
                                   spatial_dims=self.spatial_dims)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Multi-scale feature maps, shallow to deep (``backbone.forward_skips``)."""
        skips = list(self.backbone.forward_skips(x))
        if len(skips) != len(self.encoder_channels):
            raise ValueError(f"{type(self.backbone).__name__}.forward_skips gave {len(skips)} maps, "
                             f"skip_channels lists {len(self.encoder_channels)}")
        return skips

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode(x), x)
