"""DICOM reader (pydicom, imported on first use): modality LUT, VOI window, MONOCHROME1, compressed data.

Order of operations, as the DICOM display pipeline defines it (PS3.3 C.11): stored values ->
modality LUT (RescaleSlope/Intercept, so CT becomes HU) -> VOI LUT or window (when ``use_voi``) ->
MONOCHROME1 inversion. Enhanced multi-frame files keep rescale and window per frame in functional
groups; they are looked up there first.
"""
from __future__ import annotations

import io
import zlib
from typing import Any

import numpy as np

from organfm.data.errors import DataError
from organfm.data.readers import Header, location, register_reader
from organfm.data.voxel_cap import DEFAULT_MAX_VOLUME_VOXELS, check_voxels

__all__ = ["DicomReader", "check_deflated"]

_GROUP_TAGS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
# pip packages that provide pydicom decoders, named in the error when none is installed
_DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg pylibjpeg-libjpeg",  # JPEG baseline
    "1.2.840.10008.1.2.4.51": "pylibjpeg pylibjpeg-libjpeg",  # JPEG extended
    "1.2.840.10008.1.2.4.57": "pylibjpeg pylibjpeg-libjpeg",  # JPEG lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg pylibjpeg-libjpeg",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80": "pylibjpeg pylibjpeg-libjpeg",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": "pylibjpeg pylibjpeg-libjpeg",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg pylibjpeg-openjpeg",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K
    "1.2.840.10008.1.2.5": "pylibjpeg-rle",  # RLE (pydicom also decodes it itself)
}


