"""random_affine: identity at the trivial draw, one draw for image and mask, crops that zoom by the known factor,
rotations in pixel space (a disc stays a disc on a non-square image), and draws from the passed generator only."""
from __future__ import annotations

import torch

from organfm.views.affine import random_affine


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_random_affine_identity_and_shared_draw() -> None:
    g = _gen()
    x = torch.randn(4, 1, 32, 40)
    same, _ = random_affine(x, generator=g, scale=(1.0, 1.0), ratio=(1.0, 1.0), max_degrees=0.0)
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    masks = torch.zeros(8, 32, 32, dtype=torch.long)
    masks[:, 8:24, 10:20] = 1
    masks[:, 2:6, 2:30] = 2
    warped_x, warped_m = random_affine(masks[:, None].float(), masks, generator=g)
    assert warped_m.dtype == torch.long and warped_m.shape == masks.shape
    assert not torch.equal(warped_m, masks)  # it did move
    agree = (warped_x[:, 0].round().long() == warped_m).float().mean()
    assert agree > 0.95  # image and mask got the same transform


def test_the_draw_comes_from_the_generator_alone():
    x = torch.rand(3, 1, 16, 16, generator=_gen(1))
    a, _ = random_affine(x, generator=_gen(5))
    torch.manual_seed(123)  # the global RNG plays no part
    b, _ = random_affine(x, generator=_gen(5))
    c, _ = random_affine(x, generator=_gen(6))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    # each image of the batch has its own draw: two copies of one image come out different
    pair, _ = random_affine(x[:1].expand(2, -1, -1, -1), generator=_gen(5))
    assert not torch.allclose(pair[0], pair[1])


def test_a_constant_image_stays_constant_and_a_mask_keeps_only_its_own_labels():
    images = torch.full((6, 2, 20, 28), 0.37)
    masks = torch.zeros(6, 20, 28, dtype=torch.int32)
    masks[:, 5:12, 4:20] = 3
    masks[:, 14:, :] = 7
    out, warped = random_affine(images, masks, generator=_gen(2), scale=(0.3, 1.0), max_degrees=40.0)
    torch.testing.assert_close(out, images, atol=1e-6, rtol=0)  # bilinear weights sum to 1, reflection stays inside
    assert warped.dtype == torch.int32 and set(warped.unique().tolist()) <= {0, 3, 7}  # nearest: no blended labels
    assert random_affine(images, None, generator=_gen(2))[1] is None


def test_a_crop_of_a_quarter_of_the_area_zooms_by_two_along_each_axis():
    # ratio 1 and area 1/4: the crop is half of each side (of a 24 x 40 image: 12 x 20 pixels), so a ramp of slope 1
    # per input pixel has slope 1/2 per output pixel, wherever the crop sits
    h, w = 24, 40
    ramp_x = torch.arange(w, dtype=torch.float32).expand(h, w)
    ramp_y = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
    images = torch.stack([ramp_x, ramp_y])[None].expand(5, -1, -1, -1).contiguous()
    out, _ = random_affine(images, generator=_gen(3), scale=(0.25, 0.25), ratio=(1.0, 1.0), max_degrees=0.0)
    inner = (slice(None), slice(2, -2), slice(2, -2))  # away from the border, where reflection may enter
    dx = out[:, 0].diff(dim=-1)[inner]
    dy = out[:, 1].diff(dim=-2)[inner]
    torch.testing.assert_close(dx, torch.full_like(dx, 0.5), atol=1e-4, rtol=0)
    torch.testing.assert_close(dy, torch.full_like(dy, 0.5), atol=1e-4, rtol=0)
    # and without rotation each output row of the x ramp is the same row
    torch.testing.assert_close(out[:, 0], out[:, 0, :1].expand_as(out[:, 0]), atol=1e-4, rtol=0)


def test_a_rotation_turns_pixels_not_normalised_coordinates():
    # a disc (radial in pixels) on a 32 x 64 image is unchanged by any rotation about the centre; a rotation in the
    # normalised [-1, 1] square would stretch it into an ellipse (twice as wide one way as the other)
    h, w = 32, 64
    yy, xx = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    disc = torch.exp(-(xx**2 + yy**2) / (2 * 4.0**2))[None, None].expand(4, 1, h, w).contiguous()
    bar = (yy.abs() < 2).float()[None, None].expand(4, 1, h, w).contiguous()  # horizontal: a rotation moves it
    kwargs = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), max_degrees=30.0)  # full frame: centred, rotation only
    turned, _ = random_affine(disc, generator=_gen(4), **kwargs)
    torch.testing.assert_close(turned, disc, atol=0.02, rtol=0)
    moved, _ = random_affine(bar, generator=_gen(4), **kwargs)
    assert (moved - bar).abs().amax(dim=(1, 2, 3)).min() > 0.5  # every image was turned by its own angle
