"""What the image-dataset sources (captioned, features) share: a dataset that fills a step, the CPU view recipe of
``views.*``, the exported backbone's input contract, and the resumable seeded batch source around a loader."""
from __future__ import annotations

import itertools

import pytest
import torch

from organfm.batches import SourceContext
from organfm.batches.images import image_batch_source, image_contract, image_views, load_images
from organfm.config import DataConfig, ViewsConfig

DATA = DataConfig(synthetic_organs=3, synthetic_images_per_organ=4, synthetic_size=32)  # 12 images
VIEWS = ViewsConfig(global_size=32, local_size=16, num_local_views=2, mean=0.4, std=0.2)


def _ctx(**kw) -> SourceContext:
    return SourceContext(data=DATA, views=VIEWS, **{"batch_size": 4, "seed": 1, **kw})


def test_a_dataset_that_cannot_fill_one_step_is_refused_naming_the_step():
    assert len(load_images(_ctx(world_size=3))) == 12  # 4 x 3 ranks: exactly one step
    with pytest.raises(ValueError, match="12 images cannot fill one step of batch 4 x 2 devices x 2 accumulation: "
                                         "lower trainer.batch_size or add images"):
        load_images(_ctx(world_size=2, accumulate=2))


def test_the_contract_is_the_global_view_size_and_normalisation():
    ctx = _ctx()
    dataset = load_images(ctx)
    contract = image_contract(ctx, dataset)
    assert contract["input_size"] == [1, 32, 32] and contract["mean"] == [0.4] and contract["std"] == [0.2]
    assert contract["organs"] == list(dataset.organs) and len(contract["organs"]) == 3
    assert contract["intensity"]["mode"] == DATA.intensity and contract["intensity"]["window"] == DATA.window


def test_the_views_follow_the_views_section():
    ctx = _ctx()
    item = image_views(ctx, load_images(ctx))[(5, 9)]
    assert [tuple(v.shape) for v in item["global"]] == [(1, 32, 32)] * 2
    assert [tuple(v.shape) for v in item["local"]] == [(1, 16, 16)] * 2 and item["organ"] == 5 % 3


class _Keys(torch.utils.data.Dataset):
    def __getitem__(self, key):
        index, seed = key
        return {"index": index, "seed": seed}


class _Split(list):
    """A dataset that writes its split file, as an image folder dataset does."""

    def save_split(self, path):
        path.write_text("saved")


def test_the_source_batches_every_item_once_per_epoch_and_records_its_facts(tmp_path):
    ctx = _ctx()
    dataset = _Split(range(12))
    src = image_batch_source(ctx, dataset, _Keys(), facts={"extra": 1}, method_kwargs={"num_organs": 3})
    assert src.steps_per_epoch == 3 and src.method_kwargs == {"num_organs": 3}
    epoch = list(itertools.islice(iter(src.batches), 3))
    assert sorted(torch.cat([b["index"] for b in epoch]).tolist()) == list(range(12))
    assert src.summary(0) == {"num_images": 12, "extra": 1} and src.num_items(0) == 12
    assert src.input_sizes == {"views.global_size": 32, "views.local_size": 16}
    src.write_run_files(tmp_path)
    assert (tmp_path / "splits.csv").read_text() == "saved"
    assert image_batch_source(_ctx(steps_per_epoch=7), dataset, _Keys(), facts={}, method_kwargs={}).steps_per_epoch == 7
    again = list(itertools.islice(iter(image_batch_source(ctx, dataset, _Keys(), facts={}, method_kwargs={}).batches), 3))
    assert all(torch.equal(a["seed"], b["seed"]) for a, b in zip(epoch, again))  # seeded: the same draw again
