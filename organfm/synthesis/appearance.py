"""Random appearance for a label map, RaSD style: one small function per step.

``labels_to_image`` composes the steps in the reference order [0] (``labels_to_image`` with the
online loader's defaults): per-label mean intensity → multiplicative bias field → additive
Gaussian noise → Gaussian blur → min-max to [0, 1] → gamma. Background zeroing and thick-slice
subsampling exist in the reference but are off (probability 0), so they are left out.

Images are channel-first, (C, H, W) or (C, D, H, W). Every draw takes an explicit
``torch.Generator``; nothing reads the global RNG.

[0] Wei et al., RaSD, arXiv 2602.12317; code: github.com/yweibs/RaSD (``gen_img.py``).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "per_label_intensity",
    "draw_bias_field",
    "bias_field",
    "gaussian_noise",
    "random_axis_blur",
    "minmax",
    "gamma",
    "labels_to_image",
]

# FWHM → σ of a Gaussian: FWHM = 2 sqrt(2 ln 2) σ ≈ 2.355 σ.
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def per_label_intensity(
    labels: torch.Tensor,
    num_labels: int,
    generator: torch.Generator,
    *,
    mean_range: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """Paint each label with its own random intensity μ_k ~ U(mean_range).

    Args:
        labels: Integer label map (1, *S) with values in [0, K).
        num_labels: K, the number of means to draw (absent labels still consume a draw, so
            the means of present labels do not depend on which labels happen to be absent).
        generator: Source of randomness.
        mean_range: Bounds of the uniform mean intensity.

    Returns:
        float32 image (1, *S), constant inside every label.
    """
    return _paint(labels, _uniform(mean_range, generator, num_labels))


def draw_bias_field(
    shape: Sequence[int],
    generator: torch.Generator,
    *,
    num_channels: int = 1,
    std_range: tuple[float, float] = (0.01, 0.1),
    fwhm_range: tuple[float, float] = (16.0, 32.0),
    reference_size: int = 128,
) -> torch.Tensor:
    """A smooth positive multiplicative field: exp of blurred white noise.

    As in the reference: white noise with sd ~ U(std_range), blurred by an anisotropic
    Gaussian whose FWHM is drawn per axis from ``fwhm_range``, rescaled so that its largest
    absolute value equals that of the unblurred noise, then exponentiated.

    The FWHM bounds are voxels at side ``reference_size`` (128, RaSD's 3D side, where 16–32
    voxels span 1/8–1/4 of the field of view). For a longest side S < ``reference_size`` both
    bounds are multiplied by S / ``reference_size``, so a small image gets a bias that varies
    over the same fraction of its extent instead of one nearly flat field. For S ≥
    ``reference_size`` the bounds are used as given, like the reference does at 512² in 2D.

    Args:
        shape: Spatial shape, (H, W) or (D, H, W).
        generator: Source of randomness.
        num_channels: Number of independent channels C (blur widths are shared).
        std_range: Bounds of the white-noise sd (log-intensity units).
        fwhm_range: Bounds of the blur FWHM per axis, in voxels at ``reference_size``.
        reference_size: Side length at which ``fwhm_range`` applies unscaled.

    Returns:
        float32 tensor (C, *shape), strictly positive.
    """
    shape = tuple(int(n) for n in shape)
    std = _uniform(std_range, generator, 1).item()
    noise = torch.randn((num_channels, *shape), generator=generator).mul_(std)
    scale = min(1.0, max(shape) / reference_size)
    fwhm_bounds = (fwhm_range[0] * scale, fwhm_range[1] * scale)
    sigmas = _uniform(fwhm_bounds, generator, len(shape)) / _FWHM_PER_SIGMA
    smooth = _blur(noise, sigmas.tolist())
    # Blurring shrinks the amplitude by roughly the kernel volume; the reference restores the
    # peak so the bias strength is set by std_range alone, not by the blur width. It compares
    # signed maxima; absolute ones cannot flip the field's sign when the blurred max is < 0.
    smooth *= noise.abs().max() / smooth.abs().max().clamp_min(1e-12)
    return smooth.exp_()


def bias_field(
    image: torch.Tensor,
    generator: torch.Generator,
    *,
    std_range: tuple[float, float] = (0.01, 0.1),
    fwhm_range: tuple[float, float] = (16.0, 32.0),
    reference_size: int = 128,
) -> torch.Tensor:
    """Multiply an image by a random smooth bias field (see ``draw_bias_field``).

    Args:
        image: Image (C, *S).
        generator: Source of randomness.
        std_range: Bounds of the white-noise sd of the log-field.
        fwhm_range: Bounds of the blur FWHM per axis, in voxels at ``reference_size``.
        reference_size: Side length at which ``fwhm_range`` applies unscaled.

    Returns:
        Image (C, *S).
    """
    field = draw_bias_field(
        image.shape[1:],
        generator,
        num_channels=image.shape[0],
        std_range=std_range,
        fwhm_range=fwhm_range,
        reference_size=reference_size,
    )
    return image * field


def gaussian_noise(
    image: torch.Tensor,
    generator: torch.Generator,
    *,
    std_range: tuple[float, float] = (0.05, 0.4),
) -> torch.Tensor:
    """Add white Gaussian noise with sd = U(std_range) · max|image|.

    Args:
        image: Image (C, *S).
        generator: Source of randomness.
        std_range: Bounds of the noise sd relative to the image's largest absolute value.

    Returns:
        Image (C, *S).
    """
    std = _uniform(std_range, generator, 1) * image.abs().max()
    return image + torch.randn(image.shape, generator=generator) * std


def random_axis_blur(
    image: torch.Tensor,
    generator: torch.Generator,
    *,
    sigma_range: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """Separable Gaussian blur with σ ~ U(sigma_range) drawn per spatial axis (RaSD's anisotropic blur; the
    augmentations' isotropic, border-replicating blur of a given σ is ``organfm.views.intensity.gaussian_blur``).

    Kernels are renormalised at the image border, so a constant image stays constant (the
    reference zero-pads, which darkens a frame of width 3σ).

    Args:
        image: Image (C, H, W) or (C, D, H, W).
        generator: Source of randomness.
        sigma_range: Bounds of σ in voxels.

    Returns:
        Image of the same shape.
    """
    sigmas = _uniform(sigma_range, generator, image.dim() - 1)
    return _blur(image, sigmas.tolist())


def minmax(image: torch.Tensor, *, eps: float = 1e-6) -> torch.Tensor:
    """Rescale linearly to [0, 1]; a constant image becomes all zeros (no division by 0).

    Args:
        image: Image of any shape.
        eps: Smallest range divided by.

    Returns:
        Image of the same shape with values in [0, 1].
    """
    low, high = image.min(), image.max()
    return (image - low) / (high - low).clamp_min(eps)


def gamma(
    image: torch.Tensor,
    generator: torch.Generator,
    *,
    gamma_range: tuple[float, float] = (0.5, 1.5),
) -> torch.Tensor:
    """Raise a [0, 1] image to a random power γ ~ U(gamma_range).

    Args:
        image: Image with values in [0, 1]; negatives are clipped to 0 first, since a
            fractional power of a negative number is NaN.
        generator: Source of randomness.
        gamma_range: Bounds of γ.

    Returns:
        Image of the same shape.
    """
    exponent = _uniform(gamma_range, generator, 1)
    return image.clamp_min(0.0).pow(exponent)


def labels_to_image(
    labels: torch.Tensor,
    num_labels: int,
    generator: torch.Generator,
    *,
    mean_range: tuple[float, float] = (0.0, 1.0),
    bias_std_range: tuple[float, float] = (0.01, 0.1),
    bias_fwhm_range: tuple[float, float] = (16.0, 32.0),
    noise_std_range: tuple[float, float] = (0.05, 0.4),
    blur_sigma_range: tuple[float, float] = (0.0, 1.0),
    gamma_range: tuple[float, float] = (0.5, 1.5),
    means: torch.Tensor | None = None,
) -> torch.Tensor:
    """Render a label map as a random image, in the reference order.

    per-label intensity → bias field → Gaussian noise → Gaussian blur → min-max → gamma.
    Defaults are the reference online loader's.

    Args:
        labels: Integer label map (1, *S) with values in [0, K), S of length 2 or 3.
        num_labels: K.
        generator: Source of randomness.
        mean_range: Bounds of the per-label mean intensity.
        bias_std_range: Bounds of the bias log-field's white-noise sd.
        bias_fwhm_range: Bounds of the bias blur FWHM (voxels at side 128, scaled below it).
        noise_std_range: Bounds of the noise sd relative to max|image|.
        blur_sigma_range: Bounds of the blur σ per axis, in voxels.
        gamma_range: Bounds of γ.
        means: Fixed label intensities (K,) used instead of drawing them (no draw is made);
            ``SyntheticOrgans`` passes an organ's tissue intensities this way.

    Returns:
        float32 image (1, *S), finite, in [0, 1].
    """
    if means is None:
        image = per_label_intensity(labels, num_labels, generator, mean_range=mean_range)
    else:
        image = _paint(labels, means)
    image = bias_field(image, generator, std_range=bias_std_range, fwhm_range=bias_fwhm_range)
    image = gaussian_noise(image, generator, std_range=noise_std_range)
    image = random_axis_blur(image, generator, sigma_range=blur_sigma_range)
    image = minmax(image)
    return gamma(image, generator, gamma_range=gamma_range)


def _uniform(bounds: tuple[float, float], generator: torch.Generator, n: int) -> torch.Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(n, generator=generator)


def _paint(labels: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    # gather on the flat map: same result as means[labels], without advanced indexing's
    # thread start-up, which dominates at 64² on a small shared CPU.
    return means.gather(0, labels.reshape(-1).long()).view(labels.shape)


def _blur(image: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
    """Separable Gaussian blur of (C, *S) with one σ per spatial axis (σ < 0.1 skips the axis).

    Each axis is a dense (n, n) banded matrix product instead of a convolution: for the sizes
    used here it is faster than a long 1D ``conv`` kernel, works for kernels wider than the
    image, and makes the border renormalisation exact.
    """
    out = image
    num_spatial = image.dim() - 1
    for axis, sigma in enumerate(sigmas):
        if sigma < 0.1:  # a neighbour's weight is below e^-50: the identity in float32
            continue
        n = image.shape[1 + axis]
        matrix = _gaussian_matrix(n, sigma, image.dtype, image.device)
        from_end = num_spatial - axis  # 1 = last axis (W), 2 = H, 3 = D
        if from_end == 1:
            out = F.linear(out, matrix)  # out @ matrix.T without a strided-operand BLAS call
        elif from_end == 2:
            out = matrix @ out
        else:  # the D axis of (C, D, H, W): fold H and W so D becomes the matrix row axis
            c, d, h, w = out.shape
            out = (matrix @ out.reshape(c, d, h * w)).reshape(c, d, h, w)
    return out


def _gaussian_matrix(n: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(n, n) row-stochastic matrix applying a Gaussian along one axis.

    The kernel is not truncated (the reference cuts it at about 3σ, which drops < 0.3% of
    its mass); rows are renormalised, so the image border is not darkened.
    """
    weights = torch.exp(_squared_offsets(n, dtype, device) * (-0.5 / sigma**2))
    return weights / weights.sum(dim=1, keepdim=True)


@functools.lru_cache(maxsize=16)
def _squared_offsets(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(i - j)² for an axis of length n; cached because every blur of that axis needs it."""
    idx = torch.arange(n, dtype=dtype, device=device)
    return (idx[:, None] - idx[None, :]) ** 2
