"""Intensity augmentations for grayscale medical images in [0, 1] (no hue or saturation jitter).

Each transform is a small callable on a channel-first tensor (C, H, W) or (C, D, H, W) that draws its
randomness from torch's generator, so a caller can pin every draw with one seed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["RandomBrightnessContrast", "RandomGamma", "RandomGaussianBlur", "gaussian_blur", "gaussian_kernel1d"]


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


class RandomBrightnessContrast:
    """Multiply by a brightness factor, then scale deviations from the image mean by a contrast factor.

    Args:
        brightness: factor drawn from [1 - brightness, 1 + brightness].
        contrast: factor drawn from [1 - contrast, 1 + contrast].
        p: probability of applying.
    """

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, p: float = 0.8) -> None:
        self.brightness, self.contrast, self.p = brightness, contrast, p

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if float(torch.rand(())) >= self.p:
            return x
        b = _uniform(1 - self.brightness, 1 + self.brightness)
        c = _uniform(1 - self.contrast, 1 + self.contrast)
        mean = x.mean()
        return ((x * b - mean * b) * c + mean * b).clamp(0, 1)


class RandomGamma:
    """``x ** gamma`` with gamma drawn log-uniformly from ``gamma_range`` (x clamped to [0, 1])."""

    def __init__(self, gamma_range: tuple[float, float] = (0.7, 1.5), p: float = 0.5) -> None:
        self.low, self.high = gamma_range
        self.p = p

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if float(torch.rand(())) >= self.p:
            return x
        log_gamma = _uniform(float(torch.log(torch.tensor(self.low))), float(torch.log(torch.tensor(self.high))))
        return x.clamp(0, 1).pow(float(torch.exp(torch.tensor(log_gamma))))


def gaussian_kernel1d(sigma: float, truncate: float = 3.0) -> torch.Tensor:
    """Normalised 1D Gaussian of radius ``ceil(truncate * sigma)``."""
    radius = max(1, int(truncate * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


class RandomGaussianBlur:
    """Separable Gaussian blur with sigma drawn uniformly from ``sigma_range``, 2D or 3D.

    Edges are replicate-padded: unlike reflection it works for images smaller than the kernel.
    """

    def __init__(self, sigma_range: tuple[float, float] = (0.1, 2.0), p: float = 0.5) -> None:
        self.sigma_range, self.p = sigma_range, p

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.p <= 0 or float(torch.rand(())) >= self.p:
            return x
        return gaussian_blur(x, _uniform(*self.sigma_range))


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur (C, H, W) or (C, D, H, W) by a separable Gaussian of std ``sigma`` pixels."""
    kernel = gaussian_kernel1d(sigma).to(x.dtype)
    r = kernel.numel() // 2
    spatial = x.ndim - 1
    conv = F.conv2d if spatial == 2 else F.conv3d
    y = x.unsqueeze(0)
    for axis in range(spatial):
        shape = [x.shape[0], 1] + [1] * spatial
        shape[2 + axis] = -1
        pad = [0, 0] * spatial
        pad[2 * (spatial - 1 - axis)] = pad[2 * (spatial - 1 - axis) + 1] = r
        y = conv(F.pad(y, pad, mode="replicate"), kernel.view(shape[1:]).expand(shape), groups=x.shape[0])
    return y.squeeze(0)
