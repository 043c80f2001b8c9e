"""unet_small: a small U-Net behind the dense contract; any input size by zero padding at the far end, items of a
batch independent of each other (GroupNorm), and refusals of what it cannot be."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from organfm.backbones import UNetBackbone
from organfm.backbones.unet import UNet


def test_unet_keeps_odd_sizes_and_rejects_wrong_inputs():
    model = UNetBackbone(channels=(8, 16, 32, 64))
    assert model.forward_features(torch.rand(1, 1, 28, 31))["dense"].shape == (1, 32, 28, 31)
    with pytest.raises(ValueError, match="2D backbone"):
        model(torch.rand(1, 1, 8, 8, 8))
    with pytest.raises(ValueError, match="stochastic depth"):
        UNetBackbone(drop_path_rate=0.1)
    with pytest.raises(ValueError, match="spatial_dims"):
        UNetBackbone(spatial_dims=4)
    with pytest.raises(ValueError, match=r"at least 2 levels, got channels=\(8,\)"):
        UNet(2, 1, (8,), 4)


@pytest.mark.parametrize("spatial_dims, size, padded", [(2, (28, 31), (32, 32)), (3, (6, 9, 4), (8, 12, 4))])
def test_an_odd_input_is_the_zero_padded_input_cropped_back(spatial_dims, size, padded):
    # 3 levels pad to a multiple of 4 in 3D, 4 levels to a multiple of 8 in 2D: zeros at the far end of each axis
    channels = [4, 8, 16, 16] if spatial_dims == 2 else [4, 8, 8]
    torch.manual_seed(0)
    model = UNetBackbone(spatial_dims=spatial_dims, channels=channels, num_features=5).eval()
    x = torch.rand(2, 1, *size)
    pad = [p for n, t in zip(reversed(size), reversed(padded)) for p in (0, t - n)]
    with torch.no_grad():
        dense = model.forward_features(x)["dense"]
        by_hand = model.model(F.pad(x, pad))[(..., *(slice(0, n) for n in size))]
    torch.testing.assert_close(dense, by_hand, rtol=0, atol=1e-6)


def test_each_item_of_a_training_batch_is_encoded_on_its_own():
    # GroupNorm normalises within an item: a batch statistic (BatchNorm) would let one image change another's map
    torch.manual_seed(0)
    model = UNetBackbone(channels=[8, 16], num_features=4).train()
    a, b = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    alone = model(a)
    together = model(torch.cat([a, 10 * b]))
    torch.testing.assert_close(together[:1], alone, rtol=0, atol=1e-6)


def test_backbone_args_are_plain_lists_and_the_defaults_fill_the_rest():
    model = UNetBackbone(channels=(4, 8))
    assert model.backbone_args == {"spatial_dims": 2, "in_chans": 1, "num_features": 32, "channels": [4, 8]}
    assert model.skip_channels == [32] and model.in_chans == 1
