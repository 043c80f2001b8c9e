"""Seeded fuzzing of every reader over real files: a damaged file is a DataError naming it, never anything else.

Each case mutates a real file from the shared data (truncation, bit flips, header byte edits) and
builds a dataset from it, then reads every item. The only acceptable outcomes are success, a
``DataError`` whose message names the file, or (with ``on_error="skip"``) a counted skip. Each case
runs under an alarm, so a hang fails the test instead of stalling CI. The number of cases is fixed
(``CASES`` per format) and the whole file runs in well under 20 s on two cores.
"""
from __future__ import annotations

import io
import os
import signal
import tarfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from organfm.data import DataError, build_dataset

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about every damaged file

CASES = int(os.environ.get("ORGANFM_FUZZ_CASES", 60))  # per format and policy: ~5 s on two cores
TIMEOUT_S = 10


@contextmanager
def deadline(seconds: int, what: str):
    def fail(signum, frame):
        raise TimeoutError(f"{what}: no result after {seconds} s (a hang)")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def mutate(data: bytes, rng: np.random.Generator, header: int) -> bytes:
    """One of: truncate, flip a few bits, overwrite header bytes, or zero a header span."""
    buf = bytearray(data)
    kind = rng.integers(4)
    if kind == 0:
        return bytes(buf[: int(rng.integers(0, len(buf)))])
    if kind == 1:
        for pos in rng.integers(0, len(buf), size=int(rng.integers(1, 9))):
            buf[pos] ^= 1 << int(rng.integers(8))
    elif kind == 2:
        for pos in rng.integers(0, min(header, len(buf)), size=int(rng.integers(1, 5))):
            buf[pos] = int(rng.choice([0, 0xFF, 0x7F, 0x80, int(rng.integers(256))]))
    else:
        start = int(rng.integers(0, min(header, len(buf))))
        buf[start:start + int(rng.integers(1, 16))] = bytes(min(15, len(buf) - start))[: len(buf[start:start + 15])]
    return bytes(buf)


def read_all(path: Path, on_error: str, log: Path) -> None:
    ds = build_dataset(str(path), split=None, on_error=on_error, skip_log_dir=str(log), dedup=False)
    for i in range(min(len(ds), 8)):
        ds[i]


def run_case(path: Path, on_error: str, log: Path) -> str:
    try:
        with deadline(TIMEOUT_S, str(path)):
            read_all(path, on_error, log)
    except DataError as e:
        assert path.name in str(e), f"DataError that does not name {path.name}: {e}"
        return "error"
    return "read"


@pytest.fixture(scope="module")
def seeds(data_root: Path, tmp_path_factory) -> dict[str, tuple[str, bytes, int]]:
    """Format -> (file name, real bytes, header length to edit)."""
    from PIL import Image

    out: dict[str, tuple[str, bytes, int]] = {}
    mednist = data_root / "mednist" / "MedNIST.tar.gz"
    if mednist.is_file():
        members = []
        with tarfile.open(mednist) as tar:  # the first few members only: streaming, no full decompress
            for m in tar:
                if m.isfile() and m.name.endswith(".jpeg"):
                    members.append((m.name, tar.extractfile(m).read()))
                if len(members) >= 4:
                    break
        out["jpeg"] = ("x.jpeg", members[0][1], 200)
        buf = io.BytesIO()
        Image.open(io.BytesIO(members[1][1])).save(buf, format="PNG")
        out["png"] = ("x.png", buf.getvalue(), 64)
        for suffix, mode in ((".tar", "w"), (".tar.gz", "w:gz")):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode=mode) as tar:
                for name, data in members:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
            out[suffix] = (f"x{suffix}", buf.getvalue(), 1024)
    dicoms = sorted((data_root / "totalseg-example" / "example_ct_dicom").glob("CT.*"))
    if dicoms:
        out["dicom"] = ("x.dcm", dicoms[0].read_bytes(), 1500)
    seg = data_root / "totalseg-example" / "example_seg_mr.nii.gz"
    if seg.is_file():
        import gzip

        out["nii.gz"] = ("x.nii.gz", seg.read_bytes(), 64)
        out["nii"] = ("x.nii", gzip.decompress(seg.read_bytes()), 352)
    pneumonia = data_root / "pneumoniamnist-unofficial" / "pneumoniamnist.npz"
    if pneumonia.is_file():
        with np.load(pneumonia) as npz:
            small = {k: npz[k][:6] for k in ("train_images", "train_labels", "test_images", "test_labels")}
        buf = io.BytesIO()
        np.savez(buf, **small)
        out["npz"] = ("x.npz", buf.getvalue(), 400)
    return out


@pytest.mark.parametrize("fmt", ["png", "jpeg", "dicom", "nii", "nii.gz", "npz", ".tar", ".tar.gz"])
def test_mutated_real_files_give_a_named_data_error_or_a_counted_skip(fmt, seeds, tmp_path):
    if fmt not in seeds:
        pytest.skip(f"no real {fmt} file in the shared data")
    name, data, header = seeds[fmt]
    rng = np.random.default_rng(sum(map(ord, fmt)))  # not hash(): stable across interpreter runs
    outcomes = []
    for case in range(CASES):
        folder = tmp_path / f"case{case}"
        folder.mkdir()
        path = folder / name
        path.write_bytes(mutate(data, rng, header))
        for on_error in ("raise", "skip"):
            try:
                outcomes.append(run_case(path, on_error, folder / f"skips-{on_error}"))
            except DataError:
                raise
            except Exception as e:  # what the fuzzer is for: report the case so it can be replayed
                raise AssertionError(f"{fmt} case {case} ({on_error}): {type(e).__name__}: {e}") from e
    print(fmt, {o: outcomes.count(o) for o in set(outcomes)})
    assert "error" in outcomes  # the mutations did damage something: the fuzzer is not a no-op
