"""Intensity normalisation to [0, 1], done once per image right after reading.

Modes:
    ``minmax``: per image, (x - min) / (max - min). The default.
    ``percentile``: clip to the image's ``percentiles`` (e.g. 0.5 and 99.5), then scale.
    ``window``: clip to ``center +- width / 2`` (e.g. a CT window in HU), then scale.
    ``dtype``: divide by the stored dtype's range (255 for 8-bit, 65535 for 16-bit).
    ``none``: leave values as they are (float32).

A constant image maps to zeros, never NaN.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["INTENSITY_MODES", "normalize_intensity"]

INTENSITY_MODES = ("minmax", "percentile", "window", "dtype", "none")


def normalize_intensity(image: np.ndarray, mode: str = "minmax", *, window: Sequence[float] | None = None,
                        percentiles: Sequence[float] = (0.5, 99.5), dtype: str | None = None) -> np.ndarray:
    """Map ``image`` to [0, 1] float32.

    Args:
        image: any shape, e.g. (C, H, W) or (C, D, H, W); all channels share one scale so colour
            and gray balance are kept.
        mode: one of ``INTENSITY_MODES`` (see the module docstring).
        window: ``(center, width)`` for ``mode="window"``.
        percentiles: ``(low, high)`` in percent for ``mode="percentile"``.
        dtype: the stored dtype (``meta["dtype"]``) for ``mode="dtype"``; float data is clipped to [0, 1].

    Returns:
        float32 array of the same shape, in [0, 1] unless ``mode="none"``.
    """
    x = np.asarray(image, dtype=np.float32)
    if mode == "none":
        return x
    if mode == "minmax":
        low, high = float(x.min()), float(x.max())
    elif mode == "percentile":
        low, high = (float(v) for v in np.percentile(x, percentiles))
    elif mode == "window":
        if window is None:
            raise ValueError('intensity="window" needs window=(center, width)')
        center, width = float(window[0]), float(window[1])
        low, high = center - width / 2, center + width / 2
    elif mode == "dtype":
        low, high = _dtype_range(dtype)
    else:
        raise ValueError(f"unknown intensity mode {mode!r}; valid: {', '.join(INTENSITY_MODES)}")
    if high <= low:
        return np.zeros_like(x)  # a constant image carries no contrast; 0 rather than 0/0
    out = x - np.float32(low)  # a new array: the caller's image is never modified
    out *= np.float32(1.0 / (high - low))
    return np.clip(out, 0.0, 1.0, out=out)


def _dtype_range(dtype: str | None) -> tuple[float, float]:
    if dtype is None:
        raise ValueError('intensity="dtype" needs the stored dtype of the image')
    kind = np.dtype(dtype)
    if kind == np.bool_:
        return 0.0, 1.0
    if np.issubdtype(kind, np.integer):
        info = np.iinfo(kind)
        # unsigned: [0, max]; signed (e.g. int16 CT): the full [min, max] range
        return float(info.min), float(info.max)
    return 0.0, 1.0  # float data is taken to be in [0, 1] already
