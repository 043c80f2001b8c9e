"""The ``views`` source: its steps per epoch, an epoch covering every image once, its refusals, the monitor
batch, the device-view loader item, and the recipe kwargs it passes on."""
from __future__ import annotations

import itertools

import pytest
import torch

from organfm.batches import SourceContext, create_batch_source
from organfm.batches.views import SeededImages, build_image_dataset, view_sizes, views_kwargs
from organfm.config import DataConfig, ViewsConfig

DATA = DataConfig(synthetic_organs=3, synthetic_images_per_organ=4, synthetic_size=32)  # item i is organ i % 3
VIEWS = ViewsConfig(global_size=32, local_size=16, num_local_views=2)


def _source(data=DATA, views=VIEWS, **ctx):
    return create_batch_source("views", SourceContext(data=data, views=views, **{"batch_size": 4, "seed": 1, **ctx}))


def test_an_epoch_is_every_image_once_and_its_length_is_images_over_the_step():
    src = _source()
    assert src.steps_per_epoch == 12 // 4
    epoch = list(itertools.islice(iter(src.batches), 3))
    organs = torch.cat([b["organ"] for b in epoch])
    assert torch.bincount(organs).tolist() == [4, 4, 4]  # 12 images, 4 of each organ, each drawn once
    assert _source(accumulate=3).steps_per_epoch == 1  # 12 images // (4 x 3 accumulated micro-batches)
    assert _source(steps_per_epoch=7).steps_per_epoch == 7  # trainer.steps_per_epoch wins
    summary = src.summary(0)
    assert src.num_items(0) == 12 and summary["n_items"] == 12
    assert summary["organs"] == {"organ_00": 4, "organ_01": 4, "organ_02": 4}
    assert src.contract["organs"] == build_image_dataset(DATA).organs and len(src.contract["organs"]) == 3


def test_too_few_images_and_device_views_of_uncached_files_are_refused(tmp_path):
    with pytest.raises(ValueError, match="12 images cannot fill one step of batch 4 x 1 devices x 4 accumulation"):
        _source(accumulate=4)
    files = DataConfig(source=str(tmp_path))
    with pytest.raises(ValueError, match="views.on_device=true batches whole images of one size: cache"):
        _source(data=files, views=ViewsConfig(on_device=True))


def test_the_monitor_batch_holds_clean_images_at_the_contract_size_and_organ_labels():
    src = _source()
    batch = src.monitor(6)
    assert batch["monitor_input"].shape == (6, 1, 32, 32) and len(batch["global"]) == 2
    assert batch["monitor_label"].tolist() == batch["organ"].tolist()
    assert sorted(set(batch["monitor_label"].tolist())) == [0, 1, 2]
    # (x - mean) / std of images in [0, 1], mean = std = 0.5: the monitor input lies in [-1, 1]
    assert batch["monitor_input"].min() >= -1.0 - 1e-6 and batch["monitor_input"].max() <= 1.0 + 1e-6
    assert torch.equal(src.monitor(6)["monitor_input"], batch["monitor_input"])  # a fixed batch


def test_the_device_view_item_is_uint8_with_its_seed_and_refuses_a_volume():
    images = SeededImages(build_image_dataset(DATA))
    item = images[(5, 123)]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (1, 32, 32)
    assert item["organ"] == 5 % 3 and item["seed"] == 123
    volume = SeededImages([{"image": torch.zeros(1, 4, 4, 4), "organ": 0}])
    with pytest.raises(ValueError, match="makes 2D views; item 0 has shape"):
        volume[(0, 0)]


def test_recipe_kwargs_and_the_view_sizes_a_backbone_must_accept():
    kwargs = views_kwargs(ViewsConfig(on_device=True, global_scale=[0.3, 1.0]))
    assert "on_device" not in kwargs and kwargs["global_scale"] == (0.3, 1.0)
    assert all(isinstance(kwargs[k], tuple) for k in ("local_scale", "gamma", "blur_probs", "blur_sigma"))
    assert view_sizes(VIEWS) == {"views.global_size": 32, "views.local_size": 16}
    assert view_sizes(ViewsConfig(global_size=32, num_local_views=0)) == {"views.global_size": 32}
