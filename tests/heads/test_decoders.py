"""U-Net decoder against the backbone contract only: forward_skips, skip_channels, spatial_dims."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from organfm.heads.decoders import BackboneUNet


class ContractOnly(nn.Module):
    """A backbone that meets the contract and nothing else: ``forward``/``model`` would fail if used."""

    def __init__(self, spatial_dims: int = 2) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.spatial_dims, self.in_chans, self.skip_channels = spatial_dims, 1, [4, 8]
        self.a, self.b = conv(1, 4, 3, stride=2, padding=1), conv(4, 8, 3, stride=2, padding=1)
        self.calls = 0

    def forward_skips(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.calls += 1
        s1 = self.a(x)
        return [s1, self.b(s1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the decoder must use forward_skips, not the pooled forward")


@pytest.mark.parametrize("dims,shape", [(2, (2, 1, 16, 16)), (3, (1, 1, 8, 16, 16))])
def test_unet_uses_only_the_contract(dims: int, shape: tuple[int, ...]) -> None:
    backbone = ContractOnly(dims)
    model = BackboneUNet(backbone, num_classes=3)
    assert model.encoder_channels == [4, 8] and backbone.calls == 0  # channels read, not probed
    logits = model(torch.randn(shape))
    assert logits.shape == (shape[0], 3, *shape[2:]) and backbone.calls == 1
    F.cross_entropy(logits, torch.zeros((shape[0], *shape[2:]), dtype=torch.long)).backward()
    for name, p in model.named_parameters():  # every encoder and decoder parameter is trained
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_contract_violations_are_clear_errors() -> None:
    with pytest.raises(TypeError, match="no 'forward_skips'"):
        BackboneUNet(nn.Conv2d(1, 4, 3), num_classes=2)
    backbone = ContractOnly()
    backbone.skip_channels = [4, 8, 16]  # says three maps, gives two
    with pytest.raises(ValueError, match="gave 2 maps, skip_channels lists 3"):
        BackboneUNet(backbone, num_classes=2)(torch.randn(1, 1, 16, 16))
