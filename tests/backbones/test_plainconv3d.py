"""plainconv3d: stages and strides, voxel-space mask value, export metadata rebuilds the architecture."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from organfm.backbones import create_backbone
from organfm.backbones.weights import BACKBONE_ARGS_KEY


def test_stages_strides_and_pooling():
    b = create_backbone("plainconv3d", in_chans=1, channels=[4, 8, 16], strides=[1, 2, 2])
    x = torch.randn(2, 1, 16, 16, 16)
    skips = b.forward_skips(x)
    assert [tuple(s.shape) for s in skips] == [(2, 4, 16, 16, 16), (2, 8, 8, 8, 8), (2, 16, 4, 4, 4)]
    assert torch.allclose(b(x), skips[-1].mean(dim=(2, 3, 4)))
    assert b.num_features == 16 and b.skip_channels == [4, 8, 16] and b.spatial_dims == 3


def test_mask_replaces_masked_voxels_by_the_learned_value():
    b = create_backbone("plainconv3d", in_chans=1, channels=[4, 8], strides=[1, 2]).eval()
    with torch.no_grad():
        b.model.mask_value.fill_(0.7)
    x = torch.rand(1, 1, 8, 8, 8)
    mask = torch.zeros(1, 1, 8, 8, 8)
    mask[..., :4] = 1
    filled = torch.where(mask.bool(), torch.full_like(x, 0.7), x)
    out, ref = b.forward_skips(x, mask=mask), b.forward_skips(filled)
    assert all(torch.allclose(a, r, atol=1e-6) for a, r in zip(out, ref))
    with pytest.raises(ValueError, match="does not match input"):
        b.forward_skips(x, mask=mask[..., :4])


def test_mask_value_is_learned():
    b = create_backbone("plainconv3d", in_chans=1, channels=[4, 8], strides=[1, 2])
    x, mask = torch.rand(2, 1, 8, 8, 8), (torch.rand(2, 1, 8, 8, 8) > 0.5).float()
    b.forward_skips(x, mask=mask)[-1].pow(2).mean().backward()
    assert b.model.mask_value.grad is not None and b.model.mask_value.grad.abs().item() > 0
    b.model.mask_value.grad = None
    b.forward_skips(x)[-1].pow(2).mean().backward()  # no mask: the value is not used
    assert b.model.mask_value.grad is None


def test_export_metadata_rebuilds_the_architecture(tmp_path):
    b = create_backbone("plainconv3d", in_chans=1, channels=[4, 8, 16], strides=[1, 2, 2])
    path = tmp_path / "w.safetensors"
    save_file(b.model.state_dict(), str(path), metadata={BACKBONE_ARGS_KEY: json.dumps(b.backbone_args)})
    again = create_backbone("plainconv3d", in_chans=1, pretrained_file=str(path))
    assert again.backbone_args == b.backbone_args
    x = torch.randn(1, 1, 16, 16, 16)
    assert torch.equal(again.eval()(x), b.eval()(x))


def test_bad_input_and_arguments():
    b = create_backbone("plainconv3d", in_chans=1)
    with pytest.raises(ValueError, match=r"expects \(B, 1, D, H, W\)"):
        b(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="spatial_dims must be 3"):
        create_backbone("plainconv3d", in_chans=1, spatial_dims=2)
