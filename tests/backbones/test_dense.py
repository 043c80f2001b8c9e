"""Dense backbones (unet_small, swin_unetr): the contract, gradients, any input size, 2D and 3D."""
from __future__ import annotations

import pytest
import torch

from organfm.backbones import Backbone, create_backbone, list_backbones

# SwinUNETR is tiny here (feature_size 12) and needs 64 px per side in training mode (instance norm at 1/32).
CASES = [
    ("unet_small", {"spatial_dims": 2, "channels": [8, 16, 32]}, (2, 1, 20, 28)),
    ("unet_small", {"spatial_dims": 3, "channels": [8, 16]}, (2, 1, 16, 16, 16)),
    ("swin_unetr", {"spatial_dims": 2, "feature_size": 12, "num_features": 8}, (2, 1, 64, 64)),
]


def test_dense_backbones_are_registered():
    assert {"unet_small", "swin_unetr"} <= set(list_backbones())


@pytest.mark.parametrize("name, kwargs, shape", CASES)
def test_contract_shapes_and_every_parameter_gets_a_gradient(name, kwargs, shape):
    torch.manual_seed(0)
    model = create_backbone(name, in_chans=1, drop_path_rate=0.0, **kwargs)
    assert isinstance(model, Backbone) and model.spatial_dims == len(shape) - 2
    x = torch.rand(shape)
    out = model.forward_features(x)
    e = model.num_features
    assert out["dense"].shape == (shape[0], e, *shape[2:]) and out["feature_map"] is out["dense"]
    assert len(out["skips"]) == 1 and out["skips"][0] is out["dense"]
    assert out["cls"].shape == (shape[0], e) and torch.allclose(model(x), out["cls"])
    assert torch.isfinite(out["dense"]).all()
    out["dense"].square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
