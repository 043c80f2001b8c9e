"""The batched device view generator against the per-sample CPU recipe and hand-computed references."""
from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import kstest, ks_2samp
from torchvision.transforms import v2

from organfm.views import GlobalLocalViews
from organfm.views.device import DeviceViews, crop_boxes, seeded_uniforms
from organfm.views.intensity import gaussian_blur

OFF = dict(rotation_degrees=0, brightness=0, contrast=0, gamma=(1.0, 1.0), blur_probs=(0, 0, 0), hflip_prob=0,
           global_scale=(1.0, 1.0))


def _images(b=4, h=40, w=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 1, h, w), generator=g, dtype=torch.uint8)


def _seeds(b=4, offset=0):
    return torch.arange(b, dtype=torch.int64) * 0x9E3779B97F4A7 + 2**61 + offset


def test_shapes_dtypes_and_range():
    views = DeviceViews(num_global_views=2, global_size=32, num_local_views=5, local_size=16)
    out = views(_images(), _seeds())
    assert [tuple(v.shape) for v in out["global"]] == [(4, 1, 32, 32)] * 2
    assert [tuple(v.shape) for v in out["local"]] == [(4, 1, 16, 16)] * 5
    for v in out["global"] + out["local"]:
        assert v.dtype == torch.float32
        assert v.min() >= -1 - 1e-5 and v.max() <= 1 + 1e-5  # [0, 1] -> (x - 0.5) / 0.5


def test_views_depend_on_the_item_seed_only():
    views = DeviceViews(global_size=32, local_size=16, num_local_views=2)
    images, seeds = _images(), _seeds()
    a = views(images, seeds)
    torch.rand(10)  # the global generator plays no part
    b = views(images, seeds)
    perm = torch.tensor([2, 0, 3, 1])
    c = views(images[perm], seeds[perm])  # the same items in another batch order
    for x, y, z in zip(a["global"] + a["local"], b["global"] + b["local"], c["global"] + c["local"]):
        assert torch.equal(x, y)
        assert torch.allclose(x[perm], z, atol=1e-6)
    d = views(images, seeds + 1)
    assert not torch.allclose(a["global"][0], d["global"][0])
    assert not torch.allclose(a["global"][0], a["global"][1])  # two views of one item differ


def test_uniforms_are_uniform_and_slots_uncorrelated():
    u = seeded_uniforms(torch.arange(4000, dtype=torch.int64) * 7 + 12345, 2, 32)
    assert u.shape == (4000, 2, 32) and u.min() >= 0 and u.max() < 1
    assert kstest(u[:, 0, 0].numpy(), "uniform").pvalue > 1e-3
    assert kstest(u[:, 1, 31].numpy(), "uniform").pvalue > 1e-3
    corr = torch.corrcoef(u.reshape(4000, -1).T)
    assert (corr - torch.eye(64)).abs().max() < 0.08  # 4000 draws: |r| of independent slots ~ N(0, 1/63)


def _torchvision_boxes(n, h, w, scale):
    torch.manual_seed(0)
    img = torch.zeros(1, h, w)
    return torch.tensor([v2.RandomResizedCrop.get_params(img, list(scale), [3 / 4, 4 / 3])
                         for _ in range(n)], dtype=torch.float32)  # (top, left, h, w)


def _scale_logratio(boxes, h, w):
    return (boxes[:, 2] * boxes[:, 3] / (h * w)).numpy(), torch.log(boxes[:, 3] / boxes[:, 2]).numpy()


@pytest.mark.parametrize("h,w,scale", [(64, 64, (0.4, 1.0)), (64, 64, (0.4, 0.7)), (48, 40, (0.4, 1.0))])
def test_crop_scales_and_aspects_have_torchvisions_distribution(h, w, scale):
    n = 3000
    ref = _torchvision_boxes(n, h, w, scale)
    ours = crop_boxes(seeded_uniforms(torch.arange(n, dtype=torch.int64) + 99, 1)[:, 0], h, w, scale)
    for a, b in zip(_scale_logratio(ref, h, w), _scale_logratio(ours, h, w)):
        assert ks_2samp(a, b).pvalue > 1e-3
    # boxes lie inside the image; positions cover it
    assert (ours[:, 0] >= 0).all() and (ours[:, 0] + ours[:, 2] <= h).all()
    assert (ours[:, 1] >= 0).all() and (ours[:, 1] + ours[:, 3] <= w).all()
    assert ks_2samp(ref[:, 0].numpy(), ours[:, 0].numpy()).pvalue > 1e-3


def test_the_statistical_check_can_fail():
    """Without torchvision's rejection rule (clamping instead), the scale distribution is told apart."""
    n, h = 3000, 64
    ref_scale, _ = _scale_logratio(_torchvision_boxes(n, h, h, (0.4, 1.0)), h, h)
    u = seeded_uniforms(torch.arange(n, dtype=torch.int64), 1)[:, 0]
    s = 0.4 + 0.6 * u[:, 0]
    r = torch.exp(math.log(3 / 4) + math.log(16 / 9) * u[:, 10])
    wrong = (torch.round(torch.sqrt(h * h * s * r)).clamp(max=h) * torch.round(torch.sqrt(h * h * s / r)).clamp(max=h)
             / (h * h))
    assert ks_2samp(ref_scale, wrong.numpy()).pvalue < 1e-6


