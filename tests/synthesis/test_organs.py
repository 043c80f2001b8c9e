from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from organfm.data.sample import IMAGE, INDEX, ORGAN
from organfm.synthesis import LABEL_MAP, SyntheticOrgans


def _stack(ds: SyntheticOrgans, indices) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    items = [ds[i] for i in indices]
    images = torch.stack([it[IMAGE] for it in items])
    organs = torch.tensor([it[ORGAN] for it in items])
    maps = torch.stack([it[LABEL_MAP] for it in items]) if ds.return_labels else torch.empty(0)
    return images, organs, maps


def _label_agreement(maps: torch.Tensor, organs: torch.Tensor) -> tuple[float, float]:
    """Mean voxel-wise label agreement between pairs of the same / of different organs."""
    flat = maps.flatten(1)
    agree = (flat[:, None, :] == flat[None, :, :]).float().mean(-1)
    same = organs[:, None] == organs[None, :]
    off_diagonal = ~torch.eye(len(organs), dtype=torch.bool)
    return agree[same & off_diagonal].mean().item(), agree[~same].mean().item()


# ---------------------------------------------------------------- the sample contract


@pytest.mark.parametrize("dim,size", [(2, 32), (3, 16)])
def test_items_follow_the_sample_contract(dim, size):
    ds = SyntheticOrgans(num_organs=3, images_per_organ=4, size=size, dim=dim)
    assert len(ds) == 12
    for i in (0, 5, 11):
        item = ds[i]
        assert set(item) == {IMAGE, ORGAN, INDEX}
        image = item[IMAGE]
        assert image.shape == (1,) + (size,) * dim and image.dtype == torch.float32
        assert torch.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
        assert item[ORGAN] == i % 3 and type(item[ORGAN]) is int
        assert item[INDEX] == i
    assert torch.equal(ds[-1][IMAGE], ds[11][IMAGE])
    with pytest.raises(IndexError):
        ds[12]


def test_label_maps_on_request():
    ds = SyntheticOrgans(num_organs=2, images_per_organ=2, size=32, num_labels=5, return_labels=True)
    item = ds[1]
    labels = item[LABEL_MAP]
    assert labels.shape == (1, 32, 32) and labels.dtype == torch.int64
    assert 0 <= labels.min() and labels.max() < 5
    # The image is painted from this map: every label region has a distinct mean intensity.
    means = [item[IMAGE][labels == k].mean().item() for k in labels.unique().tolist()]
    assert len({round(m, 3) for m in means}) == len(means)


def test_names_labels_and_summary():
    ds = SyntheticOrgans(num_organs=3, images_per_organ=5, size=16, seed=4)
    assert ds.organs == ["organ_00", "organ_01", "organ_02"]
    assert ds.labels == ds.organ_ids == [i % 3 for i in range(15)]
    summary = ds.summary()
    assert summary["n_items"] == 15 and summary["organs"] == {"organ_00": 5, "organ_01": 5, "organ_02": 5}
    assert summary["image_shape"] == (1, 16, 16) and summary["seed"] == 4
    assert ds.num_labels == 2 and SyntheticOrgans(size=128).num_labels == 4  # RaSD's S//32 in 2D
    assert SyntheticOrgans(size=64, dim=3).num_labels == 4  # S//16 in 3D


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="dim"):
        SyntheticOrgans(dim=4)
    with pytest.raises(ValueError, match="num_labels"):
        SyntheticOrgans(num_labels=1)
    with pytest.raises(TypeError):
        SyntheticOrgans(8)  # keyword-only


# ---------------------------------------------------------------- determinism


