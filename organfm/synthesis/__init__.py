"""Procedural data that needs no real images: the RaSD synthesis engine and SyntheticOrgans.

- ``fields``: smooth random fields, per-label warps, argmax label maps (RaSD structure);
- ``appearance``: per-label intensity, bias field, noise, blur, min-max, gamma (RaSD appearance);
- ``organs``: ``SyntheticOrgans``, the embedded default data set (one template per organ);
- ``pairs``: ``RaSDPairs``, the endless indexed stream of RaSD image/label-map pairs;
- ``buffer``: ``SyntheticBuffer``, RaSD's online FIFO memory, resumable by step;
- ``export``: ``export_pairs``, the offline writer (PNG / NIfTI + manifest, preview grid).
"""
from __future__ import annotations

from organfm.synthesis.appearance import (
    bias_field,
    draw_bias_field,
    gamma,
    random_axis_blur,
    gaussian_noise,
    labels_to_image,
    minmax,
    per_label_intensity,
)
from organfm.synthesis.fields import (
    argmax_labels,
    draw_label_fields,
    draw_label_map,
    draw_smooth_field,
    warp,
)
from organfm.synthesis.buffer import SyntheticBuffer
from organfm.synthesis.export import export_pairs, save_nifti, save_preview
from organfm.synthesis.organs import LABEL_MAP, SyntheticOrgans
from organfm.synthesis.pairs import NonFiniteSampleError, RaSDPairs

__all__ = [
    "draw_smooth_field",
    "draw_label_fields",
    "draw_label_map",
    "warp",
    "argmax_labels",
    "per_label_intensity",
    "draw_bias_field",
    "bias_field",
    "gaussian_noise",
    "random_axis_blur",
    "minmax",
    "gamma",
    "labels_to_image",
    "SyntheticOrgans",
    "LABEL_MAP",
    "RaSDPairs",
    "NonFiniteSampleError",
    "SyntheticBuffer",
    "export_pairs",
    "save_nifti",
    "save_preview",
]
