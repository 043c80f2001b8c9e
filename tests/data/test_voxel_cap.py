"""The voxel cap: compressed bombs of every volume format are refused from their headers, in bounded memory.

Each bomb is a few kB to 1 MB on disk and expands to 1 GiB or more. The peak-memory tests read it in a
fresh process (a grandchild, so ``RUSAGE_CHILDREN`` of its parent is its own peak and nothing else's)
and assert the peak stays under ``2 x`` the cap's bytes (2^28 voxels at one byte: 512 MiB) and 2 GB.
Before the cap, the same files peaked at 2.9 GB (npz) and 14.2 GB (NIfTI).

The bombs are built fast: a block of zeros is deflated once and repeated (each block ends with a full
flush, so the blocks are independent and their concatenation is one valid deflate stream).
"""
from __future__ import annotations

import io
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from organfm.data import build_dataset
from organfm.data.errors import DataError
from organfm.data.nifti import NiftiReader
from organfm.data.readers import NpzReader
from organfm.data.volume_set import load_volumes
from organfm.data.voxel_cap import DEFAULT_MAX_VOLUME_VOXELS, check_voxels, load_npz_array, npz_headers

_BLOCK = 1 << 20
PEAK_BOUND_MB = 2000  # absolute peak of the reading process, imports (torch: ~650 MB) included
GROWTH_BOUND_MB = 128  # peak growth over the imports: well under 2 x the cap (512 MiB at one byte per voxel)


def _deflated_zeros(n_bytes: int, head: bytes = b"") -> bytes:
    """Raw deflate of ``head`` + ``n_bytes`` zeros, built from one deflated 1 MiB block repeated."""
    def block(data: bytes) -> bytes:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush(zlib.Z_FULL_FLUSH)

    zeros, rest = block(bytes(_BLOCK)), n_bytes % _BLOCK
    return block(head) + zeros * (n_bytes // _BLOCK) + (block(bytes(rest)) if rest else b"") + b"\x03\x00"


def _crc_zeros(n_bytes: int, crc: int = 0) -> int:
    zeros = bytes(_BLOCK)
    for _ in range(n_bytes // _BLOCK):
        crc = zlib.crc32(zeros, crc)
    return zlib.crc32(bytes(n_bytes % _BLOCK), crc)


def nifti_gz_bomb(path: Path, shape: tuple[int, ...] = (1024, 1024, 1024), trailing: int = 0) -> Path:
    """A .nii.gz whose header declares ``shape`` uint8, followed by that many zeros (+ ``trailing``)."""
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(np.uint8)
    hdr["vox_offset"] = 352
    head = hdr.binaryblock + b"\0" * 4
    n = int(np.prod(shape)) + trailing
    crc = _crc_zeros(n, zlib.crc32(head))
    path.write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + _deflated_zeros(n, head)
                     + struct.pack("<II", crc, (n + len(head)) & 0xFFFFFFFF))
    return path


def npz_bomb(path: Path, shape: tuple[int, ...] = (4096, 64, 64, 64), key: str = "train_images",
             compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """An npz whose one member declares ``shape`` uint8 zeros (bzip2 builds slowly: keep it small)."""
    from numpy.lib import format as npy

    head = io.BytesIO()
    npy.write_array_header_1_0(head, {"descr": "|u1", "fortran_order": False, "shape": shape})
    n = int(np.prod(shape))
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        if compression != zipfile.ZIP_DEFLATED:
            with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                member.write(head.getvalue())
                for _ in range(n // _BLOCK):
                    member.write(bytes(_BLOCK))
                member.write(bytes(n % _BLOCK))
            return path
        info = zipfile.ZipInfo(f"{key}.npy")
        info.compress_type = zipfile.ZIP_STORED  # the bytes are already deflated: declared below
        raw = _deflated_zeros(n, head.getvalue())
        info.CRC = _crc_zeros(n, zlib.crc32(head.getvalue()))
    # a hand-written member: zipfile cannot take precompressed bytes, so write the local header ourselves
    name = info.filename.encode()
    size = n + len(head.getvalue())
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0, info.CRC, len(raw), size, len(name), 0)
    central = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, info.CRC, len(raw), size,
                          len(name), 0, 0, 0, 0, 0, 0)
    body = local + name + raw
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(central) + len(name), len(body), 0)
    path.write_bytes(body + central + name + end)
    return path