def test_items_are_pure_functions_of_seed_and_index():
    ds = SyntheticOrgans(num_organs=4, images_per_organ=4, size=32, seed=1)
    torch.manual_seed(0)
    first = [ds[i][IMAGE] for i in range(8)]
    # A fresh instance, the global RNG moved on, and the reverse order (templates cached
    # in a different order) all give the same tensors.
    torch.manual_seed(999)
    torch.rand(10)
    again = SyntheticOrgans(num_organs=4, images_per_organ=4, size=32, seed=1)
    second = [again[i][IMAGE] for i in reversed(range(8))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    other = SyntheticOrgans(num_organs=4, images_per_organ=4, size=32, seed=2)
    assert not torch.equal(first[0], other[0][IMAGE])
    assert not torch.equal(first[0], first[4])  # same organ, another image


def test_does_not_touch_the_global_rng():
    state = torch.get_rng_state()
    SyntheticOrgans(num_organs=2, images_per_organ=2, size=32)[3]
    assert torch.equal(torch.get_rng_state(), state)


def test_pickles_without_its_cache_and_loads_identically():
    ds = SyntheticOrgans(num_organs=2, images_per_organ=3, size=32, dim=2, seed=5)
    expected = ds[4][IMAGE]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._templates == {}
    assert torch.equal(clone[4][IMAGE], expected)


def test_dataloader_workers_reproduce_the_main_process():
    ds = SyntheticOrgans(num_organs=3, images_per_organ=4, size=32, seed=7)
    direct = torch.stack([ds[i][IMAGE] for i in range(len(ds))])
    loader = DataLoader(ds, batch_size=3, num_workers=2)
    loaded = torch.cat([batch[IMAGE] for batch in loader])
    assert torch.equal(loaded, direct)


# ---------------------------------------------------------------- consistency and diversity


def test_same_organ_images_share_anatomy():
    ds = SyntheticOrgans(num_organs=4, images_per_organ=6, size=48, num_labels=4, seed=11, return_labels=True)
    _, organs, maps = _stack(ds, range(len(ds)))
    same, different = _label_agreement(maps, organs)
    assert same > 0.7  # warped copies of one template
    assert same - different > 0.35  # other templates agree only by chance (about 1/K)


def test_organs_own_their_tissue_intensities_unless_jitter_is_none():
    def label_means(ds: SyntheticOrgans, index: int) -> torch.Tensor:
        item = ds[index]
        # Averaging over a tissue cancels the noise; min-max and gamma keep the intensity order.
        return torch.stack([item[IMAGE][item[LABEL_MAP] == k].mean() for k in range(ds.num_labels)])

    def spread(intensity_jitter: float | None) -> float:
        ds = SyntheticOrgans(
            num_organs=2, images_per_organ=8, size=64, num_labels=2, seed=3,
            intensity_jitter=intensity_jitter, return_labels=True,
        )
        # Sign of the contrast between the two tissues of organ 0, image by image.
        signs = [torch.sign(torch.diff(label_means(ds, i))).item() for i in range(0, 16, 2)]
        return abs(sum(signs)) / len(signs)

    assert spread(0.1) == 1.0  # one organ, one contrast: always the same tissue brighter
    assert spread(None) < 1.0  # RaSD appearance: the contrast flips between images


def test_same_organ_volumes_share_anatomy_in_3d():
    ds = SyntheticOrgans(num_organs=3, images_per_organ=3, size=20, dim=3, num_labels=3, seed=2, return_labels=True)
    images, organs, maps = _stack(ds, range(len(ds)))
    assert images.shape == (9, 1, 20, 20, 20)
    same, different = _label_agreement(maps, organs)
    assert same > 0.7 and same - different > 0.3


def test_per_image_warp_strength_is_controlled_by_warp_std():
    def agreement(warp_std: float) -> float:
        ds = SyntheticOrgans(num_organs=2, images_per_organ=5, size=48, num_labels=4, warp_std=warp_std, return_labels=True)
        _, organs, maps = _stack(ds, range(len(ds)))
        return _label_agreement(maps, organs)[0]

    assert agreement(0.0) == 1.0  # no warp: every image shows the template exactly
    assert agreement(1.0) > agreement(6.0)


def test_nearest_centroid_on_downsampled_images_recognises_organs():
    num_organs = 8
    ds = SyntheticOrgans(num_organs=num_organs, images_per_organ=24, size=64, seed=0)
    images, organs, _ = _stack(ds, range(len(ds)))
    features = F.adaptive_avg_pool2d(images, 8).flatten(1)
    train = torch.arange(len(ds)) < len(ds) // 2  # interleaved organs: both halves balanced
    centroids = torch.stack([features[train & (organs == o)].mean(0) for o in range(num_organs)])
    predicted = torch.cdist(features[~train], centroids).argmin(1)
    accuracy = (predicted == organs[~train]).float().mean().item()
    assert accuracy > 0.5  # chance is 1/8
