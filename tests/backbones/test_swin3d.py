"""swin3d: token-level mask (masked patches become the learnable token), Triad trains it, export rebuilds it."""
from __future__ import annotations

import json

import torch
from safetensors.torch import save_file

from organfm.backbones import create_backbone
from organfm.backbones.weights import BACKBONE_ARGS_KEY
from organfm.methods import create_method
from organfm.methods.base import StepState
from organfm.views.mask3d import SimMIMMask3D


def test_masked_patches_are_replaced_by_the_token():
    b = create_backbone("swin3d", in_chans=1, embed_dim=6).eval()
    x = torch.rand(1, 1, 32, 32, 32)
    mask = torch.zeros(1, 1, 32, 32, 32)
    mask[..., :16] = 1
    with torch.no_grad():
        b.model.mask_token.fill_(0.3)
        masked = b.forward_skips(x, mask=mask)
        # the same as replacing those patch embeddings by hand
        emb = b.model.vit.patch_embed(x)
        emb[..., :8] = 0.3
        ref = b.model.vit.proj_out(emb, True)
    assert torch.allclose(masked[0], ref, atol=1e-6)
    assert [s.shape[1] for s in masked] == b.skip_channels == [6, 12, 24, 48, 96]


def test_triad_trains_the_mask_token():
    torch.manual_seed(0)
    b = create_backbone("swin3d", in_chans=1, embed_dim=6)
    # 64³: the decoder's instance norms need a bottleneck of more than one voxel (64 / 32 = 2)
    m = create_method("triad", backbone=b, cube=64, mask_patch_size=16, text_dim=8, text_hidden=16)
    gen = SimMIMMask3D(64, 16, 2, 0.6)
    batch = {"image": torch.rand(2, 1, 64, 64, 64), "mask": torch.stack([gen() for _ in range(2)]),
             "text": torch.randn(2, 8), "index": torch.arange(2)}
    m(batch, StepState(step=0)).loss.backward()
    assert b.model.mask_token.grad.abs().sum() > 0


def test_export_metadata_rebuilds_the_architecture(tmp_path):
    b = create_backbone("swin3d", in_chans=1, embed_dim=6)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in b.model.state_dict().items()}, str(path),
              metadata={BACKBONE_ARGS_KEY: json.dumps(b.backbone_args)})
    again = create_backbone("swin3d", in_chans=1, pretrained_file=str(path)).eval()
    x = torch.rand(1, 1, 32, 32, 32)
    assert torch.equal(again(x), b.eval()(x))


def test_export_is_monai_swinunetr_swinvit_state():
    from monai.networks.nets import SwinUNETR

    b = create_backbone("swin3d", in_chans=1, embed_dim=12)
    net = SwinUNETR(in_channels=1, out_channels=2, feature_size=12, use_v2=True, spatial_dims=3)
    state = {k[len("vit."):]: v for k, v in b.model.state_dict().items() if k.startswith("vit.")}
    assert set(b.model.state_dict()) - {f"vit.{k}" for k in state} == {"mask_token"}
    net.swinViT.load_state_dict(state, strict=True)
