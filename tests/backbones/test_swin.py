"""swin_unetr: MONAI SwinUNETR behind the dense contract; its weights are MONAI's own (an export loads strictly
into ``monai.networks.nets.SwinUNETR``), and any input size is zero-padded to a multiple of 32 (at least 64)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from organfm.backbones import SwinUNETRBackbone


@pytest.mark.slow
def test_swin_unetr_3d_forward_and_defaults():
    model = SwinUNETRBackbone(spatial_dims=3, feature_size=12, num_features=4).eval()
    with torch.no_grad():
        out = model.forward_features(torch.rand(1, 1, 20, 24, 32))  # padded to 64^3, cropped back
    assert out["dense"].shape == (1, 4, 20, 24, 32)
    assert model.model.swinViT.layers1[0].use_checkpoint  # on by default in 3D, as RaSD's 3D trainer
    small = SwinUNETRBackbone(feature_size=12)
    assert small.backbone_args == {"spatial_dims": 2, "in_chans": 1, "num_features": 32, "feature_size": 12}
    assert not small.model.swinViT.layers1[0].use_checkpoint
    with pytest.raises(ValueError, match="multiple of 12"):
        SwinUNETRBackbone(feature_size=16)


def test_the_weights_load_strictly_into_monai_swinunetr_and_give_the_same_map():
    from monai.networks.nets import SwinUNETR

    torch.manual_seed(0)
    ours = SwinUNETRBackbone(feature_size=12, num_features=6).eval()
    theirs = SwinUNETR(in_channels=1, out_channels=6, feature_size=12, spatial_dims=2, use_v2=True).eval()
    theirs.load_state_dict(ours.model.state_dict(), strict=True)
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_features(x)["dense"], theirs(x), rtol=0, atol=1e-6)


def test_a_small_odd_input_is_zero_padded_to_64_and_cropped_back():
    torch.manual_seed(0)
    model = SwinUNETRBackbone(feature_size=12, num_features=3).eval()
    x = torch.rand(1, 1, 40, 70)
    with torch.no_grad():
        dense = model.forward_features(x)["dense"]
        by_hand = model.model(F.pad(x, (0, 96 - 70, 0, 64 - 40)))[..., :40, :70]  # 70 -> 96, 40 -> 64 (the minimum)
    assert dense.shape == (1, 3, 40, 70)
    torch.testing.assert_close(dense, by_hand, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"expected \(B, 1, H, W\) input for a 2D backbone"):
        model(torch.rand(1, 2, 64, 64))
