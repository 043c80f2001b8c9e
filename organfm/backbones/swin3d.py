"""MONAI's SwinViT in 3D (Triad's "Swin-B" encoder [0]) behind the backbone contract, with a token-level mask.

Triad masks the Swin path on the patch embeddings: every patch whose voxels are hidden is replaced by one
learnable mask token before the Swin stages. The wrapped ``model.vit`` is MONAI's ``SwinTransformer`` with its
own parameter names (``use_v2=True``): the export's ``vit.*`` tensors, prefix stripped, are the state dict of
a MONAI ``SwinUNETR(use_v2=True).swinViT`` of the same sizes (``mask_token`` is the only extra tensor). The paper's
setting is embed 48, depths 2-2-2-2, heads 3-6-12-24, window 7, patch 2; the CPU default is embed 12.

[0] Wang et al., Triad, arXiv 2502.14064; code: github.com/wangshansong1/Triad (``simmim_advanced.py``).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from organfm.backbones.base import SkipPooledBackbone
from organfm.backbones.weights import load_backbone_weights, resolve_backbone_args

__all__ = ["MaskedSwinViT", "Swin3DBackbone"]

_DEFAULTS: dict[str, Any] = {"in_chans": 1, "embed_dim": 12, "depths": (2, 2, 2, 2), "num_heads": (3, 6, 12, 24),
                             "window_size": 7, "patch_size": 2}


class MaskedSwinViT(nn.Module):
    """MONAI ``SwinTransformer`` whose patch embeddings may be replaced by a learnable mask token.

    Args:
        in_chans, embed_dim, depths, num_heads, window_size, patch_size: MONAI's arguments (cubic window/patch).
    """

    def __init__(self, in_chans: int, embed_dim: int, depths: Sequence[int], num_heads: Sequence[int],
                 window_size: int, patch_size: int) -> None:
        super().__init__()
        from monai.networks.nets.swin_unetr import SwinTransformer

        self.patch_size = patch_size
        self.vit = SwinTransformer(in_chans=in_chans, embed_dim=embed_dim, window_size=(window_size,) * 3,
                                   patch_size=(patch_size,) * 3, depths=tuple(depths), num_heads=tuple(num_heads),
                                   use_v2=True, spatial_dims=3)
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim, 1, 1, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """(B, C, S, S, S) [+ voxel mask (B, 1, S, S, S)] -> 5 maps, widths embed·(1, 2, 4, 8, 16), S/2 ... S/32."""
        v = self.vit
        x0 = v.patch_embed(x)
        if mask is not None:
            m = mask if mask.dim() == 5 else mask[:, None]
            # a patch is masked when its voxels are (the mask is drawn on the patch grid, so max == all)
            m = F.max_pool3d(m.to(x0.dtype), self.patch_size)
            x0 = x0 * (1 - m) + self.mask_token.to(x0.dtype) * m
        x0 = v.pos_drop(x0)
        outs = [v.proj_out(x0, True)]
        for conv, layer in ((v.layers1c, v.layers1), (v.layers2c, v.layers2), (v.layers3c, v.layers3),
                            (v.layers4c, v.layers4)):
            x0 = layer[0](conv[0](x0.contiguous()).contiguous())
            outs.append(v.proj_out(x0, True))
        return outs


class Swin3DBackbone(SkipPooledBackbone, nn.Module):
    """``swin3d``: :class:`MaskedSwinViT` behind the backbone contract (inputs: edges a multiple of 32).

    Triad pretraining with it needs ``method.cube`` >= 64 (the light decoder's instance norms need a
    bottleneck of more than one voxel; the paper uses 96).

    Args:
        in_chans: input channels (default 1).
        embed_dim: patch-embedding width (default 12; the paper: 48).
        depths, num_heads: per stage (default 2-2-2-2, 3-6-12-24).
        window_size: attention window edge (default 7).
        patch_size: patch edge (default 2).
        spatial_dims: must be 3.
        pretrained_file: local weights (``.safetensors`` from ``organfm export``).
        drop_path_rate: must be 0 here.
    """

    def __init__(self, *, in_chans: int | None = None, embed_dim: int | None = None,
                 depths: Sequence[int] | None = None, num_heads: Sequence[int] | None = None,
                 window_size: int | None = None, patch_size: int | None = None, spatial_dims: int | None = None,
                 pretrained_file: str | None = None, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        if drop_path_rate:
            raise ValueError(f"swin3d: drop_path_rate must be 0, got {drop_path_rate}")
        if spatial_dims not in (None, 3):
            raise ValueError(f"swin3d is a 3D encoder: spatial_dims must be 3, got {spatial_dims}")
        given = dict(in_chans=in_chans, embed_dim=embed_dim, depths=depths, num_heads=num_heads,
                     window_size=window_size, patch_size=patch_size)
        args = resolve_backbone_args(given, _DEFAULTS, pretrained_file)
        self.backbone_args = {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}
        self.spatial_dims, self.in_chans = 3, int(args["in_chans"])
        e = int(args["embed_dim"])
        self.skip_channels = [e, 2 * e, 4 * e, 8 * e, 16 * e]
        self.num_features = 16 * e
        self.total_stride = int(args["patch_size"]) * 16
        self.model = MaskedSwinViT(self.in_chans, e, args["depths"], args["num_heads"], int(args["window_size"]),
                                   int(args["patch_size"]))
        if pretrained_file is not None:
            load_backbone_weights(self.model, pretrained_file, architecture="swin3d")

    def forward_skips(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """(B, C, D, H, W), edges multiples of 32 -> 5 maps shallow to deep."""
        if x.dim() != 5 or x.shape[1] != self.in_chans or any(n % self.total_stride for n in x.shape[2:]):
            raise ValueError(f"swin3d expects (B, {self.in_chans}, D, H, W) with edges a multiple of "
                             f"{self.total_stride}, got shape {tuple(x.shape)}")
        return self.model(x, mask)