@register_reader("dicom")
class DicomReader:
    """One DICOM file: (C, H, W) for a frame, (C, F, H, W) for all frames of a multi-frame file.

    Args:
        use_voi: apply the file's VOI LUT or window (WindowCenter/WindowWidth), giving values in
            [0, 1]; turn off to get modality values (HU for CT) and window them yourself.
        max_volume_voxels: the most voxels (Rows x Columns x frames x samples) a file may declare
            (``data.max_volume_voxels``); checked from the header before any pixel is decoded.
    """

    suffixes = (".dcm", ".dicom")

    def __init__(self, use_voi: bool = True, max_volume_voxels: int = DEFAULT_MAX_VOLUME_VOXELS) -> None:
        if max_volume_voxels < 1:
            raise ValueError(f"max_volume_voxels must be positive, got {max_volume_voxels}")
        self.use_voi = use_voi
        self.max_volume_voxels = int(max_volume_voxels)

    def read_header(self, path: str, *, data: bytes | None = None, member: str | None = None) -> Header:
        """Read the header only (``stop_before_pixels``) and check that the pixels can be decoded."""
        where = location(path, member)
        ds = _dcmread(path, data, where, stop_before_pixels=True, max_voxels=self.max_volume_voxels)
        if "Rows" not in ds or "Columns" not in ds:
            raise DataError(f"{where}: DICOM file holds no image (no Rows/Columns)")
        _check_size(ds, where, self.max_volume_voxels)
        _check_decoder(ds, where)
        num_frames = int(ds.get("NumberOfFrames", 1) or 1)
        body_part = str(ds.get("BodyPartExamined", "") or "").strip().lower() or None
        # a series split over many files must not straddle splits: group by patient, else by the most
        # specific scan identifier left after de-identification (often only FrameOfReferenceUID is)
        patient = next((str(ds.get(tag)).strip() for tag in _GROUP_TAGS if str(ds.get(tag, "") or "").strip()), None)
        return Header(num_items=num_frames, stacked=num_frames > 1, body_part=body_part,
                      modality=str(ds.get("Modality", "") or "") or None, patient_key=patient)

    def read(self, path: str, *, data: bytes | None = None, member: str | None = None,
             row: int | None = None, index: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        from pydicom.pixels import apply_color_lut, pixel_array

        where = location(path, member)
        ds = _dcmread(path, data, where, stop_before_pixels=False, max_voxels=self.max_volume_voxels)
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            raise DataError(f"{where}: DICOM file has no pixel data (truncated, or not an image)")
        _check_size(ds, where, self.max_volume_voxels)
        _check_decoder(ds, where)
        num_frames = int(ds.get("NumberOfFrames", 1) or 1)
        if index is not None and not 0 <= index < num_frames:
            raise DataError(f"{where}: no frame {index} ({num_frames} frames)")
        try:
            # a single frame of a multi-frame file is decoded alone
            pixels = pixel_array(ds, index=index if num_frames > 1 else None)
        except Exception as e:  # decoders raise many types for corrupt or truncated data
            raise DataError(f"{where}: cannot decode pixel data ({type(e).__name__}: {e})") from e
        stored_dtype = str(pixels.dtype)
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
        stacked = num_frames > 1 and index is None
        frames = pixels if stacked else pixels[None]  # (F, H, W[, 3])
        window = None
        if photometric in ("MONOCHROME1", "MONOCHROME2"):
            first = index or 0
            out, window = [], None
            for k, frame in enumerate(frames):
                shown, window = self._display_values(frame, ds, first + k)
                out.append(shown)
            array = np.stack(out)[None]  # (1, F, H, W)
            normalized = window is not None
            if photometric == "MONOCHROME1":
                # minimum value is white: invert within [0, 1] after a window, else within the value range
                array = 1.0 - array if normalized else array.min() + array.max() - array
            photometric_out = photometric
        else:
            if photometric == "PALETTE COLOR":
                frames = apply_color_lut(frames, ds)
            array = np.moveaxis(frames.reshape(frames.shape[:3] + (-1,)), -1, 0)  # (3, F, H, W)
            normalized, photometric_out = False, "RGB"
        if not stacked:
            array = array[:, 0]
        meta = {"path": where if index is None else f"{where}#{index}", "dtype": stored_dtype,
                "photometric": photometric_out, "modality": str(ds.get("Modality", "") or "") or None,
                "spacing": _spacing(ds, stacked), "window": window, "normalized": normalized}
        return np.ascontiguousarray(array, dtype=np.float32), meta

    def _display_values(self, frame: np.ndarray, ds: Any, k: int) -> tuple[np.ndarray, tuple[float, float] | None]:
        """Modality LUT, then (if ``use_voi``) the VOI LUT or window to [0, 1] for frame ``k``."""
        from pydicom.pixels import apply_modality_lut, apply_voi

        if "ModalityLUTSequence" in ds:
            values = np.asarray(apply_modality_lut(frame, ds), dtype=np.float64)
        else:
            slope = float(_frame_attr(ds, k, "PixelValueTransformationSequence", "RescaleSlope", 1.0))
            intercept = float(_frame_attr(ds, k, "PixelValueTransformationSequence", "RescaleIntercept", 0.0))
            values = frame.astype(np.float64) * slope + intercept
        if not self.use_voi:
            return values, None
        if "VOILUTSequence" in ds:
            # a lookup table replaces the window; its output spans [0, 2**bits - 1]
            bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
            return np.asarray(apply_voi(values, ds), dtype=np.float64) / (2**bits - 1), None
        center = _frame_attr(ds, k, "FrameVOILUTSequence", "WindowCenter", None)
        width = _frame_attr(ds, k, "FrameVOILUTSequence", "WindowWidth", None)
        if center is None or width is None:
            return values, None
        center, width = float(_first(center)), float(_first(width))
        function = str(_frame_attr(ds, k, "FrameVOILUTSequence", "VOILUTFunction", "LINEAR")).upper()
        return _apply_window(values, center, width, function), (center, width)


def _apply_window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    # PS3.3 C.11.2.1.2: LINEAR uses (center - 0.5, width - 1); LINEAR_EXACT the values as given
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / max(width, 1e-6)))
    if function == "LINEAR":
        center, width = center - 0.5, max(width - 1.0, 1e-6)
    return np.clip((values - center) / max(width, 1e-6) + 0.5, 0.0, 1.0)


def _first(value: Any) -> Any:
    # WindowCenter/Width may be multi-valued (alternative windows); the first is the default
    return value[0] if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else value


def _frame_attr(ds: Any, k: int, sequence: str, attr: str, default: Any) -> Any:
    """``attr`` for frame ``k``: per-frame functional group, then shared group, then top level."""
    for groups_name in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        groups = ds.get(groups_name)
        if not groups:
            continue
        item = groups[min(k, len(groups) - 1)] if groups_name.startswith("PerFrame") else groups[0]
        inner = item.get(sequence)
        if inner and attr in inner[0]:
            return inner[0][attr].value
    value = ds.get(attr, default)
    return default if value is None or value == "" else value


