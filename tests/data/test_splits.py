import os
from collections import Counter, defaultdict

import numpy as np
import pytest

from organfm.data import build_dataset


def write_manifest(tmp_path, make_png, gradient, num_patients=60, per_patient=3, start=0):
    lines = ["path,organ,patient_id"]
    for p in range(start, start + num_patients):
        for k in range(per_patient):
            name = f"img/p{p}_{k}.png"
            make_png(tmp_path / name, gradient(offset=p * per_patient + k))
            lines.append(f"{name},{'liver' if p % 2 else 'lung'},patient-{p}")
    path = tmp_path / "m.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def splits_by(ds, key):
    seen = defaultdict(set)
    for record in ds.records:
        seen[key(record)].add(record.split)
    return seen


def test_no_patient_in_two_splits(tmp_path, make_png, gradient):
    ds = build_dataset(str(write_manifest(tmp_path, make_png, gradient)), split=None)
    by_patient = splits_by(ds, lambda r: r.patient_id)
    assert len(by_patient) == 60 and all(len(s) == 1 for s in by_patient.values())
    sizes = Counter(s.pop() for s in by_patient.values())
    assert set(sizes) == {"train", "val", "test"} and sizes["train"] > sizes["val"] + sizes["test"]


def test_same_seed_same_split_other_seed_other_split(tmp_path, make_png, gradient):
    path = str(write_manifest(tmp_path, make_png, gradient))
    a = [r.split for r in build_dataset(path, split=None, split_seed=1).records]
    assert a == [r.split for r in build_dataset(path, split=None, split_seed=1).records]
    assert a != [r.split for r in build_dataset(path, split=None, split_seed=2).records]


def test_duplicates_never_cross_splits_even_when_kept(tmp_path, make_png, gradient):
    for k in range(40):  # each image twice, under two organs
        make_png(tmp_path / "liver" / f"{k}.png", gradient(offset=k))
        make_png(tmp_path / "spleen" / f"copy{k}.png", gradient(offset=k))
    ds = build_dataset(str(tmp_path), split=None, dedup=False)
    assert len(ds) == 80
    by_content = splits_by(ds, lambda r: r.content_hash)
    assert len(by_content) == 40 and all(len(s) == 1 for s in by_content.values())
    assert len({s for v in by_content.values() for s in v}) == 3


def test_duplicates_of_different_patients_share_a_split(tmp_path, make_png, gradient):
    # the same image filed under two patients (a re-upload, a mislabelled copy): content links them
    lines = ["path,patient_id"]
    for k in range(40):
        make_png(tmp_path / f"a{k}.png", gradient(offset=k))
        make_png(tmp_path / f"b{k}.png", gradient(offset=k))
        lines += [f"a{k}.png,first-{k}", f"b{k}.png,second-{k}"]
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    ds = build_dataset(str(tmp_path / "m.csv"), split=None, dedup=False)
    by_content = splits_by(ds, lambda r: r.content_hash)
    assert len(by_content) == 40 and all(len(s) == 1 for s in by_content.values())
    assert len({s for v in by_content.values() for s in v}) == 3


def test_given_split_pulls_the_rest_of_its_patient(tmp_path, make_png, gradient):
    for k in range(3):
        make_png(tmp_path / f"{k}.png", gradient(offset=k))
    (tmp_path / "m.csv").write_text("path,patient_id,split\n0.png,p,test\n1.png,p,\n2.png,p,\n")
    assert [r.split for r in build_dataset(str(tmp_path / "m.csv"), split=None).records] == ["test"] * 3


def test_split_file_round_trip_and_reuse(tmp_path, make_png, gradient):
    manifest = write_manifest(tmp_path, make_png, gradient, num_patients=30)
    split_file = tmp_path / "splits" / "split.csv"
    first = build_dataset(str(manifest), split=None, split_seed=0, split_file=str(split_file))
    assert split_file.is_file()  # written on first use
    text = split_file.read_text()
    assert text.splitlines()[0] == "key,group,split" and "patient-" not in text  # group keys are hashes
    # another seed would reshuffle, but the saved file fixes the assignment
    again = build_dataset(str(manifest), split=None, split_seed=123, split_file=str(split_file))
    assert [r.split for r in again.records] == [r.split for r in first.records]
    # new data: new patients are hashed, a new image of a known patient follows that patient
    old = {r.key: r.split for r in first.records}
    write_manifest(tmp_path, make_png, gradient, num_patients=40)
    grown = build_dataset(str(manifest), split=None, split_seed=123, split_file=str(split_file))
    assert all(r.split == old[r.key] for r in grown.records if r.key in old)
    saved = tmp_path / "saved.csv"
    grown.save_split(saved)
    assert len(saved.read_text().splitlines()) == 1 + 40 * 3


