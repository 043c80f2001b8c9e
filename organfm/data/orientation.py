"""Voxel arrays brought to one display orientation from their affine, whatever the file's storage order.

The display orientation (shared by the NIfTI and DICOM series readers): axis D runs inferior -> superior
(axial slices), H anterior -> posterior (image top = anterior), W patient right -> left (image left =
patient right), as a CT viewer shows an axial slice. Affines map (i, j, k) voxel indices to RAS+ mm (NIfTI's
convention); a DICOM affine, built in LPS+, becomes RAS+ by negating its first two rows.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["LPS_TO_RAS", "display_orientation", "reorient_to_display"]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # DICOM patient axes (L, P, S) -> NIfTI's (R, A, S)


def display_orientation(affine: np.ndarray) -> np.ndarray:
    """Per array axis: (RAS axis it points along, +1/-1), nibabel's ``ornt``; storage order when degenerate.

    Args:
        affine: (4, 4) voxel -> RAS+ mm.

    Returns:
        (3, 2) float array, row ``a`` = (0/1/2 for R/A/S, +1 or -1) of array axis ``a``.
    """
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    if np.isnan(ornt).any():  # e.g. a zero column in a hand-made affine: no orientation to recover
        return np.array([[0, 1], [1, 1], [2, 1]], dtype=float)
    return ornt


def reorient_to_display(voxels: np.ndarray, affine: np.ndarray,
                        spacing: Sequence[float]) -> tuple[np.ndarray, tuple[float, float, float]]:
    """(X, Y, Z) stored voxels -> (D, H, W) in display orientation, with the spacing of the new axes.

    Args:
        voxels: (X, Y, Z) array in storage order (the affine's i, j, k).
        affine: (4, 4) voxel -> RAS+ mm.
        spacing: voxel size in mm of the stored axes (X, Y, Z).

    Returns:
        ``(display, spacing)``: a view of ``voxels`` (no copy) of shape (D, H, W), and (D, H, W) spacing in mm.
    """
    import nibabel as nib

    ornt = display_orientation(affine)
    ras = nib.orientations.apply_orientation(voxels, ornt)  # axes now point to R, A, S
    # (X:R, Y:A, Z:S) -> (D=S, H=posterior-down, W=patient-left): transpose, then flip H and W
    display = ras.transpose(2, 1, 0)[:, ::-1, ::-1]
    ras_spacing = [1.0, 1.0, 1.0]
    for axis, (ras_axis, _) in enumerate(ornt):
        ras_spacing[int(ras_axis)] = float(spacing[axis])
    return display, (ras_spacing[2], ras_spacing[1], ras_spacing[0])
