"""Shared fixtures: where the real data lives, and small fast configs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    """``$ORGANFM_DATA``, else ``<repo>/../shared/data``."""
    return Path(os.environ.get("ORGANFM_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = shared_data_root()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (set ORGANFM_DATA to the folder holding the shared datasets)")
    return root


@pytest.fixture(scope="session")
def mednist_archive(data_root: Path) -> Path:
    path = data_root / "mednist" / "MedNIST.tar.gz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="session")
def ct_files(data_root: Path) -> dict:
    """The TotalSegmentator example CT: paths, its class map and the label volume (D, H, W) int64."""
    folder = data_root / "totalseg-example"
    files = {"image": folder / "example_ct.nii.gz", "labels": folder / "example_seg_fast_force_split.nii.gz",
             "class_map": folder / "totalsegmentator_classmap.json"}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        pytest.skip(f"TotalSegmentator example not found: {', '.join(missing)}")
    from organfm.data.nifti import NiftiReader
    from organfm.data.volumes import load_class_map

    files["map"] = load_class_map(files["class_map"], "total")
    import numpy as np

    files["volume"] = np.asarray(NiftiReader().read_volume(str(files["labels"]))[0]).astype(np.int64)
    return files


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures the code under test closes, kept open for inspection (closed after the test)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kept = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", kept.append)
    yield kept
    for fig in kept:
        real_close(fig)


@pytest.fixture
def no_pyarrow(monkeypatch):
    """Imports of pyarrow fail, as on a machine without it."""
    import builtins

    real_import = builtins.__import__

    def blocked(name, *args, **kwargs):
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ImportError("no pyarrow")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", blocked)
