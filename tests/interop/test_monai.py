"""``--format monai``: a strict load into MONAI ``SwinUNETR(use_v2=True).swinViT``, with the same outputs."""
from __future__ import annotations

import json

import pytest
import torch

from organfm.backbones import create_backbone
from organfm.interop.monai import MONAI_ARGS, MONAI_WEIGHTS, check_monai_exportable, save_monai_export

pytest.importorskip("monai")
from monai.networks.nets import SwinUNETR  # noqa: E402

ARGS = {"in_chans": 1, "embed_dim": 12, "depths": [2, 2, 2, 2], "num_heads": [3, 6, 12, 24], "window_size": 7,
        "patch_size": 2}


def test_swinunetr_swinvit_loads_strictly_and_computes_organfms_features(tmp_path):
    torch.manual_seed(0)
    b = create_backbone("swin3d", **ARGS).eval()
    paths = save_monai_export(tmp_path, b.model.state_dict(), {"architecture": "swin3d", "backbone_args": ARGS})
    assert [p.name for p in paths] == [MONAI_WEIGHTS, MONAI_ARGS]
    kwargs = json.loads((tmp_path / MONAI_ARGS).read_text())
    model = SwinUNETR(out_channels=2, **kwargs).eval()
    state = torch.load(tmp_path / MONAI_WEIGHTS, weights_only=True)
    model.swinViT.load_state_dict(state, strict=True)
    own = model.swinViT.state_dict()
    for key, tensor in b.model.vit.state_dict().items():  # every tensor landed under MONAI's own name
        assert torch.equal(own[key], tensor), key
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        theirs = model.swinViT(x, normalize=True)
        ours = b.forward_skips(x)
    assert len(theirs) == len(ours) == 5
    for t, o in zip(theirs, ours):
        assert torch.equal(t, o)  # organfm's swin3d runs MONAI's own modules: bit for bit


def test_mismatches_are_refused_by_name():
    with pytest.raises(ValueError, match="only the swin3d"):
        check_monai_exportable("plainconv3d", ARGS, {})
    with pytest.raises(ValueError, match=r"head\.weight"):
        check_monai_exportable("swin3d", ARGS, {"vit.patch_embed.proj.weight": torch.zeros(1),
                                                "head.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="divisible by 12"):
        check_monai_exportable("swin3d", {**ARGS, "embed_dim": 6}, {})