def _spacing(ds: Any, stacked: bool) -> tuple[float, ...] | None:
    pixel = _frame_attr(ds, 0, "PixelMeasuresSequence", "PixelSpacing", None)
    if pixel is None:
        return None
    in_plane = (float(pixel[0]), float(pixel[1]))
    if not stacked:
        return in_plane
    between = _frame_attr(ds, 0, "PixelMeasuresSequence", "SpacingBetweenSlices", None)
    thickness = _frame_attr(ds, 0, "PixelMeasuresSequence", "SliceThickness", None)
    depth = between if between is not None else thickness
    return (float(depth) if depth is not None else float("nan"),) + in_plane


def _check_size(ds: Any, where: str, cap: int) -> None:
    """Rows x Columns x frames x samples of a dataset's header against the voxel cap."""
    try:
        dims = [int(ds.get(tag, 1) or 1) for tag in ("NumberOfFrames", "Rows", "Columns", "SamplesPerPixel")]
    except (TypeError, ValueError) as e:
        raise DataError(f"{where}: unreadable image size in the header ({e})") from e
    check_voxels(dims, where=where, cap=cap, what="header declares (frames x rows x columns x samples)")


_DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian
_CHUNK = 1 << 20


def check_deflated(path: str, data: bytes | None, where: str, max_voxels: int = DEFAULT_MAX_VOLUME_VOXELS) -> None:
    """Refuse a deflated DICOM file that inflates past ``2 bytes x max_voxels`` (plus 1 MiB of header).

    pydicom inflates a deflated file whole, in memory, before it reads even the header
    (``stop_before_pixels`` does not help), so a few-MB file could cost gigabytes. The stream is
    inflated here first, a chunk at a time with the output dropped, so checking costs no memory;
    other transfer syntaxes return at once (only the 132-byte preamble and the file meta are read).
    """
    import pydicom.filereader

    limit = 2 * max_voxels + (1 << 20)
    with (io.BytesIO(data) if data is not None else open(path, "rb")) as fp:
        if fp.read(132)[128:132] != b"DICM":
            return
        try:
            meta = pydicom.filereader._read_file_meta_info(fp)  # leaves fp at the dataset's first byte
        except Exception:  # a damaged file meta: pydicom's own read names the problem
            return
        if str(meta.get("TransferSyntaxUID", "")) != _DEFLATED:
            return
        inflate, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
        while not inflate.eof:
            chunk = inflate.unconsumed_tail or fp.read(_CHUNK)
            if not chunk:
                break
            try:
                total += len(inflate.decompress(chunk, _CHUNK))
            except zlib.error:
                return  # damaged: pydicom's read raises and names it
            if total > limit:
                raise DataError(f"{where}: deflated DICOM data inflates to more than {limit} bytes (2 bytes x "
                                f"data.max_volume_voxels={max_voxels}); refused (a decompression bomb, or raise "
                                "data.max_volume_voxels if the file is genuine)")


def _dcmread(path: str, data: bytes | None, where: str, *, stop_before_pixels: bool,
             max_voxels: int = DEFAULT_MAX_VOLUME_VOXELS) -> Any:
    import pydicom

    if data is not None and len(data) == 0:
        raise DataError(f"{where}: empty file")
    try:
        check_deflated(path, data, where, max_voxels)
        return pydicom.dcmread(io.BytesIO(data) if data is not None else path, stop_before_pixels=stop_before_pixels)
    except DataError:
        raise
    except FileNotFoundError as e:
        raise DataError(f"{where}: file not found") from e
    except Exception as e:  # pydicom raises InvalidDicomError, EOFError, struct.error, ... on bad files
        raise DataError(f"{where}: not a readable DICOM file ({type(e).__name__}: {e})") from e


def _check_decoder(ds: Any, where: str) -> None:
    """Raise a DataError naming the transfer syntax and the package to install when no decoder exists."""
    import pydicom
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    meta = getattr(ds, "file_meta", None)
    uid = UID(str(meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))) if meta is not None else UID("1.2.840.10008.1.2")
    if uid.is_transfer_syntax and not uid.is_compressed:
        return
    name = f"{uid.name} ({uid})" if uid.name != str(uid) else str(uid)
    try:
        decoder = get_decoder(uid)
    except (NotImplementedError, ValueError):
        raise DataError(f"{where}: pydicom {pydicom.__version__} has no decoder for transfer syntax {name}; "
                        "decompress the file first (e.g. `gdcmconv --raw` or `dcmdjpeg`)") from None
    if not decoder.is_available:
        hint = _DECODER_PACKAGES.get(str(uid))
        options = "; ".join(decoder.missing_dependencies)
        raise DataError(f"{where}: no decoder installed for transfer syntax {name}; "
                        + (f"pip install {hint} " if hint else "") + f"(pydicom's options: {options})")
