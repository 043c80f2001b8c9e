from __future__ import annotations

import pytest
import torch

from organfm.synthesis import argmax_labels, draw_label_fields, draw_label_map, draw_smooth_field, warp


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _lag1_correlation(x: torch.Tensor, dim: int) -> float:
    a = x.narrow(dim, 0, x.shape[dim] - 1).flatten()
    b = x.narrow(dim, 1, x.shape[dim] - 1).flatten()
    return torch.corrcoef(torch.stack([a, b]))[0, 1].item()


# ---------------------------------------------------------------- smooth fields


@pytest.mark.parametrize("shape", [(32, 48), (16, 20, 24)])
def test_smooth_field_shape_and_determinism(shape):
    a = draw_smooth_field(shape, 3, (4, 8), 1.0, _gen(0))
    b = draw_smooth_field(shape, 3, (4, 8), 1.0, _gen(0))
    c = draw_smooth_field(shape, 3, (4, 8), 1.0, _gen(1))
    assert a.shape == (3, *shape) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_smooth_field_ignores_and_preserves_global_rng():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = draw_smooth_field((32, 32), 2, (8,), 1.0, _gen(5))
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(123)
    b = draw_smooth_field((32, 32), 2, (8,), 1.0, _gen(5))
    assert torch.equal(a, b)


def test_smooth_field_scale_is_coarse_cell_size():
    # One cell spanning the image: a constant per channel.
    const = draw_smooth_field((32, 32), 2, (32,), 1.0, _gen(0))
    assert torch.allclose(const, const[:, :1, :1].expand_as(const))
    assert not torch.allclose(const[0], const[1])
    # Two points per axis: exactly bilinear, so every second difference vanishes.
    bilinear = draw_smooth_field((32, 32), 1, (16,), 1.0, _gen(0))
    assert bilinear.std() > 0
    for dim in (1, 2):
        assert bilinear.diff(n=2, dim=dim).abs().max() < 1e-5
    # Eight points per axis: curved, but still strongly correlated between neighbours.
    finer = draw_smooth_field((64, 64), 1, (8,), 1.0, _gen(0))
    assert finer.diff(n=2, dim=1).abs().max() > 1e-3
    assert _lag1_correlation(finer, 1) > 0.9 and _lag1_correlation(finer, 2) > 0.9


def test_smooth_field_std_bounds():
    assert torch.equal(draw_smooth_field((16, 16), 1, (4, 8), 0.0, _gen(0)), torch.zeros(1, 16, 16))
    # σ ~ U(0, 2) per scale: over many seeds the sd of a single-scale field spans (0, 2).
    stds = torch.tensor([draw_smooth_field((32, 32), 8, (1,), 2.0, _gen(s)).std().item() for s in range(40)])
    assert stds.max() < 2.2 and stds.min() < 0.5 and stds.max() > 1.5


def test_smooth_field_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        draw_smooth_field((8,), 1, (2,), 1.0, _gen(0))
    with pytest.raises(ValueError, match="positive"):
        draw_smooth_field((8, 8), 1, (0,), 1.0, _gen(0))


# ---------------------------------------------------------------- warp


@pytest.mark.parametrize("shape", [(12, 16), (6, 8, 10)])
def test_warp_zero_flow_is_identity(shape):
    field = torch.randn(2, 3, *shape, generator=_gen(0))
    flow = torch.zeros(2, len(shape), *shape)
    assert torch.allclose(warp(field, flow), field, atol=1e-5)


