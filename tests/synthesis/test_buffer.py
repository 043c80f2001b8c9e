"""RaSDPairs (the indexed sample stream) and SyntheticBuffer (the online FIFO), 2D and 3D."""
from __future__ import annotations

import itertools

import pytest
import torch

from organfm.synthesis import LABEL_MAP, NonFiniteSampleError, RaSDPairs, SyntheticBuffer


def take(buffer: SyntheticBuffer, n: int) -> list[dict]:
    return list(itertools.islice(iter(buffer), n))


@pytest.mark.parametrize("shape", [(16, 16), (16, 16, 16)])
def test_pairs_are_pure_functions_of_seed_and_index(shape):
    pairs = RaSDPairs(shape, num_labels=3, seed=5)
    a, b = pairs[7], RaSDPairs(shape, num_labels=3, seed=5)[7]
    assert a["image"].shape == a[LABEL_MAP].shape == (1, *shape)
    assert a["image"].dtype == torch.float32 and a[LABEL_MAP].dtype == torch.int64
    assert 0 <= a["image"].min() and a["image"].max() <= 1 and a[LABEL_MAP].max() < 3
    assert torch.equal(a["image"], b["image"]) and torch.equal(a[LABEL_MAP], b[LABEL_MAP])
    torch.manual_seed(123)  # the global RNG plays no part
    assert torch.equal(RaSDPairs(shape, num_labels=3, seed=5)[7]["image"], a["image"])
    assert not torch.equal(pairs[8]["image"], a["image"])
    assert not torch.equal(RaSDPairs(shape, num_labels=3, seed=6)[7]["image"], a["image"])
    assert not torch.equal(RaSDPairs(shape, num_labels=3, seed=5, stream="other")[7]["image"], a["image"])


def test_default_num_labels_scale_with_size():
    assert RaSDPairs((64, 64)).num_labels == 2 and RaSDPairs((512, 512)).num_labels == 16
    assert RaSDPairs((128,) * 3).num_labels == 8
    with pytest.raises(ValueError, match="num_labels"):
        RaSDPairs((16, 16), num_labels=1)


class FlakyPairs(RaSDPairs):
    """Renders NaN on its first ``bad`` draws."""

    def __init__(self, *args, bad: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.bad, self.calls = bad, 0

    def render(self, label_map, generator):
        image = super().render(label_map, generator)
        self.calls += 1
        if self.calls <= self.bad:
            image[0, 0, 0] = float("nan")
        return image


def test_non_finite_samples_are_drawn_again_deterministically():
    flaky = FlakyPairs((16, 16), num_labels=3, seed=0, bad=1)
    item = flaky[4]
    assert torch.isfinite(item["image"]).all()
    clean = RaSDPairs((16, 16), num_labels=3, seed=0)[4]
    assert not torch.equal(item[LABEL_MAP], clean[LABEL_MAP])  # the second attempt, not the first
    assert torch.equal(FlakyPairs((16, 16), num_labels=3, seed=0, bad=1)[4]["image"], item["image"])
    with pytest.raises(NonFiniteSampleError, match="sample 4"):
        FlakyPairs((16, 16), num_labels=3, seed=0, bad=3, max_attempts=3)[4]


def test_refresh_is_a_tenth_of_the_batch_and_the_window_slides():
    pairs = RaSDPairs((16, 16), num_labels=3)
    assert SyntheticBuffer(pairs, batch_size=4).refresh == 1
    assert SyntheticBuffer(pairs, batch_size=25).refresh == 2
    buffer = SyntheticBuffer(pairs, batch_size=25)
    assert buffer.window(0) == range(0, 25) and buffer.window(3) == range(6, 31)
    assert buffer.num_samples(1) == 25 and buffer.num_samples(4) == 31
    with pytest.raises(ValueError, match="refresh"):
        SyntheticBuffer(pairs, batch_size=4, refresh=5)
    with pytest.raises(ValueError, match="batch_size"):
        SyntheticBuffer(pairs, batch_size=0)


def test_buffer_is_a_fifo_whose_batches_match_their_step():
    pairs = RaSDPairs((16, 16), num_labels=3, seed=1)
    buffer = SyntheticBuffer(pairs, batch_size=5, refresh=2)
    batches = take(buffer, 4)
    assert batches[0]["image"].shape == (5, 1, 16, 16) and batches[0][LABEL_MAP].shape == (5, 1, 16, 16)
    for step, batch in enumerate(batches):
        assert batch["index"].tolist() == list(buffer.window(step))
        assert torch.equal(batch["image"], buffer.batch(step)["image"])
    for old, new in zip(batches, batches[1:]):  # the oldest r leave, the rest move up by r
        assert torch.equal(new["image"][:3], old["image"][2:])
        assert torch.equal(new[LABEL_MAP][:3], old[LABEL_MAP][2:])


def test_resumed_buffer_continues_the_uninterrupted_stream():
    pairs = RaSDPairs((16, 16), num_labels=3, seed=2)
    full = take(SyntheticBuffer(pairs, batch_size=4), 6)
    resumed = take(SyntheticBuffer(pairs, batch_size=4, start_step=3), 3)
    for a, b in zip(full[3:], resumed):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a[LABEL_MAP], b[LABEL_MAP])


def test_worker_processes_do_not_change_the_batches():
    pairs = RaSDPairs((16, 16, 16), num_labels=2, seed=3)
    inline = take(SyntheticBuffer(pairs, batch_size=3), 3)
    workers = take(SyntheticBuffer(pairs, batch_size=3, num_workers=1), 3)
    assert inline[0]["image"].shape == (3, 1, 16, 16, 16)
    for a, b in zip(inline, workers):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["index"], b["index"])
