from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from organfm.synthesis import (
    bias_field,
    draw_bias_field,
    draw_label_map,
    gamma,
    random_axis_blur,
    gaussian_noise,
    labels_to_image,
    minmax,
    per_label_intensity,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _copy(generator: torch.Generator) -> torch.Generator:
    twin = torch.Generator()
    twin.set_state(generator.get_state())
    return twin


def _gaussian_kernel_1d(sigma: float, radius: int) -> torch.Tensor:
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).float()


# ---------------------------------------------------------------- per-label intensity


def test_per_label_intensity_is_constant_inside_each_label():
    labels = draw_label_map((48, 48), 5, _gen(0))
    image = per_label_intensity(labels, 5, _gen(1))
    assert image.shape == labels.shape and image.dtype == torch.float32
    values = []
    for k in labels.unique().tolist():
        inside = image[labels == k]
        assert torch.all(inside == inside[0])
        values.append(inside[0].item())
    assert all(0.0 <= v <= 1.0 for v in values)
    assert len(set(values)) == len(values)  # distinct labels get distinct draws


def test_per_label_intensity_range_and_consistency_across_maps():
    a = torch.tensor([[[0, 1, 2, 3]]])
    b = torch.tensor([[[3, 3, 0, 0]]])
    ia = per_label_intensity(a, 4, _gen(3), mean_range=(0.2, 0.3))
    ib = per_label_intensity(b, 4, _gen(3), mean_range=(0.2, 0.3))
    assert torch.all((ia >= 0.2) & (ia <= 0.3))
    # Label k gets the same mean whatever the map, because all K means are always drawn.
    assert ib[0, 0, 0] == ia[0, 0, 3] and ib[0, 0, 2] == ia[0, 0, 0]


# ---------------------------------------------------------------- bias field


@pytest.mark.parametrize("shape", [(64, 64), (32, 32, 32)])
def test_bias_field_is_positive_bounded_and_smooth(shape):
    for seed in range(5):
        field = draw_bias_field(shape, _gen(seed))
        assert field.shape == (1, *shape)
        assert torch.all(field > 0) and field.mean() > 0
        # Peak |log| equals the white noise's peak: sd ≤ 0.1, so well under 0.1 · 6.
        assert field.log().abs().max() < 0.6
        log = field.log()
        for dim in range(1, len(shape) + 1):
            a = log.narrow(dim, 0, shape[dim - 1] - 1).flatten()
            b = log.narrow(dim, 1, shape[dim - 1] - 1).flatten()
            assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.9  # white noise would give ~0


def test_bias_field_strength_follows_std_range():
    weak = draw_bias_field((64, 64), _gen(0), std_range=(0.01, 0.01)).log().abs().max()
    strong = draw_bias_field((64, 64), _gen(0), std_range=(0.1, 0.1)).log().abs().max()
    assert torch.isclose(strong, 10 * weak, rtol=1e-4)


def test_bias_field_smoothness_scales_with_image_size():
    # Below side 128 the FWHM bounds shrink with S, so the correlation between points 1/16 of the
    # side apart is the same at 32 and 128; unscaled bounds would make the 32² field much flatter.
    def relative_corr(size: int, reference_size: int = 128) -> float:
        corrs = []
        for seed in range(8):
            log = draw_bias_field((size, size), _gen(seed), fwhm_range=(24.0, 24.0), reference_size=reference_size)
            step = size // 16
            a, b = log[0, :, :-step].flatten(), log[0, :, step:].flatten()
            corrs.append(torch.corrcoef(torch.stack([a, b]))[0, 1].item())
        return sum(corrs) / len(corrs)

    scaled_small, large = relative_corr(32), relative_corr(128)
    unscaled_small = relative_corr(32, reference_size=32)
    assert abs(scaled_small - large) < 0.05
    assert unscaled_small - large > 0.05


def test_bias_field_multiplies_the_image_by_the_drawn_field():
    image = torch.rand(1, 32, 40, generator=_gen(0))
    g = _gen(9)
    field = draw_bias_field((32, 40), _copy(g))
    assert torch.allclose(bias_field(image, g), image * field)


# ---------------------------------------------------------------- noise


def test_gaussian_noise_sd_is_relative_to_image_max():
    image = torch.full((1, 128, 128), 2.0)
    for seed in range(10):
        noise = gaussian_noise(image, _gen(seed)) - image
        ratio = noise.std().item() / 2.0
        assert 0.05 * 0.95 < ratio < 0.4 * 1.05
        assert abs(noise.mean().item()) < 0.05 * ratio * 2.0 + 1e-3
    fixed = gaussian_noise(image, _gen(0), std_range=(0.1, 0.1)) - image
    assert fixed.std().item() == pytest.approx(0.2, rel=0.05)


# ---------------------------------------------------------------- blur


