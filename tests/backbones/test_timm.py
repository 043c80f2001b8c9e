"""TimmBackbone: any timm architecture behind the contract (feature map or tokens, stage skips), grey by default,
local weights only; an RGB ImageNet checkpoint with its classifier still loads into a grey headless model."""
from __future__ import annotations

import pytest
import torch

from organfm.backbones import TimmBackbone, create_backbone


def test_a_cnn_gives_a_feature_map_and_its_stages_as_skips_shallow_to_deep():
    b = create_backbone("test_convnext").eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        out = b.forward_features(x)
        skips = b.forward_skips(x)
        pooled = b(x)
    assert b.spatial_dims == 2 and b.backbone_args == {} and b.model.stem[0].in_channels == 1
    assert set(out) == {"cls", "feature_map"} and out["feature_map"].shape == (2, b.num_features, 2, 2)
    torch.testing.assert_close(out["cls"], pooled)
    # ConvNeXt's four stages at strides 4, 8, 16, 32 of a 64 px input
    assert [tuple(s.shape) for s in skips] == [(2, c, 64 // r, 64 // r) for c, r in
                                               zip(b.skip_channels, (4, 8, 16, 32))]
    assert b.skip_channels == [f["num_chs"] for f in b.model.feature_info]


def test_a_vit_gives_its_tokens_and_a_pooled_embedding():
    b = create_backbone("test_vit").eval()
    size = b.model.default_cfg["input_size"][-1]
    with torch.no_grad():
        out = b.forward_features(torch.rand(2, 1, size, size))
    patches = (size // b.model.patch_embed.patch_size[0]) ** 2
    assert set(out) == {"cls", "tokens"} and out["cls"].shape == (2, b.num_features)
    assert out["tokens"].shape == (2, b.model.num_prefix_tokens + patches, b.num_features)


def test_three_channels_on_request_and_bad_names_or_files_are_errors(tmp_path):
    rgb = TimmBackbone("test_resnet", in_chans=3).eval()
    assert rgb.in_chans == 3 and rgb(torch.rand(1, 3, 32, 32)).shape == (1, rgb.num_features)
    with pytest.raises(ValueError, match=r"unknown timm architecture 'no_such_net'"):
        TimmBackbone("no_such_net")
    with pytest.raises(FileNotFoundError, match="missing.safetensors do not exist"):
        TimmBackbone("test_resnet", pretrained_file=str(tmp_path / "missing.safetensors"))


def test_an_rgb_checkpoint_with_a_classifier_still_loads_into_a_gray_headless_model(tmp_path):
    # what timm's pretrained path did for ImageNet weights and users rely on: sum the stem to 1 channel, drop fc
    import timm

    rgb = timm.create_model("test_resnet", num_classes=7, in_chans=3)
    torch.save(rgb.state_dict(), tmp_path / "imagenet.pth")
    model = create_backbone("test_resnet", in_chans=1, pretrained_file=str(tmp_path / "imagenet.pth"))
    assert model.load_report.complete
    assert torch.allclose(model.model.conv1[0].weight, rgb.conv1[0].weight.sum(1, keepdim=True))


def test_num_features_is_the_pooled_embeddings_width_also_with_a_pre_logits_stage():
    # MobileNetV3 pools 576 channels and widens them to 1024 (conv_head) before the classifier: a head sized
    # from the 576 would not accept the embedding (the MMKD student crashed at its first monitor step)
    import torch

    from organfm.backbones import create_backbone

    for name in ("mobilenetv3_small_100", "test_resnet"):
        backbone = create_backbone(name).eval()
        with torch.no_grad():
            out = backbone(torch.zeros(2, 1, 32, 32))
        assert out.shape == (2, backbone.num_features) and backbone.contract.num_features == backbone.num_features
    assert create_backbone("mobilenetv3_small_100").num_features == 1024