def test_npz_splits_are_respected_and_cross_split_duplicates_dropped(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 255, (10, 4, 4), dtype=np.uint8)
    test = rng.integers(0, 255, (5, 4, 4), dtype=np.uint8)
    test[0] = train[3]  # the same image in train and test
    np.savez(tmp_path / "organmnist.npz", train_images=train, train_labels=np.arange(10)[:, None],
             test_images=test, test_labels=np.arange(5)[:, None])
    ds = build_dataset(str(tmp_path / "organmnist.npz"), split=None)
    assert Counter(r.split for r in ds.records) == {"train": 10, "test": 4}
    assert ds.summary()["duplicates_removed"] == 1
    test_ds = build_dataset(str(tmp_path / "organmnist.npz"), split="test")
    assert test_ds.labels == [1, 2, 3, 4] and test_ds.organs == ["organmnist"]


def test_bad_options(tmp_path, make_png, gradient):
    make_png(tmp_path / "a" / "x.png", gradient())
    with pytest.raises(ValueError, match="split_fractions"):
        build_dataset(str(tmp_path), split_fractions=(0.5, 0.5))
    with pytest.raises(ValueError, match="split 'validation' not in"):
        build_dataset(str(tmp_path), split="validation")


def test_patient_pseudonyms_are_keyed_so_a_known_id_cannot_be_matched_without_the_key(tmp_path, make_png, gradient):
    import hashlib

    from organfm.data.records import content_hash
    from organfm.data.splits import key_path

    lines = ["path,organ,patient_id"]
    ids = [f"{12345670 + p:08d}" for p in range(20)]  # 8-digit ids: an unkeyed hash falls to a 10^8 search
    for p, pid in enumerate(ids):
        make_png(tmp_path / f"{p}.png", gradient(offset=p))
        lines.append(f"{p}.png,liver,{pid}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    split_file = tmp_path / "splits.csv"
    ds = build_dataset(str(tmp_path / "m.csv"), split=None, split_file=str(split_file))
    groups = {row.split(",")[1] for row in split_file.read_text().splitlines()[1:]}
    # the old pseudonym (and any plain hash of the id) is what an attacker would compute for each candidate id
    guesses = {"0p:" + content_hash(pid.encode()) for pid in ids} | {content_hash(pid.encode()) for pid in ids}
    guesses |= {"0p:" + hashlib.blake2b(pid.encode(), digest_size=16).hexdigest() for pid in ids}
    assert len(groups) == 20 and not groups & guesses
    key = bytes.fromhex(key_path(split_file).read_text())
    assert len(key) == 32 and oct(key_path(split_file).stat().st_mode & 0o777) == "0o600"
    with_key = {"0p:" + hashlib.blake2b(("0p:" + content_hash(pid.encode())).encode(), key=key,
                                        digest_size=16).hexdigest() for pid in ids}
    assert groups == with_key  # the key is what links them: keep it with the split file, out of exports
    # the draw does not depend on the key: a fresh key gives the same splits for the same seed
    other = build_dataset(str(tmp_path / "m.csv"), split=None)
    assert [r.split for r in other.records] == [r.split for r in ds.records]
    assert {r.group for r in other.records}.isdisjoint(groups)


def test_a_reused_split_file_places_a_new_image_of_a_known_patient_with_that_patient(tmp_path, make_png, gradient):
    lines = ["path,organ,patient_id"]
    for p in range(30):
        make_png(tmp_path / f"{p}.png", gradient(offset=p))
        lines.append(f"{p}.png,liver,{10000000 + p}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    split_file = tmp_path / "splits.csv"
    first = {r.patient_id: r.split for r in
             build_dataset(str(tmp_path / "m.csv"), split=None, split_seed=0, split_file=str(split_file)).records}
    lines = ["path,organ,patient_id"]
    for p in range(30):  # only new images of the same patients (the old ones gone), under another seed
        make_png(tmp_path / f"new{p}.png", gradient(offset=100 + p))
        lines.append(f"new{p}.png,liver,{10000000 + p}")
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    again = build_dataset(str(tmp_path / "m.csv"), split=None, split_seed=7, split_file=str(split_file))
    assert all(r.split == first[r.patient_id] for r in again.records)
    # without the key beside it, the saved groups cannot be matched: the new images follow the seed instead
    (tmp_path / "splits.csv.key").unlink()
    moved = build_dataset(str(tmp_path / "m.csv"), split=None, split_seed=7, split_file=str(split_file))
    assert any(r.split != first[r.patient_id] for r in moved.records)


def test_split_files_are_written_atomically(tmp_path, monkeypatch):
    from organfm.data.splits import save_split

    path = tmp_path / "splits.csv"
    save_split([("a.png", "g", "train")], path)

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        save_split([("a.png", "g", "test"), ("b.png", "h", "val")], path)
    assert path.read_text().splitlines() == ["key,group,split", "a.png,g,train"]  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["splits.csv"]  # no temporary left behind
