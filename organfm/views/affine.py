"""Batched random affine augmentation for supervised training (fine-tuning, segmentation): one resample per image."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["random_affine"]


def random_affine(images: torch.Tensor, masks: torch.Tensor | None = None, *, generator: torch.Generator,
                  scale: tuple[float, float] = (0.8, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                  max_degrees: float = 10.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random resized crop + small rotation as one resample per image; a mask gets the same draw.

    Args:
        images: (B, C, H, W) float.
        masks: (B, H, W) integer labels, resampled with nearest neighbour, or None.
        generator: a CPU generator; it draws every parameter, whatever the tensors' device.
        scale: range of the crop's area, as a fraction of the image.
        ratio: range of the crop's aspect ratio (drawn log-uniformly).
        max_degrees: rotation drawn uniformly in ``[-max_degrees, max_degrees]``.

    Returns:
        ``(images, masks)`` of the input shapes; outside the image, reflection padding.
    """
    b, _, h, w = images.shape
    draws = torch.rand(b, 5, generator=generator, dtype=torch.float64)
    area = scale[0] + (scale[1] - scale[0]) * draws[:, 0]
    log_ratio = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * draws[:, 1]
    crop_w = torch.sqrt(area * torch.exp(log_ratio)).clamp(max=1.0)
    crop_h = torch.sqrt(area / torch.exp(log_ratio)).clamp(max=1.0)
    center_x = (1 - crop_w) * (2 * draws[:, 2] - 1)
    center_y = (1 - crop_h) * (2 * draws[:, 3] - 1)
    angle = torch.deg2rad(max_degrees * (2 * draws[:, 4] - 1))
    cos, sin = torch.cos(angle), torch.sin(angle)
    # rotation in pixel space, written in normalised [-1, 1] coordinates (H != W stretches otherwise)
    theta = torch.stack([torch.stack([cos * crop_w, -sin * crop_h * h / w, center_x], 1),
                         torch.stack([sin * crop_w * w / h, cos * crop_h, center_y], 1)], 1)
    grid = F.affine_grid(theta.to(images.device, images.dtype), list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if masks is None:
        return out, None
    warped = F.grid_sample(masks[:, None].to(images.dtype), grid, mode="nearest", padding_mode="reflection",
                           align_corners=False)
    return out, warped[:, 0].round().to(masks.dtype)
