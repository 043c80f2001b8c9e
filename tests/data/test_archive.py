import io
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from organfm.data import DataError, build_dataset
from organfm.data.archive import TarArchive


def png_bytes(pixels):
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def write_tar(path, files, fmt=tarfile.USTAR_FORMAT):
    mode = "w:gz" if str(path).endswith(".gz") else "w"
    with tarfile.open(path, mode, format=fmt) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def organ_files(gradient):
    files = {}
    for organ, n in (("Liver", 3), ("Spleen", 2)):
        for k in range(n):
            files[f"Top/set{k % 2}/{organ}/{k:03d}.png"] = png_bytes(gradient(8, 8, offset=10 * k + len(organ)))
    files["Top/.DS_Store"] = b"junk"
    files["Top/Liver/._000.png"] = b"AppleDouble junk"
    files["Top/README.txt"] = b"not an image"
    return files


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_archive_members_read_in_place(tmp_path, organ_files, suffix):
    path = write_tar(tmp_path / f"data{suffix}", organ_files)
    ds = build_dataset(str(path), split=None, intensity="none")
    assert len(ds) == 5 and ds.organs == ["Liver", "Spleen"]
    assert all(r.member.startswith("Top/") for r in ds.records)
    for i, record in enumerate(ds.records):
        expected = np.asarray(Image.open(io.BytesIO(organ_files[record.member])))
        np.testing.assert_array_equal(ds[i]["image"][0].numpy(), expected)
        assert record.organ == record.member.split("/")[-2]  # the member's parent folder


def test_member_organ_is_parent_folder(tmp_path, gradient):
    files = {"MedNIST/Hand/000001.jpeg": png_bytes(gradient(offset=1)),
             "MedNIST/CXR/000002.jpeg": png_bytes(gradient())}
    ds = build_dataset(str(write_tar(tmp_path / "m.tar.gz", files)), split=None)
    assert ds.organs == ["CXR", "Hand"] and [r.organ for r in ds.records] == ["CXR", "Hand"]


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_and_unicode_names_match_tarfile(tmp_path, fmt):
    files = {"a/" + "x" * 150 + ".png": b"1" * 700, "b/Lëber/ñame.png": b"2" * 5, "c/short.png": b""}
    path = write_tar(tmp_path / "long.tar", files, fmt=fmt)
    with tarfile.open(path) as tar:
        expected = {m.name: (m.offset_data, m.size) for m in tar if m.isfile()}
    archive = TarArchive(path)
    assert archive.members == expected
    assert archive.read("a/" + "x" * 150 + ".png") == b"1" * 700


def test_pickle_leaves_the_decompressed_buffer_behind(tmp_path, organ_files):
    path = write_tar(tmp_path / "p.tar.gz", organ_files)
    ds = build_dataset(str(path), split=None)
    archive = ds._archives[str(path)]
    assert archive._buffer is not None  # indexing decompressed it in this process
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._archives[str(path)]._buffer is None
    assert len(pickle.dumps(archive)) < 2000
    assert pickle.dumps(archive).count(organ_files["Top/set0/Liver/000.png"]) == 0
    np.testing.assert_array_equal(clone[3]["image"].numpy(), ds[3]["image"].numpy())  # rebuilt lazily


def test_truncated_archive_names_the_archive(tmp_path, organ_files):
    path = write_tar(tmp_path / "t.tar.gz", organ_files)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DataError, match=r"t\.tar\.gz: cannot decompress archive"):
        build_dataset(str(path))
    plain = write_tar(tmp_path / "t.tar", organ_files)
    plain.write_bytes(plain.read_bytes()[:1500])
    with pytest.raises(DataError, match=r"t\.tar: archive is truncated"):
        build_dataset(str(plain))


def test_not_a_tar_is_rejected(tmp_path):
    path = tmp_path / "fake.tar"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(DataError, match=r"fake\.tar: corrupt tar header"):
        TarArchive(path)


def test_corrupt_member_names_archive_and_member(tmp_path, organ_files):
    organ_files["Top/set0/Liver/000.png"] = organ_files["Top/set0/Liver/000.png"][:40]  # truncated PNG
    ds = build_dataset(str(write_tar(tmp_path / "c.tar", organ_files)), split=None)
    bad = [i for i, r in enumerate(ds.records) if r.member == "Top/set0/Liver/000.png"][0]
    with pytest.raises(DataError, match=r"c\.tar::Top/set0/Liver/000\.png: cannot decode"):
        ds[bad]