@pytest.mark.parametrize("shape", [(16, 20), (8, 10, 12)])
@pytest.mark.parametrize("shift", [3, -2])
def test_warp_constant_shift_matches_roll(shape, shift):
    field = torch.randn(1, 2, *shape, generator=_gen(1))
    for axis in range(len(shape)):
        flow = torch.zeros(1, len(shape), *shape)
        flow[:, axis] = shift
        moved = warp(field, flow)
        # out(x) = field(x + shift): a roll by -shift, valid away from the wrapped border.
        rolled = torch.roll(field, -shift, dims=2 + axis)
        n = shape[axis]
        keep = slice(0, n - shift) if shift > 0 else slice(-shift, n)
        sl = [slice(None)] * field.dim()
        sl[2 + axis] = keep
        assert torch.allclose(moved[tuple(sl)], rolled[tuple(sl)], atol=1e-5)
        # Samples that fall outside repeat the border voxel instead of wrapping round.
        border = n - 1 if shift > 0 else 0
        assert torch.allclose(moved.select(2 + axis, border), field.select(2 + axis, border), atol=1e-5)


def test_warp_half_voxel_shift_interpolates():
    field = torch.arange(10.0).view(1, 1, 1, 10).expand(1, 1, 4, 10).contiguous()
    flow = torch.zeros(1, 2, 4, 10)
    flow[:, 1] = 0.5
    assert torch.allclose(warp(field, flow)[0, 0, 0, :9], torch.arange(9.0) + 0.5, atol=1e-5)


def test_warp_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="flow"):
        warp(torch.zeros(1, 1, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="does not match"):
        warp(torch.zeros(1, 1, 8, 9), torch.zeros(1, 2, 8, 8))


# ---------------------------------------------------------------- label maps


@pytest.mark.parametrize("shape,expected_k", [((64, 64), 2), ((128, 128), 4), ((32, 32, 32), 2), ((64, 64, 64), 4)])
def test_default_num_labels_follows_rasd(shape, expected_k):
    fields = draw_label_fields(shape, None, _gen(0), label_scales=(shape[0],), flow_scales=(shape[0],))
    assert fields.shape == (expected_k, *shape)


@pytest.mark.parametrize("shape", [(64, 64), (24, 24, 24)])
def test_label_map_values_and_determinism(shape):
    k = 6
    maps = [draw_label_map(shape, k, _gen(s)) for s in range(8)]
    for m in maps:
        assert m.shape == (1, *shape) and m.dtype == torch.int64
        assert 0 <= m.min() and m.max() < k
    counts = [m.unique().numel() for m in maps]
    assert max(counts) <= k
    assert sum(counts) / len(counts) >= 3  # several labels survive the argmax, not one
    assert torch.equal(maps[0], draw_label_map(shape, k, _gen(0)))
    assert not torch.equal(maps[0], maps[1])


def test_label_fields_warp_each_channel_by_its_own_flow():
    # Hand-rolled reference: the same draws, then a per-channel loop of warps.
    shape, k = (32, 32), 3
    got = draw_label_fields(shape, k, _gen(7))
    g = _gen(7)
    fields = draw_smooth_field(shape, k, (4, 8), 1.0, g)
    flows = draw_smooth_field(shape, 2 * k, (2, 4, 8), 2.0, g).view(k, 2, *shape)
    expected = torch.cat([warp(fields[c].view(1, 1, *shape), flows[c : c + 1])[0] for c in range(k)])
    assert torch.allclose(got, expected, atol=1e-6)
    # The flows are independent: no single shared displacement explains all channels.
    assert not torch.allclose(flows[0], flows[1])
    assert not torch.allclose(got, fields, atol=1e-3)


def test_label_flow_strength_follows_flow_max_std():
    shape = (64, 64)
    still = draw_label_fields(shape, 3, _gen(2), flow_max_std=0.0)
    unwarped = draw_smooth_field(shape, 3, (8, 16), 1.0, _gen(2))
    assert torch.allclose(still, unwarped, atol=1e-5)


def test_argmax_labels_matches_torch_argmax_with_ties():
    fields = torch.randint(0, 3, (5, 7, 9), generator=_gen(0)).float()  # many ties
    assert torch.equal(argmax_labels(fields), fields.argmax(0, keepdim=True))
    fields3 = torch.randn(4, 5, 6, 7, generator=_gen(1))
    assert torch.equal(argmax_labels(fields3), fields3.argmax(0, keepdim=True))
