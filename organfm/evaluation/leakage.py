"""Leakage guard: refuse an evaluation whose test split shares a patient or an exact image with a fitting split.

A test score is only a test score if no test patient, and no test image, was seen while fitting. The
guard compares the records of each fitting split (train, val) with those of the test split: the same
``patient_id``, or the same ``content_hash`` (byte-identical image, e.g. MedNIST's 440 copies when
de-duplication is off, or a manifest whose given splits overlap). Errors name record locations, never
the patient identifier itself.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from organfm.data.records import Record

__all__ = ["LeakageError", "check_leakage"]


class LeakageError(ValueError):
    """Train/val and test share patients or exact-duplicate images."""


def check_leakage(splits: Mapping[str, Sequence[Record]], *, test: str = "test",
                  fit: Sequence[str] = ("train", "val"), allow: bool = False) -> dict[str, dict[str, Any]]:
    """Count patients and exact duplicates shared between each fitting split and the test split.

    Args:
        splits: split name -> its records (``patient_id`` and ``content_hash`` are read).
        test: the held-out split.
        fit: the splits used for fitting or model selection.
        allow: report instead of raising (the ``allow_leakage=true`` override).

    Returns:
        ``{"<fit>-<test>": {"shared_patients": int, "duplicate_images": int}}`` per fitting split present.

    Raises:
        LeakageError: any overlap while ``allow`` is false; the message gives the count, one example
            (two record locations) and the override.
    """
    held_out = list(splits.get(test, []))
    test_patients: dict[str, Record] = {}
    test_hashes: dict[str, Record] = {}
    for record in held_out:
        if record.patient_id:
            test_patients.setdefault(record.patient_id, record)
        if record.content_hash:
            test_hashes.setdefault(record.content_hash, record)
    report: dict[str, dict[str, Any]] = {}
    problems = []
    for name in fit:
        if name not in splits:
            continue
        patients: dict[str, Record] = {}
        dups: dict[str, Record] = {}
        for record in splits[name]:
            if record.patient_id and record.patient_id in test_patients:
                patients.setdefault(record.patient_id, record)
            if record.content_hash and record.content_hash in test_hashes:
                dups.setdefault(record.content_hash, record)
        report[f"{name}-{test}"] = {"shared_patients": len(patients), "duplicate_images": len(dups)}
        if patients:
            pid, record = next(iter(patients.items()))
            problems.append(f"{len(patients)} patient(s) appear in both {name} and {test} (e.g. {name} item "
                            f"{record.where!r} and {test} item {test_patients[pid].where!r} share a patient)")
        if dups:
            digest, record = next(iter(dups.items()))
            problems.append(f"{len(dups)} {test} image(s) are exact duplicates of {name} images (e.g. {test} item "
                            f"{test_hashes[digest].where!r} == {name} item {record.where!r})")
    if problems and not allow:
        raise LeakageError("leakage between splits: " + "; ".join(problems)
                           + ". Fix the split (patient-level split_file, dedup) or pass allow_leakage=true "
                             "to evaluate anyway (the report will say so)")
    return report
