"""The ``synthetic_pairs`` source: its batches are RaSD's buffer over the stream ``organfm synth`` writes, its
counts by hand, its 3D geometry, and the settings it refuses."""
from __future__ import annotations

import itertools

import pytest
import torch

from organfm.batches import SourceContext, create_batch_source
from organfm.config import DataConfig, ViewsConfig
from organfm.synthesis import RaSDPairs, SyntheticBuffer


def _ctx(rank: int = 0, start_batch: int = 0, num_labels=3, steps_per_epoch=5, **data) -> SourceContext:
    data = DataConfig(**{"synthetic_size": 16, "synthetic_refresh": 1, **data})
    return SourceContext(data=data, views=ViewsConfig(), batch_size=4, seed=7, rank=rank, start_batch=start_batch,
                         steps_per_epoch=steps_per_epoch, options={"num_labels": num_labels})


def test_batches_are_the_buffer_over_the_seeded_stream_and_ranks_draw_their_own():
    src = create_batch_source("synthetic_pairs", _ctx())
    got = list(itertools.islice(iter(src.batches), 3))
    direct = SyntheticBuffer(RaSDPairs((16, 16), num_labels=3, seed=7, stream="rasd"), batch_size=4, refresh=1)
    for step, batch in enumerate(got):
        expected = direct.batch(step)
        assert all(torch.equal(batch[k], expected[k]) for k in ("image", "label_map", "index"))
    # the FIFO: each step drops the oldest sample and appends one new one
    assert [b["index"].tolist() for b in got] == [[0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5]]
    assert int(got[0]["label_map"].min()) >= 0 and int(got[0]["label_map"].max()) < 3
    assert got[0]["image"].min() >= 0 and got[0]["image"].max() <= 1
    other = next(iter(create_batch_source("synthetic_pairs", _ctx(rank=1)).batches))
    assert not torch.equal(other["image"], got[0]["image"])


def test_counts_contract_and_geometry():
    src = create_batch_source("synthetic_pairs", _ctx())
    assert src.steps_per_epoch == 5
    assert src.num_items(3) == 4 + 2  # B, then one fresh sample for each step after the first
    assert src.contract["mean"] == [0.0] and src.contract["std"] == [1.0]  # fed without normalisation
    volumes = create_batch_source("synthetic_pairs", _ctx(synthetic_dim=3, synthetic_size=8))
    batch = next(iter(volumes.batches))
    assert batch["image"].shape == (4, 1, 8, 8, 8) and batch["label_map"].shape == (4, 1, 8, 8, 8)
    assert volumes.contract["input_size"] == [1, 8, 8, 8] and volumes.backbone_kwargs == {"spatial_dims": 3}
    assert volumes.input_sizes == {"data.synthetic_size": 8}


@pytest.mark.parametrize(("change", "message"), [
    ({"source": "some/folder"}, "synthetic image/label pairs only"),
    ({"synthetic_dim": 4}, "data.synthetic_dim must be 2 or 3, got 4"),
    ({"num_labels": 1}, "method.num_labels must be >= 2, got 1"),
    ({"steps_per_epoch": None}, "needs trainer.steps_per_epoch >= 1"),
])
def test_settings_it_refuses(change, message):
    with pytest.raises(ValueError, match=message):
        create_batch_source("synthetic_pairs", _ctx(**change))
