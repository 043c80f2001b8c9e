"""Every backbone meets the one contract (generated from the registry, plus timm names)."""
from __future__ import annotations

import pytest
import torch

from organfm.backbones import create_backbone, list_backbones

# organfm's own backbones at a CPU-friendly size, and two timm families (CNN, ViT-free)
CASES = {name: {} for name in list_backbones()}
CASES.update({"unet_small": {"channels": [8, 16]}, "swin_unetr": {"feature_size": 12},
              "plainconv3d": {"channels": [4, 8, 16], "strides": [1, 2, 2]}, "swin3d": {"embed_dim": 6},
              "organ_set_vit": {"num_organs": 1},  # a (B, 1, H, W) input is a set of one organ
              "test_convnext": {}, "test_resnet": {}})


def _input(backbone, size: int = 32) -> torch.Tensor:
    return torch.randn((2, 1) + (size,) * int(backbone.spatial_dims))


@pytest.mark.parametrize("name", sorted(CASES))
def test_backbone_meets_the_contract(name):
    backbone = create_backbone(name, in_chans=1, **CASES[name]).eval()
    x = _input(backbone)
    with torch.no_grad():
        pooled = backbone(x)
        feats = backbone.forward_features(x)
        try:
            skips = backbone.forward_skips(x)
        except NotImplementedError:  # a token-set encoder has no spatial maps (backbones/base.py)
            skips = []
    assert pooled.shape == (2, backbone.num_features)
    assert torch.allclose(feats["cls"], pooled, atol=1e-5)
    assert [s.shape[1] for s in skips] == list(backbone.skip_channels)
    assert all(s.dim() == 2 + backbone.spatial_dims and s.shape[0] == 2 for s in skips)
    sizes = [s.shape[-1] for s in skips]
    assert sizes == sorted(sizes, reverse=True), "skips go shallow (large) to deep (small)"
    assert isinstance(backbone.backbone_args, dict) and hasattr(backbone, "model")
    if "dense" in feats:  # a dense map is full resolution
        assert feats["dense"].shape[2:] == x.shape[2:]


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_created_backbone_carries_a_contract_of_the_one_type(name):
    from organfm.backbones import BackboneContract

    backbone = create_backbone(name, in_chans=1, **CASES[name])
    contract = backbone.contract
    assert type(contract) is BackboneContract
    assert contract.architecture == name and contract.backbone_args == backbone.backbone_args
    assert contract.num_features == backbone.num_features and contract.spatial_dims == backbone.spatial_dims
    assert contract.in_chans == 1
    # a fresh network has no input contract yet: pretraining or an export fills it in
    assert contract.input_size is None and contract.mean is None and contract.pretrained_cfg is None
