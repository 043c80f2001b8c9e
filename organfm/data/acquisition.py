"""Acquisition metadata -> an organ-independent text description (Triad's "imaging description").

Only whitelisted acquisition fields are read, and each is reduced to a number or a code from a closed
vocabulary, so no identifier (names, IDs, UIDs, dates, institutions) and no organ or pathology word
(series or study descriptions, body part) can reach a description, whatever the header holds.

Fields (all optional): ``modality`` (DICOM code: CT, MR, ...), ``sequence`` (ScanningSequence codes:
SE, IR, GR, EP, RM), ``field_strength`` (T), ``manufacturer`` (first word, letters only), ``tr``/``te``/``ti``
(ms), ``orientation`` (axial, coronal, sagittal, oblique), ``spacing`` (mm, D x H x W).

Sources: DICOM tags (:func:`acquisition_from_dicom`), a NIfTI affine (:func:`orientation_from_affine`) and a
BIDS JSON sidecar beside a NIfTI file (:func:`acquisition_from_sidecar`), each through the same whitelist.
"""
from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FIELDS", "acquisition_from_dicom", "acquisition_from_sidecar", "describe_acquisition",
           "orientation_from_affine", "orientation_name", "sidecar_path"]

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


def orientation_from_affine(affine: np.ndarray) -> str | None:
    """The acquisition plane of a stored volume from its (4, 4) voxel -> mm affine (RAS+ or LPS+).

    The plane is that of the stored 2D slices: the first two storage axes, so its normal is the through-plane
    (third, slowest) axis, as a converter from DICOM (dcm2niix, nibabel) writes one acquired slice per step of
    the last axis. This is the DICOM definition (row x column of each slice) and, unlike "the axis of lowest
    resolution", it is defined for isotropic volumes too. Sign flips of axes do not change the plane, so RAS+
    and LPS+ affines give the same answer.

    Returns:
        ``"axial"``, ``"coronal"``, ``"sagittal"`` or ``"oblique"``; None for a degenerate affine (a zero or
        repeated direction: no plane to recover).
    """
    a = np.asarray(affine, dtype=float)[:3, :3]
    if not np.isfinite(a).all():
        return None
    first, second = (a[:, k] / n if (n := np.linalg.norm(a[:, k])) > 0 else a[:, k] for k in (0, 1))
    if np.linalg.norm(np.cross(first, second)) < 1e-6:
        return None
    return orientation_name(first, second)


# BIDS sidecar key -> (field, factor to the field's unit): BIDS gives times in seconds, the fields are in ms.
# Only acquisition physics is read: free text (SeriesDescription, ProtocolName) can name an organ or a
# pathology, and identifiers (PatientName, AcquisitionDateTime, ...) are never looked at, as for DICOM.
_SIDECAR_KEYS = {"Modality": ("modality", None), "ScanningSequence": ("sequence", None),
                 "MagneticFieldStrength": ("field_strength", 1.0), "Manufacturer": ("manufacturer", None),
                 "RepetitionTime": ("tr", 1000.0), "EchoTime": ("te", 1000.0), "InversionTime": ("ti", 1000.0)}


def sidecar_path(nifti_path: str | Path) -> Path:
    """The BIDS JSON sidecar of a NIfTI file: ``x.nii.gz`` / ``x.nii`` -> ``x.json`` in the same folder."""
    p = Path(nifti_path)
    stem = p.name[: -len(".nii.gz")] if p.name.lower().endswith(".nii.gz") else p.stem
    return p.with_name(stem + ".json")


def acquisition_from_sidecar(nifti_path: str | Path) -> dict[str, Any]:
    """The whitelisted acquisition fields of the BIDS sidecar beside ``nifti_path`` ({} when it has none).

    A sidecar that is not a readable JSON object is a warning naming it, and gives {}: the volume stays
    usable without its metadata.

    Args:
        nifti_path: the NIfTI file (``x.nii.gz``); its sidecar is ``x.json`` (:func:`sidecar_path`).

    Returns:
        field -> value for ``modality``, ``sequence``, ``field_strength``, ``manufacturer``, ``tr``/``te``/``ti``
        (converted from BIDS seconds to ms); nothing else.
    """
    path = sidecar_path(nifti_path)
    if not path.is_file():
        return {}
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        warnings.warn(f"{path}: unreadable BIDS sidecar ignored ({type(e).__name__}: {e})", stacklevel=2)
        return {}
    if not isinstance(content, dict):
        warnings.warn(f"{path}: BIDS sidecar ignored: a JSON object is expected, got {type(content).__name__}",
                      stacklevel=2)
        return {}
    out: dict[str, Any] = {}
    for key, (name, factor) in _SIDECAR_KEYS.items():
        value = content.get(key)
        if value is None or value == "" or isinstance(value, (dict, bool)):
            continue
        if factor is not None:
            number = _number(value[0] if isinstance(value, list) and value else value)  # multi-echo: the first
            if number is not None:
                out[name] = round(number * factor, 6)  # 0.0143 s -> 14.3 ms, not 14.299999999999999
        elif name == "sequence":
            # dcm2niix joins multi-valued DICOM codes with "_" ("SE_IR") or writes a list
            codes = value if isinstance(value, list) else re.split(r"[_\\/ ,]+", str(value))
            out[name] = "\\".join(str(c) for c in codes)
        else:
            out[name] = str(value)
    return out


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
