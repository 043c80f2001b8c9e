"""SyntheticBuffer, the online FIFO over the RaSDPairs stream: its window, refresh, resume and workers, 2D and 3D."""
from __future__ import annotations

import itertools

import pytest
import torch

from organfm.synthesis import LABEL_MAP, RaSDPairs, SyntheticBuffer


def take(buffer: SyntheticBuffer, n: int) -> list[dict]:
    return list(itertools.islice(iter(buffer), n))


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
