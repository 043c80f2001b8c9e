import torch

from organfm.views.intensity import RandomBrightnessContrast, RandomGamma, RandomGaussianBlur, gaussian_blur


def test_gamma_matches_the_power_law():
    torch.manual_seed(0)
    x = torch.rand(1, 8, 8)
    g = RandomGamma((2.0, 2.0), p=1.0)
    assert torch.allclose(g(x), x**2, atol=1e-6)


def test_brightness_contrast_identity_and_range():
    x = torch.rand(1, 16, 16)
    assert torch.allclose(RandomBrightnessContrast(0.0, 0.0, p=1.0)(x), x, atol=1e-6)
    torch.manual_seed(0)
    y = RandomBrightnessContrast(0.9, 0.9, p=1.0)(x)
    assert y.min() >= 0 and y.max() <= 1


def test_blur_preserves_mean_and_constants_and_smooths_2d_3d():
    const = torch.full((1, 9, 9), 0.3)
    assert torch.allclose(gaussian_blur(const, 1.5), const, atol=1e-6)
    spike = torch.zeros(1, 11, 11)
    spike[0, 5, 5] = 1
    out = gaussian_blur(spike, 1.0)
    assert abs(out.sum() - 1) < 1e-5  # replicate padding keeps an interior spike's mass
    assert out[0, 5, 5] < 0.2 and out[0, 5, 6] > 0 and torch.allclose(out, out.flip(-1), atol=1e-7)
    vol = torch.zeros(1, 7, 7, 7)
    vol[0, 3, 3, 3] = 1
    assert abs(gaussian_blur(vol, 0.8).sum() - 1) < 1e-5
    assert RandomGaussianBlur(p=0.0)(spike) is spike