def deflated_dicom_series(folder: Path, slices: int = 33, rows: int = 4096, cols: int = 2048) -> Path:
    """Deflated DICOM slices of ``rows x cols`` uint16 zeros (a few kB each, 16 MiB inflated)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series, frame = generate_uid(), generate_uid()
    n = rows * cols * 2
    for k in range(slices):
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", generate_uid()
        ds.Modality, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = "CT", series, frame
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, float(k)], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [1, 1], 1
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        body = pydicom.filebase.DicomBytesIO()
        body.is_little_endian, body.is_implicit_VR = True, False
        write_dataset(body, ds)
        head = body.getvalue() + b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<I", n)  # PixelData, then zeros
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
        meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        out = pydicom.filebase.DicomBytesIO()
        out.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(out, meta, enforce_standard=True)
        (folder / f"{k:03d}.dcm").write_bytes(out.getvalue() + _deflated_zeros(n, head))
    return folder


def _peak_mb(code: str, *args: str) -> tuple[int, str]:
    """Peak RSS (MB) of ``code`` run in a fresh grandchild; and its stderr+stdout.

    The peak is checked against both bounds here: the whole process's (``RUSAGE_CHILDREN`` in the runner,
    so interpreter start and exit included) against ``PEAK_BOUND_MB``, and the growth of the reading
    itself (``code`` prints ``BASE <MB>`` after its imports; its own peak is taken as it ends) against
    ``GROWTH_BOUND_MB``.
    """
    code += "\nimport resource\nprint('SELF', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
    runner = ("import resource, subprocess, sys\n"
              "out = subprocess.run([sys.executable, '-c', sys.argv[1], *sys.argv[2:]], capture_output=True, text=True)\n"
              "print(out.stdout + out.stderr)\n"
              "print('PEAK', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)\n")
    done = subprocess.run([sys.executable, "-c", runner, code, *args], capture_output=True, text=True, timeout=120,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    peak = int(done.stdout.split("PEAK")[-1])
    base = int(done.stdout.split("BASE")[-1].split()[0])
    grown = int(done.stdout.split("SELF")[-1].split()[0]) - base
    assert peak < PEAK_BOUND_MB and grown < GROWTH_BOUND_MB, f"peak {peak} MB, {grown} MB over the imports"
    return peak, done.stdout


# the readers import nibabel, pydicom and torch on first use: count them in the baseline, not the growth
_BASE = "import resource, nibabel, pydicom, pydicom.pixels, torch\nprint('BASE', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
_EXPECT_REFUSAL = ("import sys\nfrom organfm.data.errors import DataError\n{body}\n" + _BASE +
                   "try:\n    read()\nexcept DataError as e:\n    print('REFUSED', e)\nelse:\n    print('ACCEPTED')\n")


def test_check_voxels_names_the_file_the_value_and_the_key():
    assert check_voxels((512, 512, 600), where="ct.nii.gz") == 512 * 512 * 600
    with pytest.raises(DataError, match=r"ct\.nii\.gz: header declares 1024 x 1024 x 1024 = 1073741824 voxels, "
                                        r"over data\.max_volume_voxels=268435456.*raise data\.max_volume_voxels"):
        check_voxels((1024, 1024, 1024), where="ct.nii.gz")
    with pytest.raises(DataError, match="negative dimension"):
        check_voxels((4, -1, 4), where="x")


def test_a_nifti_gz_bomb_is_refused_in_bounded_memory(tmp_path):
    bomb = nifti_gz_bomb(tmp_path / "bomb.nii.gz")  # ~1 MB on disk, 1 GiB of voxels
    assert bomb.stat().st_size < 1_100_000
    code = _EXPECT_REFUSAL.format(body="from organfm.data.volume_set import load_volumes\n"
                                       "read = lambda: load_volumes(sys.argv[1], cube=16)")
    peak, out = _peak_mb(code, str(bomb))
    assert "REFUSED" in out and "data.max_volume_voxels" in out and "bomb.nii.gz" in out, out


def test_a_nifti_header_declaring_4_gib_fails_fast_without_allocating(tmp_path):
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_shape((2048, 2048, 1024))
    hdr.set_data_dtype(np.uint8)
    hdr["vox_offset"] = 352
    path = tmp_path / "header_only.nii"
    path.write_bytes(hdr.binaryblock + b"\0" * 8)  # 356 bytes
    code = _EXPECT_REFUSAL.format(body="from organfm.data.nifti import NiftiReader\n"
                                       "read = lambda: NiftiReader().read_volume(sys.argv[1])")
    peak, out = _peak_mb(code, str(path))
    assert "REFUSED" in out and "4294967296 voxels" in out, out
    # under the cap, a file shorter than its header's data is called truncated before anything is allocated
    hdr.set_data_shape((256, 256, 64))
    path.write_bytes(hdr.binaryblock + b"\0" * 8)
    with pytest.raises(DataError, match=r"header_only\.nii: truncated: the header declares 4194304 bytes of voxels "
                                        r"\(256 x 256 x 64\), the file holds 4"):
        NiftiReader().read_volume(str(path))


def test_a_nifti_member_inflates_only_what_its_header_declares(tmp_path):
    # a small header followed by 1 GiB of zeros, inside a tar.gz: the old reader inflated up to 4 GiB of it
    import tarfile

    bomb = nifti_gz_bomb(tmp_path / "vol.nii.gz", shape=(32, 32, 32), trailing=1 << 30)
    archive = tmp_path / "vols.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(bomb, arcname="liver/vol.nii.gz")
    code = ("import sys\nfrom organfm.data import build_dataset\n"
            + _BASE + "ds = build_dataset(sys.argv[1], split=None, dim=3)\nprint('SHAPE', tuple(ds[0]['image'].shape))\n")
    peak, out = _peak_mb(code, str(archive))
    assert "SHAPE (1, 32, 32, 32)" in out, out


def test_an_npz_bomb_is_refused_from_its_npy_header_in_bounded_memory(tmp_path):
    bomb = npz_bomb(tmp_path / "bomb.npz")  # 4096 x 64^3 uint8 = 1 GiB in ~1 MB
    assert bomb.stat().st_size < 1_100_000
    assert npz_headers(str(bomb), where="b")["train_images"][0] == (4096, 64, 64, 64)
    for body in ("from organfm.data.volume_set import load_volumes\n"
                 "read = lambda: load_volumes(sys.argv[1], cube=16)",
                 "from organfm.data import build_dataset\nread = lambda: build_dataset(sys.argv[1], split=None)"):
        peak, out = _peak_mb(_EXPECT_REFUSAL.format(body=body), str(bomb))
        assert "REFUSED" in out and "bomb.npz::train_images" in out and "data.max_array_voxels" in out, out
    

def test_npz_headers_are_read_without_inflating_bzip2_members(tmp_path):
    bomb = npz_bomb(tmp_path / "b.npz", shape=(64, 64, 64, 64), compression=zipfile.ZIP_BZIP2)
    assert bomb.stat().st_size < 4096
    assert npz_headers(str(bomb), where="b") == {"train_images": ((64, 64, 64, 64), np.dtype(np.uint8))}
    with pytest.raises(DataError, match=r"b\.npz::train_images: npy header declares 64 x 64 x 64 x 64 = 16777216 "
                                        r"voxels, over data\.max_array_voxels=1000000"):
        load_npz_array(str(bomb), "train_images", where=str(bomb), max_voxels=1_000_000)
    with pytest.raises(DataError, match=r"each row declares 64 x 64 x 64 = 262144 voxels, over data\.max_volume_voxels"):
        NpzReader(max_volume_voxels=100_000).load_array(str(bomb), "train_images")
    # labels are inflated whole too: a labels bomb beside small images is refused
    with pytest.raises(DataError, match=r"max_array_voxels"):
        load_volumes(str(bomb), cube=8, max_array_voxels=1_000_000)


def test_a_deflated_dicom_series_bomb_is_refused_from_its_slice_headers(tmp_path):
    folder = deflated_dicom_series(tmp_path / "series")  # 33 x 4096 x 2048 = 2.8e8 voxels > 2^28
    assert sum(p.stat().st_size for p in folder.iterdir()) < 2_000_000
    code = _EXPECT_REFUSAL.format(body="from organfm.data.volume_set import load_volumes\n"
                                       "read = lambda: load_volumes(sys.argv[1], cube=16)")
    peak, out = _peak_mb(code, str(folder))
    assert "REFUSED" in out and "33 x 4096 x 2048 = 276824064 voxels" in out and "series" in out, out


def test_a_deflated_dicom_file_is_inflated_against_the_cap_before_pydicom_holds_it(tmp_path):
    # pydicom inflates a deflated file whole in memory; check_deflated streams it first and stops at the cap
    folder = deflated_dicom_series(tmp_path / "one", slices=1, rows=2048, cols=2048)  # 8 MiB inflated
    path = str(next(folder.iterdir()))
    from organfm.data.dicom import DicomReader

    with pytest.raises(DataError, match=r"deflated DICOM data inflates to more than .* data\.max_volume_voxels"):
        DicomReader(max_volume_voxels=1 << 20).read(path)
    with pytest.raises(DataError, match=r"2048 x 2048 .* over data\.max_volume_voxels=4000000"):
        DicomReader(max_volume_voxels=4_000_000).read_header(path)
    assert DicomReader().read(path)[0].shape == (1, 2048, 2048)


def test_the_caps_are_config_keys_that_reach_every_reader(tmp_path):
    from organfm.config import load_config

    cfg = load_config("coda", None, ["data.max_volume_voxels=1000", "data.max_array_voxels=2000"])
    assert (cfg.data.max_volume_voxels, cfg.data.max_array_voxels) == (1000, 2000)
    with pytest.raises(ValueError, match="data.max_volume_voxels must be a positive number"):
        load_config("coda", None, ["data.max_volume_voxels=0"])
    vol = nifti_gz_bomb(tmp_path / "v.nii.gz", shape=(16, 16, 16))
    assert build_dataset(str(vol), split=None, dim=3)[0]["image"].shape == (1, 16, 16, 16)
    with pytest.raises(DataError, match=r"v\.nii\.gz: header declares 16 x 16 x 16 = 4096 voxels, over "
                                        r"data\.max_volume_voxels=4095"):
        build_dataset(str(vol), split=None, dim=3, max_volume_voxels=4095)
