"""SimMIM 3D mask: exact count and ratio, upsampling to the patch grid and to voxels, seeded."""
from __future__ import annotations

import pytest
import torch

from organfm.views.mask3d import SimMIMMask3D


def test_paper_setting_hides_130_of_216_cells_on_the_48_grid():
    gen = SimMIMMask3D(96, 16, 2, 0.6)
    assert (gen.num_cells, gen.num_masked) == (216, 130)
    mask = gen(torch.Generator().manual_seed(0))
    assert mask.shape == (48, 48, 48)
    assert mask.sum().item() == 130 * 8 ** 3  # each cell is 8^3 model patches
    # constant within each 8^3 block of the patch grid
    blocks = mask.view(6, 8, 6, 8, 6, 8).permute(0, 2, 4, 1, 3, 5).reshape(216, -1)
    assert ((blocks == blocks[:, :1]).all())
    assert blocks[:, 0].sum().item() == 130


@pytest.mark.parametrize("ratio,cells,expected", [(0.6, 64, 39), (0.5, 64, 32), (0.01, 8, 1)])
def test_ceil_count(ratio, cells, expected):
    size = round(cells ** (1 / 3)) * 4
    gen = SimMIMMask3D(size, 4, 2, ratio)
    assert gen.num_cells == cells and gen.num_masked == expected
    assert gen.cells().sum().item() == expected


def test_voxels_and_seeding():
    gen = SimMIMMask3D(16, 8, 2, 0.6)
    a, b = gen(torch.Generator().manual_seed(3)), gen(torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    vox = gen.voxels(a[None])
    assert vox.shape == (1, 16, 16, 16) and vox.float().mean().item() == pytest.approx(a.float().mean().item())


def test_bad_sizes():
    with pytest.raises(ValueError, match="must divide the volume"):
        SimMIMMask3D(30, 16, 2, 0.6)
    with pytest.raises(ValueError, match="must divide mask_patch_size"):
        SimMIMMask3D(96, 16, 3, 0.6)
