"""Any timm architecture behind the backbone contract, 1-channel by default, weights from local files only."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = ["TimmBackbone"]


class TimmBackbone(nn.Module):
    """Adapter around ``timm.create_model(name, num_classes=0, in_chans=...)``.

    The wrapped ``model`` keeps timm's own parameter names. Weights are read by organfm itself
    (``organfm.backbones.weights``: safetensors, or ``torch.load(weights_only=True)``) and loaded
    strictly: timm's ``pretrained_cfg_overlay`` path loads non-strictly and would accept another
    architecture's weights with only an "Unexpected keys" line.

    Args:
        name: timm architecture (``timm.list_models()``).
        in_chans: input channels; 1 for grayscale medical images.
        pretrained_file: local ``.safetensors``/``.pth`` weights (e.g. an organfm export, or an
            ImageNet checkpoint whose first conv timm sums down to 1 channel). Never a hub download.
        drop_path_rate: stochastic depth.
        strict: every tensor of the file must fit the architecture (else a ValueError naming the file,
            the architecture and the first offending keys). ``False`` is the opt-in for partial loading:
            tensors that fit are loaded, the rest reported in a warning and in ``self.load_report``.
    """

    spatial_dims = 2

    def __init__(self, name: str, *, in_chans: int = 1, pretrained_file: str | None = None,
                 drop_path_rate: float = 0.0, strict: bool = True) -> None:
        super().__init__()
        import timm

        if not timm.is_model(name):
            raise ValueError(f"unknown timm architecture {name!r} (see timm.list_models())")
        kwargs = dict(num_classes=0, in_chans=in_chans, drop_path_rate=drop_path_rate)
        if pretrained_file is not None and not Path(pretrained_file).is_file():
            raise FileNotFoundError(f"backbone weights {pretrained_file} do not exist")
        self.model = timm.create_model(name, **kwargs)
        self.load_report = None
        if pretrained_file is not None:
            from organfm.backbones.weights import load_state_dict_checked, read_state_dict

            state = _timm_layout(self.model, read_state_dict(pretrained_file), in_chans)
            self.load_report = load_state_dict_checked(self.model, state, path=pretrained_file, architecture=name,
                                                       strict=strict)
        self.name = name
        self.in_chans = in_chans
        # E is the pooled embedding's width: timm's head_hidden_size where a model has a pre-logits stage
        # (MobileNetV3: a 1x1 conv from 576 to 1024 channels after pooling), else its num_features
        self.num_features = int(getattr(self.model, "head_hidden_size", None) or self.model.num_features)
        self.backbone_args: dict = {}  # a timm name rebuilds the architecture by itself
        info = getattr(self.model, "feature_info", None) or []
        self.skip_channels = [int(f["num_chs"]) for f in info]

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.model.forward_features(x)
        out = {"cls": self.model.forward_head(feats, pre_logits=True)}
        if feats.ndim == 4:
            out["feature_map"] = feats
        else:  # ViT-style tokens (B, N, E)
            out["tokens"] = feats
        return out

    def forward_skips(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every ``feature_info`` stage, shallow to deep (ConvNeXt: strides 4, 8, 16, 32)."""
        if not hasattr(self.model, "forward_intermediates"):
            raise NotImplementedError(f"timm {self.name!r} has no forward_intermediates: no multi-scale maps")
        return list(self.model.forward_intermediates(x, intermediates_only=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _timm_layout(model: nn.Module, state: dict[str, torch.Tensor], in_chans: int) -> dict[str, torch.Tensor]:
    """What timm's pretrained path does before loading, minus its non-strict load.

    The architecture's own checkpoint filter (original-repo key names -> timm's), the first conv of a
    3-channel checkpoint summed down to ``in_chans``, and the classifier dropped (``num_classes=0``).
    """
    import sys

    from timm.models import adapt_input_conv

    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            state = filter_fn(state, model)
        except Exception:  # a filter written for another layout: leave the keys for the strict check to name
            pass
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    own = model.state_dict()
    first = cfg.get("first_conv")
    for conv in ([first] if isinstance(first, str) else list(first or [])):
        weight = state.get(f"{conv}.weight")
        if weight is not None and weight.ndim == 4 and f"{conv}.weight" in own and \
                weight.shape[1] != own[f"{conv}.weight"].shape[1] and weight.shape[1] == 3:
            state = dict(state, **{f"{conv}.weight": adapt_input_conv(in_chans, weight)})
    classifier = cfg.get("classifier")
    for head in ([classifier] if isinstance(classifier, str) else list(classifier or [])):
        for suffix in (".weight", ".bias"):
            if f"{head}{suffix}" in state and f"{head}{suffix}" not in own:
                state = {k: v for k, v in state.items() if k != f"{head}{suffix}"}
    return state
