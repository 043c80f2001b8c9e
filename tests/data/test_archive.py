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


def test_pickle_leaves_the_decompressed_spool_behind(tmp_path, organ_files):
    path = write_tar(tmp_path / "p.tar.gz", organ_files)
    ds = build_dataset(str(path), split=None)
    archive = ds._archives[str(path)]
    assert archive._spool is not None  # indexing decompressed it in this process
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._archives[str(path)]._spool is None
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


class _Zeros(io.RawIOBase):
    """A stream of ``n`` zero bytes, so a large member is written without holding it in memory."""

    def __init__(self, n):
        self.n = n

    def readable(self):
        return True

    def readinto(self, b):
        k = min(len(b), self.n)
        b[:k] = bytes(k)
        self.n -= k
        return k


def write_bomb(path, files, member, size):
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo(member)
        info.size = size
        tar.addfile(info, io.BufferedReader(_Zeros(size)))
    return path


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_a_member_over_the_cap_is_refused_or_skipped_naming_archive_and_member(tmp_path, organ_files, suffix):
    organ_files["Top/Liver/huge.png"] = b"\x89PNG\r\n\x1a\n" + bytes(5000)
    path = write_tar(tmp_path / f"b{suffix}", organ_files)
    with pytest.raises(DataError, match=rf"b{suffix}::Top/Liver/huge\.png: member of 5008 bytes exceeds the cap"
                                         r" of 4096 bytes \(max_member_bytes\)"):
        build_dataset(str(path), split=None, max_member_bytes=4096)
    ds = build_dataset(str(path), split=None, max_member_bytes=4096, on_error="skip")
    assert len(ds) == 5 and ds.summary()["skipped_at_index"] == 1 and "Top/Liver/huge.png" not in ds._archives[str(path)].members
    assert len(build_dataset(str(path), split=None)) == 6  # under the default cap it is indexed (signature only)


def test_a_gzip_bomb_is_streamed_in_bounded_memory(tmp_path, organ_files):
    # 128 MiB of zeros in a ~130 kB archive: the old reader held the whole decompressed stream (+128 MiB)
    import subprocess
    import sys

    bomb = write_bomb(tmp_path / "bomb.tar.gz", organ_files, "Top/Liver/huge.png", 128 << 20)
    small = write_tar(tmp_path / "small.tar.gz", organ_files)
    script = (
        "import resource, sys\n"
        "from organfm.data import build_dataset\n"
        "build_dataset(sys.argv[2], split=None)\n"  # imports and first-use allocations, before measuring
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "ds = build_dataset(sys.argv[1], split=None, on_error='skip', max_member_bytes=1 << 20)\n"
        "assert len(ds) == 5 and ds.summary()['skipped_at_index'] == 1, ds.summary()\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n")
    out = subprocess.run([sys.executable, "-c", script, str(bomb), str(small)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) < 32  # MB of peak growth while indexing the bomb


@pytest.mark.parametrize("bad", ["../escape/x.png", "/abs/Liver/y.png", "Top/../../z.png"])
def test_members_with_unsafe_paths_are_refused_and_never_become_organs(tmp_path, organ_files, gradient, bad):
    organ_files[bad] = png_bytes(gradient(offset=99))
    path = write_tar(tmp_path / "u.tar.gz", organ_files)
    with pytest.raises(DataError, match=r"u\.tar\.gz::.*: unsafe member name \(absolute path or '\.\.'\): refused"):
        build_dataset(str(path), split=None)
    ds = build_dataset(str(path), split=None, on_error="skip")
    assert ds.organs == ["Liver", "Spleen"] and len(ds) == 5 and ds.summary()["skipped_at_index"] == 1


def test_non_utf8_member_names_are_read_with_escaped_keys(tmp_path, gradient):
    name = b"Top/Liver/caf\xe9.png".decode("utf-8", "surrogateescape")
    files = {name: png_bytes(gradient(offset=3)), "Top/Spleen/0.png": png_bytes(gradient(offset=4))}
    path = tmp_path / "n.tar"
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT, encoding="utf-8", errors="surrogateescape") as tar:
        for member, data in files.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    ds = build_dataset(str(path), split=None)
    assert [r.key for r in ds.records] == ["Top/Liver/caf\\xe9.png", "Top/Spleen/0.png"]
    assert ds[0]["image"].shape == (1, 16, 16)
    ds.save_split(tmp_path / "splits.csv")
    assert "caf\\xe9.png" in (tmp_path / "splits.csv").read_text(encoding="utf-8")
