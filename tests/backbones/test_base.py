"""The backbone contract's shared pieces: the runtime Protocol, the skip-pooled mixin, and the input-size check
that refuses a too-small view before any step, naming the key and the smallest size that works."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from organfm.backbones import create_backbone
from organfm.backbones.base import Backbone, SkipPooledBackbone, check_input_sizes
from organfm.configtree import ConfigError


class _Picky(nn.Module):
    """Refuses inputs smaller than ``smallest`` per side (as a conv stack whose kernel outgrows the map), and
    draws from the global RNG on every call (as dropout would), to show the check leaves the RNG alone."""

    def __init__(self, smallest: int, spatial_dims: int = 2) -> None:
        super().__init__()
        self.smallest, self.spatial_dims, self.in_chans = smallest, spatial_dims, 1
        self.seen: list[tuple[int, ...]] = []
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape))
        self.modes.append(self.training)
        torch.rand(1)
        if min(x.shape[2:]) < self.smallest:
            raise RuntimeError("Kernel size can't be greater than actual input size")
        return x.flatten(1).mean(1, keepdim=True)


def test_a_too_small_size_names_the_key_its_value_and_the_smallest_size_that_works():
    net = _Picky(smallest=40).train()
    state = torch.get_rng_state()
    with pytest.raises(ConfigError, match=r"^views.local_size=16 is too small for backbone picky: the smallest size "
                                          r"it accepts is 48; raise views.local_size to at least 48$"):
        check_input_sizes(net, {"views.global_size": 64, "views.local_size": 16}, name="picky")
    # each size tried once with a zero input of the backbone's dims, in eval mode; then the candidates above 16
    assert net.seen[:3] == [(1, 1, 64, 64), (1, 1, 16, 16), (1, 1, 24, 24)]
    assert not any(net.modes) and net.training  # tried in eval mode, given back in training mode
    assert torch.equal(torch.get_rng_state(), state)


def test_sizes_that_fit_pass_and_3d_backbones_are_tried_with_volumes():
    net = _Picky(smallest=8, spatial_dims=3)
    check_input_sizes(net, {"data.crop": 8})
    assert net.seen == [(1, 1, 8, 8, 8)]
    with pytest.raises(ConfigError, match=r"data.crop=4 is too small for backbone the backbone: no size up to 512 "
                                          r"worked; raise data.crop$"):
        check_input_sizes(_Picky(smallest=10_000), {"data.crop": 4})


def test_token_set_encoders_and_no_sizes_are_not_tried():
    net = _Picky(smallest=10_000)
    net.tokens_per_organ = 4  # an organ-set encoder: its input is a set of images, not one image
    check_input_sizes(net, {"views.global_size": 8})
    check_input_sizes(_Picky(smallest=10_000), {})
    assert net.seen == []


def test_a_real_convnext_refuses_a_view_below_its_stride():
    convnext = create_backbone("test_convnext", in_chans=1)
    check_input_sizes(convnext, {"views.global_size": 32})
    with pytest.raises(ConfigError, match="views.local_size=16 is too small for backbone test_convnext"):
        check_input_sizes(convnext, {"views.local_size": 16}, name="test_convnext")


class _TwoMaps(SkipPooledBackbone, nn.Module):
    """Two fixed maps: the pooled embedding must come from the deepest (last) one."""

    def __init__(self) -> None:
        super().__init__()
        self.shallow = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
        self.deep = torch.tensor([[1.0, 3.0], [5.0, 7.0]])[None, None].repeat(2, 5, 1, 1)  # (2, 5, 2, 2)
        self.deep[1] *= -1

    def forward_skips(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.shallow, self.deep]


def test_the_skip_pooled_embedding_is_the_mean_of_the_deepest_map():
    net = _TwoMaps()
    out = net.forward_features(torch.zeros(2, 1, 8, 8))
    assert out["feature_map"] is net.deep
    assert torch.equal(out["cls"], torch.tensor([[4.0] * 5, [-4.0] * 5]))  # (1 + 3 + 5 + 7) / 4, per channel
    assert torch.equal(net(torch.zeros(2, 1, 8, 8)), out["cls"])


def test_the_protocol_is_checked_at_run_time():
    assert isinstance(create_backbone("test_resnet"), Backbone)
    assert not isinstance(nn.Linear(2, 2), Backbone)  # no num_features, spatial_dims, forward_skips, ...