@pytest.mark.parametrize("shape", [(1, 20, 24), (2, 8, 10, 12)])
def test_gaussian_blur_with_vanishing_sigma_is_identity(shape):
    image = torch.rand(shape, generator=_gen(0))
    assert torch.equal(random_axis_blur(image, _gen(1), sigma_range=(0.0, 0.0)), image)
    assert torch.allclose(random_axis_blur(image, _gen(1), sigma_range=(0.0, 0.05)), image)


def test_gaussian_blur_keeps_constants_and_smooths_noise():
    const = torch.full((1, 16, 16, 16), 0.3)
    assert torch.allclose(random_axis_blur(const, _gen(0), sigma_range=(1.0, 1.0)), const)
    noise = torch.randn(1, 64, 64, generator=_gen(1))
    blurred = random_axis_blur(noise, _gen(2), sigma_range=(1.0, 1.0))
    assert blurred.std() < 0.5 * noise.std()


def test_gaussian_blur_matches_separable_convolution_in_the_interior():
    sigma, radius = 1.0, 8
    k = _gaussian_kernel_1d(sigma, radius)
    image = torch.rand(1, 40, 40, generator=_gen(0))
    expected = F.conv2d(image[None], (k[:, None] * k[None, :])[None, None])[0]
    got = random_axis_blur(image, _gen(1), sigma_range=(sigma, sigma))
    assert torch.allclose(got[:, radius:-radius, radius:-radius], expected, atol=1e-5)


def test_gaussian_blur_acts_on_every_axis_in_3d():
    delta = torch.zeros(1, 15, 15, 15)
    delta[0, 7, 7, 7] = 1.0
    got = random_axis_blur(delta, _gen(0), sigma_range=(1.0, 1.0))
    k = _gaussian_kernel_1d(1.0, 7)
    expected = k[:, None, None] * k[None, :, None] * k[None, None, :]
    assert torch.allclose(got[0], expected, atol=1e-6)


# ---------------------------------------------------------------- minmax, gamma


def test_minmax_maps_to_unit_range_and_handles_constants():
    image = torch.tensor([[-2.0, 0.0, 6.0]])
    assert torch.allclose(minmax(image), torch.tensor([[0.0, 0.25, 1.0]]))
    flat = minmax(torch.full((1, 8, 8), 3.0))
    assert torch.isfinite(flat).all() and torch.all(flat == 0)


def test_gamma_fixed_exponent_is_hand_computable():
    image = torch.tensor([[0.0, 0.25, 0.5, 1.0]])
    assert torch.allclose(gamma(image, _gen(0), gamma_range=(2.0, 2.0)), torch.tensor([[0.0, 0.0625, 0.25, 1.0]]))


def test_gamma_random_exponent_is_one_power_in_range():
    image = torch.rand(1, 32, 32, generator=_gen(0)) * 0.9 + 0.05
    exponents = []
    for seed in range(20):
        out = gamma(image, _gen(seed))
        recovered = out.log() / image.log()  # the same γ at every pixel
        assert recovered.max() - recovered.min() < 1e-4
        exponents.append(recovered.mean().item())
    assert 0.5 <= min(exponents) and max(exponents) <= 1.5
    assert max(exponents) - min(exponents) > 0.5


def test_gamma_clips_negatives_instead_of_nan():
    out = gamma(torch.tensor([[-0.1, 0.0, 0.5]]), _gen(0))
    assert torch.isfinite(out).all() and out[0, 0] == 0


# ---------------------------------------------------------------- composition


@pytest.mark.parametrize("shape", [(64, 64), (24, 24, 24)])
def test_labels_to_image_is_finite_in_unit_range_and_deterministic(shape):
    labels = draw_label_map(shape, 4, _gen(0))
    image = labels_to_image(labels, 4, _gen(1))
    assert image.shape == (1, *shape) and image.dtype == torch.float32
    assert torch.isfinite(image).all()
    assert image.min() == 0.0 and image.max() == pytest.approx(1.0)
    assert torch.equal(image, labels_to_image(labels, 4, _gen(1)))
    assert not torch.equal(image, labels_to_image(labels, 4, _gen(2)))


def test_labels_to_image_without_perturbations_is_minmax_of_the_means():
    labels = draw_label_map((32, 32), 3, _gen(0))
    means = torch.tensor([0.2, 0.5, 0.9])
    image = labels_to_image(
        labels,
        3,
        _gen(1),
        means=means,
        bias_std_range=(0.0, 0.0),
        noise_std_range=(0.0, 0.0),
        blur_sigma_range=(0.0, 0.0),
        gamma_range=(1.0, 1.0),
    )
    assert torch.allclose(image, minmax(means[labels]))


def test_labels_to_image_follows_label_boundaries():
    # Default noise, bias, blur and gamma: the two tissues stay clearly apart on average.
    labels = draw_label_map((96, 96), 2, _gen(3))
    assert labels.unique().numel() == 2
    for seed in range(5):
        image = labels_to_image(labels, 2, _gen(seed), means=torch.tensor([0.1, 0.9]))
        assert image[labels == 1].mean() - image[labels == 0].mean() > 0.2
