"""Data: what a sample is and where it comes from.

``build_dataset(source, ...)`` is the one entry point: folders, manifests, npz, tar archives,
NIfTI/DICOM files and volume + label-map crops all become an :class:`OrganDataset` whose items are
``{"image": (C, H, W) or (C, D, H, W) float in [0, 1], "organ": int, "index": int}``.
"""
from __future__ import annotations

# dicom and nifti register their readers on import; their heavy libraries load only when used
from organfm.data import dicom as _dicom  # noqa: F401
from organfm.data import nifti as _nifti  # noqa: F401
from organfm.data.dataset import OrganDataset, build_dataset
from organfm.data.errors import DataError, count_skips, read_skip_log
from organfm.data.intensity import INTENSITY_MODES, normalize_intensity
from organfm.data.readers import READERS, Header, Reader, create_reader, find_reader, list_readers, register_reader
from organfm.data.records import Record
from organfm.data.sample import IMAGE, INDEX, ORGAN, UNKNOWN_ORGAN, Sample
from organfm.data.samplers import ResumableBatchSampler
from organfm.data.volumes import load_class_map

__all__ = [
    "build_dataset", "OrganDataset", "Record", "DataError", "read_skip_log", "count_skips",
    "Reader", "Header", "READERS", "register_reader", "create_reader", "list_readers", "find_reader",
    "normalize_intensity", "INTENSITY_MODES", "load_class_map",
    "Sample", "IMAGE", "ORGAN", "INDEX", "UNKNOWN_ORGAN", "ResumableBatchSampler",
]
