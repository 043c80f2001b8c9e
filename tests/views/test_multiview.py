"""MultiViewDataset: an item's views are a function of (index, seed) only, run under a forked RNG."""
from __future__ import annotations

import torch

from organfm.views import GlobalLocalViews, MultiViewDataset


class _Images(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {"image": torch.rand(1, 48, 40, generator=g), "organ": torch.tensor(i % 2), "index": i}


def _draws(image: torch.Tensor) -> dict:
    """A recipe that only reads the global RNG: its views are the draws themselves."""
    return {"global": [torch.rand(3)], "local": [image[:, :2, :2].clone()]}


def test_views_are_a_function_of_the_item_seed_only():
    ds = MultiViewDataset(_Images(), GlobalLocalViews(global_size=32, local_size=16, num_local_views=2))
    a = ds[(1, 123)]
    torch.rand(100)  # unrelated draws from the global generator do not change the views
    b = ds[(1, 123)]
    c = ds[(1, 124)]
    for x, y in zip(a["global"] + a["local"], b["global"] + b["local"]):
        assert torch.equal(x, y)
    assert not torch.equal(a["global"][0], c["global"][0])
    assert a["organ"] == 1
    state = torch.get_rng_state()
    ds[(2, 5)]
    assert torch.equal(state, torch.get_rng_state())  # the caller's RNG is left untouched


def test_the_recipe_runs_under_torch_manual_seed_of_the_item_seed():
    ds = MultiViewDataset(_Images(), _draws)
    item = ds[(3, 42)]
    torch.manual_seed(42)
    assert torch.equal(item["global"][0], torch.rand(3))  # the known draw: seed 42's first three numbers
    # the index chooses the image, not the draw: another index with the same seed draws the same numbers
    assert torch.equal(ds[(0, 42)]["global"][0], item["global"][0])
    assert torch.equal(item["local"][0], _Images()[3]["image"][:, :2, :2])
    assert type(item["organ"]) is int and item["organ"] == 1  # a tensor organ id becomes a plain int
    assert len(ds) == 4
