"""The fixed monitor batch: the same items whatever the run seed, each with its own fixed item seed, the caller's RNG
untouched, and clean images scaled, resized and normalised as the contract says."""
from __future__ import annotations

import torch

from organfm.batches.monitor import MONITOR_SEED, clean_images, collate_items, monitor_indices


def test_indices_are_distinct_sorted_and_a_pure_function_of_the_seed():
    a = monitor_indices(100, 8)
    torch.manual_seed(1)  # the run's RNG plays no part
    assert monitor_indices(100, 8) == a and monitor_indices(100, 8, seed=MONITOR_SEED) == a
    assert a == sorted(set(a)) and len(a) == 8 and all(0 <= i < 100 for i in a)
    assert monitor_indices(100, 8, seed=1) != a
    assert monitor_indices(5, 8) == [0, 1, 2, 3, 4]  # a dataset smaller than the batch: all of it, once


class _Keys(torch.utils.data.Dataset):
    """Item ``(index, seed)`` -> its key and one draw from the global RNG (as an augmentation would)."""

    def __getitem__(self, key):
        index, seed = key
        return {"index": index, "seed": seed, "draw": torch.rand(())}


def test_each_item_is_asked_for_with_its_own_fixed_seed_and_the_callers_rng_is_left_alone():
    state = torch.get_rng_state()
    batch = collate_items(_Keys(), [3, 7], seed=100)
    assert batch["index"].tolist() == [3, 7] and batch["seed"].tolist() == [103, 107]
    assert torch.equal(torch.get_rng_state(), state)
    assert collate_items(_Keys(), [3, 7])["seed"].tolist() == [MONITOR_SEED + 3, MONITOR_SEED + 7]


class _Flat(torch.utils.data.Dataset):
    """Item i: a constant image of value ``values[i]`` (uint8 0..255 or float in [0, 1]), organ ``10 + i``."""

    def __init__(self, values, dtype, size: int = 8) -> None:
        self.values, self.dtype, self.size = values, dtype, size

    def __getitem__(self, i):
        return {"image": torch.full((1, self.size, self.size), self.values[i], dtype=self.dtype), "organ": 10 + i}


def test_clean_images_are_resized_and_normalised_by_the_contract():
    images, organs = clean_images(_Flat([51, 255, 0], torch.uint8), [2, 0], size=4, mean=0.5, std=0.25)
    assert images.shape == (2, 1, 4, 4) and images.dtype == torch.float32
    assert organs.tolist() == [12, 10] and organs.dtype == torch.int64
    # uint8 / 255, then (x - 0.5) / 0.25: 0 -> -2, 51 -> (0.2 - 0.5) / 0.25 = -1.2
    torch.testing.assert_close(images[:, 0, 0, 0], torch.tensor([-2.0, -1.2]))
    assert torch.equal(images, images[..., :1, :1].expand_as(images))  # a constant image stays constant
    same_size, _ = clean_images(_Flat([0.75], torch.float32, size=4), [0], size=4, mean=0.0, std=1.0)
    assert torch.equal(same_size, torch.full((1, 1, 4, 4), 0.75))  # already at size: not resampled
