"""What the dense backbones (``unet_small``, ``swin_unetr``) share: input checks, padding, the output dict."""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["DenseBackbone", "check_dense_input", "dense_outputs", "pad_to_multiple"]


def pad_to_multiple(x: torch.Tensor, multiple: int, *, minimum: int = 1) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Zero-pad the spatial axes of (B, C, *S) at their far end to a multiple of ``multiple`` (>= ``minimum``).

    Args:
        x: Input (B, C, *S).
        multiple: Every padded side is a multiple of it.
        minimum: Every padded side is at least this.

    Returns:
        The padded tensor (B, C, *S') and the index that crops an output of size S' back to S.
    """
    sizes = x.shape[2:]
    target = [max(minimum, -(-n // multiple) * multiple) for n in sizes]
    pad: list[int] = []
    for n, t in zip(reversed(sizes), reversed(target)):
        pad += [0, t - n]
    crop = (slice(None), slice(None), *(slice(0, n) for n in sizes))
    return (F.pad(x, pad) if any(pad) else x), crop


def check_dense_input(x: torch.Tensor, spatial_dims: int, in_chans: int) -> None:
    """Raise ``ValueError`` unless ``x`` is (B, in_chans, *S) with ``spatial_dims`` spatial axes."""
    if x.dim() != spatial_dims + 2 or x.shape[1] != in_chans:
        raise ValueError(f"expected (B, {in_chans}, {'D, ' if spatial_dims == 3 else ''}H, W) input for a "
                         f"{spatial_dims}D backbone, got {tuple(x.shape)}")


def dense_outputs(dense: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
    """The contract dict of a dense backbone.

    Args:
        dense: Per-pixel/voxel features (B, E, *S) at input resolution.

    Returns:
        ``dense`` and ``feature_map`` (the same tensor: a dense backbone's map is full-resolution),
        ``skips`` ``[dense]`` (what a segmentation decoder such as ``BackboneUNet`` reads), and ``cls``
        (B, E), the spatial mean.
    """
    return {"dense": dense, "feature_map": dense, "skips": [dense],
            "cls": dense.mean(dim=tuple(range(2, dense.dim())))}


class DenseBackbone:
    """Mixin of the dense encoders: pooled, skip and dense outputs all come from ``forward_features``.

    A dense encoder's map is full-resolution, so its one skip is that map: ``skip_channels = [E]``.
    """

    @property
    def skip_channels(self) -> list[int]:
        return [int(self.num_features)]

    def forward_skips(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.forward_features(x)["dense"]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)["cls"]
