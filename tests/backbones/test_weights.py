"""Weights of organfm's own backbones: safetensors whose metadata lets create_backbone rebuild the architecture."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from organfm.backbones import create_backbone
from organfm.backbones.weights import read_backbone_args


def export(model, path) -> None:
    save_file({k: v.contiguous() for k, v in model.model.state_dict().items()}, str(path),
              metadata={"format": "pt", "backbone_args": json.dumps(model.backbone_args)})


@pytest.mark.parametrize("name, kwargs, shape", [
    ("unet_small", {"spatial_dims": 3, "channels": [4, 8], "num_features": 6}, (1, 1, 8, 8, 8)),
    ("swin_unetr", {"spatial_dims": 2, "feature_size": 12, "num_features": 5}, (1, 1, 32, 32)),
])
def test_exported_weights_load_back_without_repeating_the_architecture(tmp_path, name, kwargs, shape):
    torch.manual_seed(0)
    model = create_backbone(name, **kwargs).eval()
    export(model, tmp_path / "w.safetensors")
    assert read_backbone_args(tmp_path / "w.safetensors")["num_features"] == kwargs["num_features"]
    loaded = create_backbone(name, pretrained_file=str(tmp_path / "w.safetensors")).eval()
    assert loaded.spatial_dims == kwargs["spatial_dims"] and loaded.num_features == kwargs["num_features"]
    x = torch.rand(shape)
    with torch.no_grad():
        assert torch.equal(model.forward_features(x)["dense"], loaded.forward_features(x)["dense"])


def test_mismatched_weights_and_missing_files_raise(tmp_path):
    model = create_backbone("unet_small", channels=[4, 8])
    export(model, tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="does not fit"):
        create_backbone("unet_small", channels=[4, 16], pretrained_file=str(tmp_path / "w.safetensors"))
    torch.save(model.model.state_dict(), tmp_path / "w.pth")  # no metadata: the caller names the architecture
    assert create_backbone("unet_small", channels=[4, 8], pretrained_file=str(tmp_path / "w.pth")).num_features == 32
    with pytest.raises(FileNotFoundError):
        create_backbone("unet_small", pretrained_file=str(tmp_path / "missing.safetensors"))
