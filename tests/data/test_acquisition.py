"""Acquisition metadata -> description: whitelisted fields only, closed vocabularies."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from organfm.data.acquisition import acquisition_from_sidecar, describe_acquisition, orientation_name, sidecar_path


def test_description_from_fields_in_a_fixed_order():
    meta = {"spacing": [3, 1, 1], "te": 15.0, "tr": "500", "modality": "mr", "field_strength": 1.5,
            "manufacturer": "SIEMENS", "orientation": "sagittal", "sequence": ["GR", "IR"]}
    assert describe_acquisition(meta) == ("MR, sequence GR IR, 1.5 T, vendor siemens, TR 500 ms, TE 15 ms, "
                                          "sagittal, spacing 3 x 1 x 1 mm")


def test_free_text_and_unknown_values_never_pass():
    meta = {"modality": "Liver MRI of John Smith", "sequence": "t1_vibe_liver", "manufacturer": "GE 12345 Hospital",
            "orientation": "liver", "tr": "nan", "te": -3, "PatientName": "Smith^John", "spacing": ["a", 1, 1],
            "SeriesDescription": "pancreas tumour"}
    assert describe_acquisition(meta) == "vendor ge"
    assert describe_acquisition({}) == "unknown acquisition"


def test_orientation_names():
    assert orientation_name([1, 0, 0], [0, 1, 0]) == "axial"
    assert orientation_name([1, 0, 0], [0, 0, -1]) == "coronal"
    assert orientation_name([0, 1, 0], [0, 0, -1]) == "sagittal"
    assert orientation_name([1, 0, 0], [0, 0.7071, 0.7071]) == "oblique"


# a dcm2niix-style BIDS sidecar: acquisition physics (times in seconds) beside identifiers and free text
SIDECAR = {"Modality": "MR", "MagneticFieldStrength": 3, "Manufacturer": "Siemens", "ScanningSequence": "SE_IR",
           "RepetitionTime": 2.3, "EchoTime": 0.0143, "InversionTime": 0.9, "SeriesDescription": "liver tumor t1",
           "ProtocolName": "pancreas_protocol", "PatientName": "Doe^Jane", "PatientID": "SECRET-4711",
           "PatientBirthDate": "19700101", "InstitutionName": "St Elsewhere", "AcquisitionDateTime": "2020-01-01T10:00",
           "DeviceSerialNumber": "98765"}
PRIVATE = ("doe", "jane", "secret", "4711", "1970", "elsewhere", "98765", "2020", "liver", "tumor", "pancreas")


def test_bids_sidecar_feeds_the_description_without_identifiers(tmp_path, make_nifti):
    from organfm.data.volume_set import load_volumes

    path = make_nifti(tmp_path / "sub-01_T1w.nii.gz", np.random.default_rng(0).random((6, 6, 6)).astype(np.float32))
    assert sidecar_path(path) == tmp_path / "sub-01_T1w.json" and sidecar_path("a/x.nii") == sidecar_path("a/x.nii.gz")
    (tmp_path / "sub-01_T1w.json").write_text(json.dumps(SIDECAR))
    fields = acquisition_from_sidecar(path)
    assert fields == {"modality": "MR", "sequence": "SE\\IR", "field_strength": 3.0, "manufacturer": "Siemens",
                      "tr": 2300.0, "te": 14.3, "ti": 900.0}  # BIDS seconds -> ms
    (volume,), _ = load_volumes(str(path), cube=4)
    text = describe_acquisition(volume.acquisition)
    assert text == ("MR, sequence SE IR, 3 T, vendor siemens, TR 2.3e+03 ms, TE 14.3 ms, TI 900 ms, axial, "
                    "spacing 1 x 1 x 1 mm")
    assert not any(word in (text + repr(volume.acquisition)).lower() for word in PRIVATE)


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe not utf-8"])
def test_malformed_sidecar_is_a_warning_naming_it(tmp_path, make_nifti, content):
    from organfm.data.volume_set import load_volumes

    path = make_nifti(tmp_path / "x.nii.gz", np.random.default_rng(0).random((6, 6, 6)).astype(np.float32))
    (tmp_path / "x.json").write_bytes(content)
    with pytest.warns(UserWarning, match=r"x\.json: .*BIDS sidecar"):
        (volume,), _ = load_volumes(str(path), cube=4)
    assert volume.acquisition == {"orientation": "axial", "spacing": [1.0, 1.0, 1.0]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert acquisition_from_sidecar(tmp_path / "none.nii.gz") == {}  # no sidecar: nothing, silently
