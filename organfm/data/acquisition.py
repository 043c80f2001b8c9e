"""Acquisition metadata -> an organ-independent text description (Triad's "imaging description").

Only whitelisted acquisition fields are read, and each is reduced to a number or a code from a closed
vocabulary, so no identifier (names, IDs, UIDs, dates, institutions) and no organ or pathology word
(series or study descriptions, body part) can reach a description, whatever the header holds.

Fields (all optional): ``modality`` (DICOM code: CT, MR, ...), ``sequence`` (ScanningSequence codes:
SE, IR, GR, EP, RM), ``field_strength`` (T), ``manufacturer`` (first word, letters only), ``tr``/``te``/``ti``
(ms), ``orientation`` (axial, coronal, sagittal, oblique), ``spacing`` (mm, D x H x W).
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["FIELDS", "acquisition_from_dicom", "describe_acquisition", "orientation_name"]

FIELDS = ("modality", "sequence", "field_strength", "manufacturer", "tr", "te", "ti", "orientation", "spacing")
_MODALITIES = {"CT", "MR", "PT", "NM", "US", "CR", "DX", "MG", "XA", "RF", "OT", "SYN"}
_SEQUENCES = {"SE", "IR", "GR", "EP", "RM"}
_ORIENTATIONS = {"axial", "coronal", "sagittal", "oblique"}


def _number(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and x > 0 else None


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def describe_acquisition(meta: Mapping[str, Any]) -> str:
    """A one-line description of the acquisition from the whitelisted ``FIELDS`` of ``meta``.

    Args:
        meta: field -> value (other keys are ignored; unparseable values are dropped).

    Returns:
        e.g. ``"MR, sequence SE, 3 T, vendor siemens, TR 500 ms, TE 15 ms, axial, spacing 3 x 0.977 x 0.977 mm"``;
        ``"unknown acquisition"`` when nothing usable is given.
    """
    parts = []
    modality = str(meta.get("modality") or "").strip().upper()
    if modality in _MODALITIES:
        parts.append("synthetic volume" if modality == "SYN" else modality)
    sequence = meta.get("sequence") or ""
    sequence = " ".join(map(str, sequence)) if isinstance(sequence, (list, tuple)) else str(sequence)
    codes = [c for c in re.split(r"[\\/ ,]+", sequence.upper()) if c in _SEQUENCES]
    if codes:
        parts.append("sequence " + " ".join(dict.fromkeys(codes)))
    if (tesla := _number(meta.get("field_strength"))) is not None:
        parts.append(f"{_fmt(tesla)} T")
    vendor = re.findall(r"[a-z]+", str(meta.get("manufacturer") or "").lower())
    if vendor and len(vendor[0]) <= 16:
        parts.append(f"vendor {vendor[0]}")
    for key, name in (("tr", "TR"), ("te", "TE"), ("ti", "TI")):
        if (ms := _number(meta.get(key))) is not None:
            parts.append(f"{name} {_fmt(ms)} ms")
    orientation = str(meta.get("orientation") or "").strip().lower()
    if orientation in _ORIENTATIONS:
        parts.append(orientation)
    spacing = meta.get("spacing")
    if isinstance(spacing, (Sequence, np.ndarray)) and not isinstance(spacing, str) and len(spacing) > 0:
        values = [_number(s) for s in spacing]
        if all(v is not None for v in values):
            parts.append("spacing " + " x ".join(_fmt(v) for v in values) + " mm")  # type: ignore[arg-type]
    return ", ".join(parts) if parts else "unknown acquisition"


def orientation_name(row: Sequence[float], col: Sequence[float]) -> str:
    """The plane of an image whose rows and columns run along ``row`` and ``col`` (patient LPS axes)."""
    normal = np.cross(np.asarray(row, dtype=float), np.asarray(col, dtype=float))
    axis = int(np.argmax(np.abs(normal)))
    if abs(normal[axis]) < 0.9 * np.linalg.norm(normal):
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def acquisition_from_dicom(ds: Any, spacing: Sequence[float] | None = None) -> dict[str, Any]:
    """The whitelisted acquisition fields of a pydicom dataset (nothing else is read from it).

    Args:
        ds: a pydicom ``Dataset`` (one slice of the series).
        spacing: the series' (D, H, W) spacing in mm, when known.
    """
    def get(tag: str) -> Any:
        value = ds.get(tag)
        return None if value is None or value == "" else value

    iop = get("ImageOrientationPatient")
    out = {"modality": get("Modality"), "sequence": get("ScanningSequence"),
           "field_strength": get("MagneticFieldStrength"), "manufacturer": get("Manufacturer"),
           "tr": get("RepetitionTime"), "te": get("EchoTime"), "ti": get("InversionTime"),
           "orientation": orientation_name(iop[:3], iop[3:]) if iop is not None and len(iop) == 6 else None,
           "spacing": list(spacing) if spacing is not None else None}
    if out["sequence"] is not None and not isinstance(out["sequence"], str):
        out["sequence"] = "\\".join(str(s) for s in out["sequence"])
    return {k: v for k, v in out.items() if v is not None}
