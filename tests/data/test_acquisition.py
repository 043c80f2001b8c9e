"""Acquisition metadata -> description: whitelisted fields only, closed vocabularies."""
from __future__ import annotations

from organfm.data.acquisition import describe_acquisition, orientation_name


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
