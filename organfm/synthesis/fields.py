"""Random label structure, RaSD style: smooth random fields, per-label warps, argmax.

A label map is drawn as in the official RaSD generator [0] (``DatasetGEN3D.gen_lab_img``):

1. K smooth random fields, one per label (``draw_smooth_field``);
2. one independent smooth displacement field per label channel, in voxels;
3. each label field warped by its own displacement (``warp``);
4. the label of a voxel is the argmax over the K warped fields.

Every draw takes an explicit ``torch.Generator``; nothing reads the global RNG.
Shapes are spatial tuples of length 2 (H, W) or 3 (D, H, W); tensors are channel-first.

[0] Wei et al., "Free Lunch in Medical Image Foundation Model Pre-training via Randomized
    Synthesis and Disentanglement" (RaSD), arXiv 2602.12317; code: github.com/yweibs/RaSD.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "draw_smooth_field",
    "draw_label_fields",
    "draw_label_map",
    "warp",
    "argmax_labels",
]


def draw_smooth_field(
    shape: Sequence[int],
    num_channels: int,
    scales: Sequence[float],
    max_std: float,
    generator: torch.Generator,
    *,
    min_std: float = 0.0,
) -> torch.Tensor:
    """Multi-scale smooth Gaussian noise (RaSD's ``draw_perlin``).

    For each scale s, white noise N(0, σ²) is drawn on a coarse grid of ``ceil(n / s)`` points
    along an axis of length n, i.e. a scale is the coarse-cell size in voxels. σ ~ U(min_std,
    max_std) is drawn once per scale and shared by all channels, as in the reference. Each
    coarse grid is upsampled (bi/tri-linear, ``align_corners=True``) to ``shape`` and the
    scales are summed.

    Args:
        shape: Spatial shape, (H, W) or (D, H, W).
        num_channels: Number of independent channels C.
        scales: Coarse-cell sizes in voxels, e.g. (S/8, S/4) for RaSD label fields, which
            gives 8- and 4-point grids whatever the side S.
        max_std: Upper bound of the per-scale standard deviation.
        generator: Source of randomness.
        min_std: Lower bound of the per-scale standard deviation.

    Returns:
        float32 tensor (C, *shape).
    """
    shape = _spatial_shape(shape)
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    out = torch.zeros((num_channels, *shape))
    for scale in scales:
        if scale <= 0:
            raise ValueError(f"scales must be positive, got {tuple(scales)}")
        std = min_std + (max_std - min_std) * torch.rand((), generator=generator).item()
        grid = tuple(max(1, math.ceil(n / scale)) for n in shape)
        noise = torch.randn((1, num_channels, *grid), generator=generator).mul_(std)
        if grid != shape:
            noise = F.interpolate(noise, size=shape, mode=mode, align_corners=True)
        out += noise[0]
    return out


def draw_label_fields(
    shape: Sequence[int],
    num_labels: int | None,
    generator: torch.Generator,
    *,
    label_scales: Sequence[float] | None = None,
    flow_scales: Sequence[float] | None = None,
    flow_max_std: float | None = None,
) -> torch.Tensor:
    """The K warped label fields whose argmax is a RaSD label map.

    Defaults follow the reference online loader, with S the longest side:

    - label fields: scales (S/8, S/4) (8- and 4-point coarse grids), std U(0, 1) per scale;
    - flows: one (d, *shape) displacement per label, scales (S/16, S/8, S/4) (16-, 8- and
      4-point grids), std U(0, S/16) voxels per scale (8 voxels at S = 128).

    Scales are clamped to at least one voxel, so tiny shapes still work.

    Args:
        shape: Spatial shape, (H, W) or (D, H, W).
        num_labels: Number of labels K; ``None`` gives S//16 in 3D and S//32 in 2D, at least 2.
        generator: Source of randomness.
        label_scales: Override the label-field scales (coarse-cell sizes in voxels).
        flow_scales: Override the flow scales (coarse-cell sizes in voxels).
        flow_max_std: Override the flow's per-scale std bound, in voxels.

    Returns:
        float32 tensor (K, *shape) of warped fields.
    """
    shape = _spatial_shape(shape)
    side = max(shape)
    num_labels = _default_num_labels(shape) if num_labels is None else num_labels
    if num_labels < 1:
        raise ValueError(f"num_labels must be >= 1, got {num_labels}")
    if label_scales is None:
        label_scales = (max(1, side // 8), max(1, side // 4))
    if flow_scales is None:
        flow_scales = (max(1, side // 16), max(1, side // 8), max(1, side // 4))
    if flow_max_std is None:
        flow_max_std = side / 16

    fields = draw_smooth_field(shape, num_labels, label_scales, 1.0, generator)
    flows = draw_smooth_field(shape, num_labels * len(shape), flow_scales, flow_max_std, generator)
    # Each label channel is its own batch element, so it moves with its own displacement.
    flows = flows.reshape(num_labels, len(shape), *shape)
    return warp(fields.unsqueeze(1), flows).squeeze(1)


def draw_label_map(
    shape: Sequence[int],
    num_labels: int | None,
    generator: torch.Generator,
    *,
    label_scales: Sequence[float] | None = None,
    flow_scales: Sequence[float] | None = None,
    flow_max_std: float | None = None,
) -> torch.Tensor:
    """An integer RaSD label map: argmax over the warped label fields.

    Some of the K labels may be absent, as in the reference.

    Args:
        shape: Spatial shape, (H, W) or (D, H, W).
        num_labels: Number of labels K; ``None`` gives S//16 in 3D and S//32 in 2D, at least 2.
        generator: Source of randomness.
        label_scales: Override the label-field scales (see ``draw_label_fields``).
        flow_scales: Override the flow scales (see ``draw_label_fields``).
        flow_max_std: Override the flow's per-scale std bound, in voxels.

    Returns:
        int64 tensor (1, *shape) with values in [0, K).
    """
    fields = draw_label_fields(
        shape,
        num_labels,
        generator,
        label_scales=label_scales,
        flow_scales=flow_scales,
        flow_max_std=flow_max_std,
    )
    return argmax_labels(fields)


def warp(
    field: torch.Tensor,
    flow: torch.Tensor,
    *,
    mode: str = "bilinear",
    padding_mode: str = "border",
) -> torch.Tensor:
    """Spatial transformer: ``out(x) = field(x + flow(x))``, displacements in voxels.

    ``flow[:, i]`` moves along spatial axis i (D, H, W order), so a constant flow of +t along
    the last axis shifts the content by t voxels towards lower indices. Voxel coordinates are
    normalised with the ``align_corners=True`` convention that RaSD's normalisation
    ``2 (x / (n - 1) - 0.5)`` implies (the reference then calls ``grid_sample`` with the
    default ``align_corners=False``, a sub-voxel zoom we do not copy). Outside samples repeat
    the border (``"border"``); the reference's zero padding would paint an artificial label-0
    frame once argmax is taken.

    Args:
        field: Tensor (B, C, *S) to resample, S of length 2 or 3.
        flow: Displacement (B, d, *S) in voxels, d = len(S).
        mode: ``"bilinear"`` or ``"nearest"`` (use nearest for integer maps cast to float).
        padding_mode: ``grid_sample`` padding mode.

    Returns:
        Tensor (B, C, *S) with the dtype of ``field``.
    """
    spatial = tuple(flow.shape[2:])
    if flow.dim() not in (4, 5) or flow.shape[1] != len(spatial):
        raise ValueError(f"flow must be (B, d, *S) with d = len(S) in (2, 3), got {tuple(flow.shape)}")
    if tuple(field.shape[2:]) != spatial or field.shape[0] != flow.shape[0]:
        raise ValueError(f"field {tuple(field.shape)} does not match flow {tuple(flow.shape)}")
    base, step = _normalised_grid(spatial, flow.dtype, flow.device)
    locs = torch.addcmul(base, flow, step)  # normalised sampling positions, (B, d, *S)
    # grid_sample wants the coordinates last and in (x, y[, z]) order, i.e. reversed axes.
    locs = locs.movedim(1, -1).flip(-1).to(field.dtype)
    return F.grid_sample(field, locs, mode=mode, padding_mode=padding_mode, align_corners=True)


def argmax_labels(fields: torch.Tensor) -> torch.Tensor:
    """Index of the largest field per voxel, ties to the lowest index (as ``argmax``).

    A running maximum over the K channels: ``Tensor.argmax(dim=0)`` reduces across a strided
    axis and is 5-15x slower on CPU, which made it the most expensive step of an item.

    Args:
        fields: Tensor (K, *S).

    Returns:
        int64 label map (1, *S).
    """
    best = fields[0]
    labels = torch.zeros(best.shape, dtype=torch.long, device=fields.device)
    for k in range(1, fields.shape[0]):
        labels.masked_fill_(fields[k] > best, k)
        best = torch.maximum(best, fields[k])
    return labels.unsqueeze(0)


@functools.lru_cache(maxsize=32)
def _normalised_grid(
    spatial: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Identity positions in [-1, 1] (1, d, *S) and voxel-to-normalised factors (1, d, 1...).

    Cached because every warp of a given shape needs the same grid; callers never modify it.
    """
    axes = [torch.linspace(-1.0, 1.0, n, dtype=dtype, device=device) for n in spatial]
    base = torch.stack(torch.meshgrid(*axes, indexing="ij")).unsqueeze(0)
    step = torch.tensor([2.0 / max(n - 1, 1) for n in spatial], dtype=dtype, device=device)
    return base, step.view(1, len(spatial), *([1] * len(spatial)))


def _spatial_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"shape must be 2 or 3 positive sizes, got {shape}")
    return shape


def _default_num_labels(shape: Sequence[int]) -> int:
    """RaSD's K: S//16 labels in 3D (8 at 128³), S//32 in 2D (16 at 512²), at least 2."""
    divisor = 16 if len(shape) == 3 else 32
    return max(2, max(shape) // divisor)
