"""Procedural data that needs no real images: the RaSD synthesis engine and SyntheticOrgans.

- ``fields``: smooth random fields, per-label warps, argmax label maps (RaSD structure);
- ``appearance``: per-label intensity, bias field, noise, blur, min-max, gamma (RaSD appearance);
- ``organs``: ``SyntheticOrgans``, the embedded default data set (one template per organ).
"""
from __future__ import annotations

from organfm.synthesis.appearance import (
    bias_field,
    draw_bias_field,
    gamma,
    gaussian_blur,
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
from organfm.synthesis.organs import LABEL_MAP, SyntheticOrgans

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
    "gaussian_blur",
    "minmax",
    "gamma",
    "labels_to_image",
    "SyntheticOrgans",
    "LABEL_MAP",
]
