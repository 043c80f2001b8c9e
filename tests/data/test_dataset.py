import os
import pickle
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from organfm.data import IMAGE, INDEX, ORGAN, UNKNOWN_ORGAN, DataError, build_dataset, read_skip_log


@pytest.fixture
def organ_folder(tmp_path, make_png, gradient):
    """root/<organ>/**: 3 liver (one in a subfolder), 2 lung, 1 RGB heart, plus non-image files."""
    root = tmp_path / "root"
    for k in range(3):
        make_png(root / "liver" / ("deep" if k == 2 else "") / f"{k}.png", gradient(16, 16, offset=k))
    for k in range(2):
        make_png(root / "lung" / f"{k}.png", gradient(16, 16, scale=3, offset=k))
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    rgb[..., 0] = np.arange(16)[None] * 10
    make_png(root / "heart" / "rgb.png", rgb)
    (root / "liver" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    make_png(root / ".hidden" / "x.png", gradient())
    return root


def test_items_follow_the_sample_contract(organ_folder):
    ds = build_dataset(str(organ_folder), split=None)
    assert ds.organs == ["heart", "liver", "lung"] and len(ds) == 6
    for i in range(len(ds)):
        item = ds[i]
        assert set(item) == {IMAGE, ORGAN, INDEX} and item[INDEX] == i
        image = item[IMAGE]
        assert image.dtype == torch.float32 and image.shape == (1, 16, 16)
        assert float(image.min()) == 0.0 and float(image.max()) == 1.0
        assert ds.organs[item[ORGAN]] == ds.records[i].organ
    assert [r.key for r in ds.records if r.organ == "liver"] == ["liver/0.png", "liver/1.png", "liver/deep/2.png"]


def test_organ_ids_are_the_same_in_every_split(organ_folder):
    splits = [build_dataset(str(organ_folder), split=s, split_fractions=(0.4, 0.3, 0.3))
              for s in ("train", "val", "test")]
    assert all(ds.organs == ["heart", "liver", "lung"] for ds in splits)
    assert sum(len(ds) for ds in splits) == 6


def test_rgb_becomes_luminance_unless_three_channels(organ_folder):
    gray = build_dataset(str(organ_folder), split=None, organs=["heart"], intensity="dtype")
    red = np.arange(16)[None].repeat(16, 0) * 10
    np.testing.assert_allclose(gray[0][IMAGE][0].numpy(), 0.299 * red / 255, atol=1e-6)
    colour = build_dataset(str(organ_folder), split=None, organs=["heart"], channels=3, intensity="dtype")
    image = colour[0][IMAGE]
    assert image.shape == (3, 16, 16) and float(image[1].max()) == 0.0
    assert float(image[0].max()) == pytest.approx(150 / 255)
    assert build_dataset(str(organ_folder), split=None, organs=["lung"], channels=3)[0][IMAGE].shape == (3, 16, 16)


def test_image_size_resizes_with_antialias(organ_folder):
    ds = build_dataset(str(organ_folder), split=None, image_size=8)
    image = ds[0][IMAGE]
    assert image.shape == (1, 8, 8) and 0 <= float(image.min()) and float(image.max()) <= 1
    assert build_dataset(str(organ_folder), split=None)[0][IMAGE].shape == (1, 16, 16)  # None keeps native size


def test_unknown_organ_is_minus_one(tmp_path, make_png, gradient):
    make_png(tmp_path / "top.png", gradient())
    ds = build_dataset(str(tmp_path), split=None)
    assert ds.organs == [] and ds[0][ORGAN] == UNKNOWN_ORGAN


def test_empty_and_unsupported_files(tmp_path, organ_folder):
    (organ_folder / "lung" / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.png: empty file"):
        build_dataset(str(organ_folder))
    ds = build_dataset(str(organ_folder), split=None, on_error="skip")
    assert len(ds) == 6 and ds.summary()["skipped_at_index"] == 1
    other = tmp_path / "x.gif"
    other.write_bytes(b"GIF89a")
    with pytest.raises(DataError, match=r"x\.gif: unsupported file type"):
        build_dataset(str(other))
    with pytest.raises(DataError, match="source does not exist"):
        build_dataset(str(tmp_path / "nowhere"))


def test_wrong_shape_npz_is_a_data_error(tmp_path):
    np.savez(tmp_path / "bad.npz", train_images=np.zeros((5,), dtype=np.uint8))
    with pytest.raises(DataError, match=r"bad\.npz::train_images: image array of shape \(5,\)"):
        build_dataset(str(tmp_path / "bad.npz"))


def truncated_dataset(organ_folder, **kwargs):
    bad = organ_folder / "liver" / "1.png"
    bad.write_bytes(bad.read_bytes()[:50])  # the signature survives: only a full decode notices
    return build_dataset(str(organ_folder), split=None, **kwargs), "liver/1.png"


def test_raise_policy_names_the_file(organ_folder):
    ds, bad_key = truncated_dataset(organ_folder)
    bad = [r.key for r in ds.records].index(bad_key)
    with pytest.raises(DataError, match=r"liver/1\.png: cannot decode image") as info:
        ds[bad]
    assert isinstance(info.value, ValueError)


def test_skip_policy_substitutes_a_seeded_random_item_and_counts(organ_folder, tmp_path):
    log_dir = tmp_path / "skips"
    ds, bad_key = truncated_dataset(organ_folder, on_error="skip", skip_log_dir=str(log_dir))
    bad = [r.key for r in ds.records].index(bad_key)
    item = ds[bad]
    assert item[INDEX] != bad and torch.equal(item[IMAGE], ds[item[INDEX]][IMAGE])
    assert ds[bad][INDEX] == item[INDEX]  # the same request draws the same substitute
    assert ds.num_skipped == 2 and ds.summary()["skipped"] == 2
    skips = read_skip_log(log_dir)
    assert len(skips) == 2 and skips[0][0].endswith("liver/1.png") and "cannot decode" in skips[0][1]


def test_skips_are_counted_across_worker_processes(organ_folder, tmp_path):
    log_dir = tmp_path / "skips"
    ds, bad_key = truncated_dataset(organ_folder, on_error="skip", skip_log_dir=str(log_dir))
    loader = DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context="fork")
    batches = list(loader)
    assert sum(len(b[INDEX]) for b in batches) == len(ds)
    assert ds.num_skipped == 0  # the workers skipped, not this process...
    skips = read_skip_log(log_dir)
    assert len(skips) == 1 and skips[0][0].endswith(bad_key)  # ...and the log saw it
    assert {p.name for p in log_dir.iterdir()} != {f"skips-{os.getpid()}.tsv"}
    assert ds.summary()["skipped_logged"] == 1


def test_dataset_pickles_for_spawned_workers(tmp_path, make_png, gradient):
    import tarfile

    for k in range(6):
        make_png(tmp_path / "src" / "Top" / ("liver" if k % 2 else "lung") / f"{k}.png", gradient(offset=k))
    with tarfile.open(tmp_path / "d.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "Top", arcname="Top")
    ds = build_dataset(str(tmp_path / "d.tar.gz"), split=None)
    clone = pickle.loads(pickle.dumps(ds))
    assert all(torch.equal(clone[i][IMAGE], ds[i][IMAGE]) for i in range(len(ds)))
    loader = DataLoader(ds, batch_size=3, num_workers=1, multiprocessing_context="spawn")
    images = torch.cat([b[IMAGE] for b in loader])
    assert torch.equal(images, torch.stack([ds[i][IMAGE] for i in range(len(ds))]))


def test_summary_contents(organ_folder):
    summary = build_dataset(str(organ_folder), split=None).summary()
    assert summary["n_items"] == 6 and summary["organs"] == {"heart": 1, "liver": 3, "lung": 2}
    assert summary["kind"] == "folder" and summary["duplicates_removed"] == 0
    assert sum(summary["splits"].values()) == 6 and summary["skipped"] == 0


@pytest.fixture(scope="module")
def mednist(mednist_archive):
    return build_dataset(str(mednist_archive), split=None)


def test_mednist_exact_duplicates_and_class_counts(mednist):
    summary = mednist.summary()
    assert summary["duplicates_removed"] == 440
    assert summary["duplicates_per_organ"] == {"AbdomenCT": 346, "CXR": 1, "HeadCT": 93}
    assert summary["organs"] == {"AbdomenCT": 9654, "BreastMRI": 8954, "CXR": 9999, "ChestCT": 10000,
                                 "Hand": 10000, "HeadCT": 9907}
    # build_seconds is reported, not asserted: speed is the benchmarks' business, a loaded machine is no defect
    assert summary["build_seconds"] > 0
    assert len({r.content_hash for r in mednist.records}) == len(mednist)


def test_mednist_items_and_splits(mednist):
    item = mednist[12345]
    assert item[IMAGE].shape == (1, 64, 64) and mednist.organs[item[ORGAN]] == mednist.records[12345].organ
    sizes = Counter(r.split for r in mednist.records)
    assert 0.77 < sizes["train"] / len(mednist) < 0.83 and sizes["val"] > 5000 and sizes["test"] > 5000


def test_real_npz_2d_and_3d(data_root):
    pneumonia = data_root / "pneumoniamnist-unofficial" / "pneumoniamnist.npz"
    adrenal = data_root / "medmnist" / "adrenalmnist3d.npz"
    if not pneumonia.is_file() or not adrenal.is_file():
        pytest.skip("MedMNIST npz files not found")
    ds = build_dataset(str(pneumonia), split="val", dedup=False)
    assert len(ds) == 524 and ds.organs == ["pneumoniamnist"] and Counter(ds.labels) == {0: 135, 1: 389}
    assert ds[0][IMAGE].shape == (1, 28, 28)
    volumes = build_dataset(str(adrenal), split="test", dim=3, dedup=False)
    assert len(volumes) == 298 and volumes[0][IMAGE].shape == (1, 28, 28, 28)
    assert Counter(volumes.labels) == {0: 229, 1: 69}
    slices = build_dataset(str(adrenal), split="val", dim=2, dedup=False)
    assert len(slices) == 98 * 28 and slices[0][IMAGE].shape == (1, 28, 28)


def test_one_organ_only_warns_that_organ_aware_methods_have_no_negatives(tmp_path, make_png, gradient):
    for k in range(3):
        make_png(tmp_path / "root" / "liver" / f"{k}.png", gradient(offset=k))
    with pytest.warns(UserWarning, match=r"only one organ \('liver'\): Coda's inter-organ branch has no negatives"):
        build_dataset(str(tmp_path / "root"), split_fractions=(1, 0, 0))


def test_a_file_name_that_is_not_utf8_is_read_and_named_with_escapes(organ_folder, tmp_path, make_png, gradient):
    odd = os.path.join(os.fsencode(organ_folder), b"liver", b"caf\xe9\xff.png").decode("utf-8", "surrogateescape")
    make_png(type(organ_folder)(odd), gradient(offset=77))
    ds = build_dataset(str(organ_folder), split=None, on_error="skip", skip_log_dir=str(tmp_path / "skips"))
    k = [r.key for r in ds.records].index("liver/caf\\xe9\\xff.png")
    assert ds[k][INDEX] == k and ds.organs == ["heart", "liver", "lung"]
    ds.save_split(tmp_path / "run" / "splits.csv")
    assert "liver/caf\\xe9\\xff.png" in (tmp_path / "run" / "splits.csv").read_text(encoding="utf-8")
    # a broken one is a printable error naming it (or a counted skip), never a UnicodeEncodeError
    with open(odd, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + bytes(20))
    with pytest.raises(DataError, match=r"liver/caf\\xe9\\xff\.png: cannot decode image") as info:
        build_dataset(str(organ_folder), split=None)[k]
    str(info.value).encode("utf-8")
    ds = build_dataset(str(organ_folder), split=None, on_error="skip", skip_log_dir=str(tmp_path / "skips2"))
    assert ds[k][INDEX] != k
    assert read_skip_log(tmp_path / "skips2")[0][0].endswith("liver/caf\\xe9\\xff.png")


def test_bad_items_are_replaced_by_random_good_ones_seeded_per_epoch(tmp_path, make_png, gradient):
    root = tmp_path / "root"
    for k in range(40):
        make_png(root / ("a" if k % 2 else "b") / f"{k:02d}.png", gradient(offset=k))
    for k in range(10):  # a quarter of the files are cut off after their signature
        (root / "bad" / f"{k}.png").parent.mkdir(parents=True, exist_ok=True)
        (root / "bad" / f"{k}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes([k]) * 30)
    ds = build_dataset(str(root), split=None, on_error="skip")
    bad = [i for i, r in enumerate(ds.records) if r.organ == "bad"]
    substitutes = [ds[i][INDEX] for i in bad]
    assert not set(substitutes) & set(bad) and len(set(substitutes)) >= 7  # spread out, not all item 0
    # with the sampler's (index, sample_seed): other epochs draw others, the same key the same one in any process
    by_epoch = [ds[(bad[0], seed)][INDEX] for seed in range(20)]
    assert len(set(by_epoch)) >= 10
    fresh = pickle.loads(pickle.dumps(ds))  # a worker that has not seen any bad file yet
    assert [fresh[(bad[0], seed)][INDEX] for seed in range(20)] == by_epoch