def test_no_augmentation_is_the_identity_and_flips_flip():
    images = _images()
    x = images.float() / 255
    out = DeviceViews(global_size=40, num_local_views=0, **OFF)(images, _seeds())
    for v in out["global"]:
        assert torch.allclose(v, (x - 0.5) / 0.5, atol=1e-5)
    flipped = DeviceViews(global_size=40, num_local_views=0, **{**OFF, "hflip_prob": 1.0})(images, _seeds())
    assert torch.allclose(flipped["global"][0], ((x - 0.5) / 0.5).flip(-1), atol=1e-5)
    vflipped = DeviceViews(global_size=40, num_local_views=0, **{**OFF, "vflip_prob": 1.0})(images, _seeds())
    assert torch.allclose(vflipped["global"][0], ((x - 0.5) / 0.5).flip(-2), atol=1e-5)


def test_downscaled_crop_is_the_area_average():
    """Whole image to half size: the supersampled resize equals 2x2 average pooling."""
    images = _images(h=32, w=32)
    out = DeviceViews(global_size=16, num_local_views=0, mean=0.0, std=1.0, **OFF)(images, _seeds())
    ref = torch.nn.functional.avg_pool2d(images.float() / 255, 2)
    assert torch.allclose(out["global"][0], ref, atol=1e-5)


def test_blur_gamma_and_jitter_match_a_per_sample_reference():
    """Each item gets the CPU path's blur / gamma / brightness-contrast with its own drawn parameters."""
    images, seeds = _images(b=6), _seeds(6)
    kw = dict(OFF, blur_probs=(0.5, 0, 0), gamma=(0.7, 1.5), brightness=0.4, contrast=0.4, mean=0.0, std=1.0)
    dv = DeviceViews(global_size=40, num_global_views=1, num_local_views=0, **kw)
    out = dv(images, seeds)["global"][0]
    u = seeded_uniforms(seeds, 1)[:, 0]
    blurred = 0
    for i in range(6):  # the naive loop the batched code replaces
        x = images[i].float() / 255
        if u[i, 25] < 0.8:
            b, c = 0.6 + 0.8 * u[i, 26], 0.6 + 0.8 * u[i, 27]
            m = x.mean()
            x = ((x * b - m * b) * c + m * b).clamp(0, 1)
        if u[i, 28] < 0.5:
            x = x.clamp(0, 1).pow(torch.exp(math.log(0.7) + (math.log(1.5) - math.log(0.7)) * u[i, 29]))
        if u[i, 30] < 0.5:
            x = gaussian_blur(x, float(0.1 + 1.9 * u[i, 31]))
            blurred += 1
        assert torch.allclose(out[i], x, atol=1e-5), i
    assert 0 < blurred < 6  # the seeds exercise both branches


def test_rotation_fills_the_corners_with_zero_and_keeps_the_centre():
    images = torch.full((64, 1, 32, 32), 200, dtype=torch.uint8)
    dv = DeviceViews(global_size=32, num_global_views=1, num_local_views=0, mean=0.0, std=1.0,
                     **{**OFF, "rotation_degrees": 30})
    out = dv(images, _seeds(64))["global"][0]
    angle = (2 * seeded_uniforms(_seeds(64), 1)[:, 0, 24] - 1) * 30
    big = angle.abs() > 10
    assert torch.allclose(out[:, 0, 16, 16], torch.tensor(200 / 255))
    assert big.sum() > 10 and (out[big, 0, 0, 0] == 0).all() and (out[big, 0, 0, -1] == 0).all()
    assert (out[(angle.abs() < 1), 0, 0, 0] > 0.7).all()


def test_views_have_the_cpu_paths_intensity_distribution():
    """End to end: per-view mean and std of device views vs the CPU recipe on one image (KS)."""
    image = _images(b=1, h=40, w=40)[0]
    kw = dict(num_global_views=1, global_size=24, num_local_views=0)
    n = 150
    cpu = GlobalLocalViews(**kw)
    torch.manual_seed(0)
    ref = torch.stack([cpu(image.float() / 255)["global"][0] for _ in range(n)])
    dev = DeviceViews(**kw)(image.expand(n, 1, 40, 40), _seeds(n))["global"][0]
    for stat in (lambda t: t.mean((1, 2, 3)), lambda t: t.std((1, 2, 3))):
        assert ks_2samp(stat(ref).numpy(), stat(dev).numpy()).pvalue > 1e-3


def test_bad_input_is_refused_clearly():
    dv = DeviceViews(global_size=16, num_local_views=0)
    with pytest.raises(ValueError, match="batch of 2D images"):
        dv(torch.zeros(1, 8, 8, dtype=torch.uint8), _seeds(1))
    with pytest.raises(ValueError, match="one seed per image"):
        dv(_images(b=2), _seeds(3))
