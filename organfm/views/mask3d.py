"""SimMIM's random mask in 3D (Triad's ``MaskGenerator``): cells of the volume hidden at a fixed ratio."""
from __future__ import annotations

import math

import torch

__all__ = ["SimMIMMask3D"]


class SimMIMMask3D:
    """Hide ``ceil(cells · ratio)`` random cells of ``mask_patch_size``³ voxels, returned on the model-patch grid.

    The paper's 96³ volume with 16³ cells has 6³ = 216 cells, of which ceil(216 · 0.6) = 130 are hidden;
    the mask is then upsampled to the model-patch grid (patch 2: 48³). ``voxels`` upsamples it to the volume.

    Args:
        input_size: edge of the cubic volume (voxels).
        mask_patch_size: edge of one masked cell (voxels); divides ``input_size``.
        model_patch_size: edge of the model's patch (voxels); divides ``mask_patch_size``.
        mask_ratio: fraction of cells hidden, in (0, 1).
    """

    def __init__(self, input_size: int = 96, mask_patch_size: int = 16, model_patch_size: int = 2,
                 mask_ratio: float = 0.6) -> None:
        if input_size % mask_patch_size:
            raise ValueError(f"mask_patch_size {mask_patch_size} must divide the volume size {input_size}")
        if mask_patch_size % model_patch_size:
            raise ValueError(f"model_patch_size {model_patch_size} must divide mask_patch_size {mask_patch_size}")
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        self.input_size, self.mask_patch_size, self.model_patch_size = input_size, mask_patch_size, model_patch_size
        self.grid = input_size // mask_patch_size  # cells per edge
        self.scale = mask_patch_size // model_patch_size  # model patches per cell edge
        self.num_cells = self.grid ** 3
        self.num_masked = math.ceil(self.num_cells * mask_ratio)

    def cells(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """(g, g, g) int64, exactly ``num_masked`` ones at random cells."""
        flat = torch.zeros(self.num_cells, dtype=torch.int64)
        flat[torch.randperm(self.num_cells, generator=generator)[:self.num_masked]] = 1
        return flat.view(self.grid, self.grid, self.grid)

    def __call__(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """(G, G, G) int64 on the model-patch grid, G = input_size / model_patch_size."""
        return _repeat(self.cells(generator), self.scale)

    def voxels(self, mask: torch.Tensor) -> torch.Tensor:
        """A model-patch-grid mask (..., G, G, G) upsampled to voxels (..., S, S, S)."""
        return _repeat(mask, self.model_patch_size)


def _repeat(mask: torch.Tensor, factor: int) -> torch.Tensor:
    for dim in (-3, -2, -1):
        mask = mask.repeat_interleave(factor, dim=dim)
    return mask
