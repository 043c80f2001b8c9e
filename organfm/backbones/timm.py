"""Any timm architecture behind the backbone contract, 1-channel by default, weights from local files only."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = ["TimmBackbone"]


class TimmBackbone(nn.Module):
    """Adapter around ``timm.create_model(name, num_classes=0, in_chans=...)``.

    The wrapped ``model`` keeps timm's own parameter names, so its ``state_dict`` loads back with
    ``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=...), num_classes=0)``.

    Args:
        name: timm architecture (``timm.list_models()``).
        in_chans: input channels; 1 for grayscale medical images.
        pretrained_file: local ``.safetensors``/``.pth`` weights (e.g. an organfm export, or an
            ImageNet checkpoint whose first conv timm sums down to 1 channel). Never a hub download.
        drop_path_rate: stochastic depth.
    """

    spatial_dims = 2

    def __init__(self, name: str, *, in_chans: int = 1, pretrained_file: str | None = None,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        import timm

        if not timm.is_model(name):
            raise ValueError(f"unknown timm architecture {name!r} (see timm.list_models())")
        kwargs = dict(num_classes=0, in_chans=in_chans, drop_path_rate=drop_path_rate)
        if pretrained_file is not None:
            if not Path(pretrained_file).is_file():
                raise FileNotFoundError(f"backbone weights {pretrained_file} do not exist")
            kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(pretrained_file)))
        self.model = timm.create_model(name, **kwargs)
        self.name = name
        self.in_chans = in_chans
        self.num_features = int(self.model.num_features)

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.model.forward_features(x)
        out = {"cls": self.model.forward_head(feats, pre_logits=True)}
        if feats.ndim == 4:
            out["feature_map"] = feats
        else:  # ViT-style tokens (B, N, E)
            out["tokens"] = feats
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
