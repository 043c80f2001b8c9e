"""``views.on_device=true`` through ``pretrain()``: Coda trains on device-made views and resumes bit-exactly."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from organfm.batches import SourceContext, create_batch_source
from organfm.config import load_config, new_config
from organfm.engine.pretrain import pretrain

SMALL = ["trainer.batch_size=4", "trainer.num_workers=0", "trainer.progress=false", "trainer.deterministic=true",
         "trainer.log_every=1", "views.num_local_views=2", "data.synthetic_images_per_organ=4",
         "data.synthetic_organs=3", "backbone.name=test_convnext", "views.global_size=32", "views.local_size=32",
         "data.synthetic_size=40", "method.out_dim=64", "method.hidden_dim=32", "method.bottleneck_dim=16",
         "views.on_device=true"]


def test_the_loader_yields_uint8_images_and_seeds_and_the_hook_makes_views():
    cfg = load_config("coda", None, SMALL)
    source = create_batch_source("views", SourceContext(data=cfg.data, views=cfg.views, batch_size=4))
    raw = next(iter(source.batches))
    assert raw["image"].dtype == torch.uint8 and raw["image"].shape == (4, 1, 40, 40)
    assert raw["seed"].dtype == torch.int64 and raw["seed"].shape == (4,) and len(set(raw["seed"].tolist())) == 4
    batch = source.on_device(raw)
    assert [tuple(v.shape) for v in batch["global"]] == [(4, 1, 32, 32)] * 2
    assert [tuple(v.shape) for v in batch["local"]] == [(4, 1, 32, 32)] * 2
    assert torch.equal(batch["organ"], raw["organ"])
    # the CPU path has no hook
    cpu = load_config("coda", None, SMALL + ["views.on_device=false"])
    assert create_batch_source("views", SourceContext(data=cpu.data, views=cpu.views, batch_size=4)).on_device is None


def test_resume_with_a_changed_start_batch_gives_the_uninterrupted_batches():
    cfg = load_config("coda", None, SMALL)
    whole = create_batch_source("views", SourceContext(data=cfg.data, views=cfg.views, batch_size=4))
    later = create_batch_source("views", SourceContext(data=cfg.data, views=cfg.views, batch_size=4, start_batch=2))
    it = iter(whole.batches)
    next(it), next(it)
    a, b = whole.on_device(next(it)), later.on_device(next(iter(later.batches)))
    assert all(torch.equal(x, y) for x, y in zip(a["global"] + a["local"], b["global"] + b["local"]))


@pytest.mark.slow
def test_coda_on_device_views_trains_and_resumes_exactly(tmp_path):
    full = pretrain(load_config("coda", None, SMALL + ["trainer.max_steps=3", f"trainer.out_dir={tmp_path / 'full'}"]))
    pretrain(load_config("coda", None, SMALL + ["trainer.max_steps=2", f"trainer.out_dir={tmp_path / 'part'}"]))
    resumed = pretrain(load_config(None, tmp_path / "part" / "config.yaml", ["trainer.max_steps=3"]),
                       resume_dir=tmp_path / "part")
    assert resumed.result.start_step == 2 and resumed.result.step == 3
    a, b = load_file(full.export), load_file(resumed.export)
    assert a.keys() == b.keys() and max((a[k] - b[k]).abs().max().item() for k in a) == 0.0
    # and the views really came from the device path: a CPU-path run from the same seed ends elsewhere
    cpu = pretrain(load_config("coda", None, SMALL + ["views.on_device=false", "trainer.max_steps=3",
                                                      f"trainer.out_dir={tmp_path / 'cpu'}"]))
    c = load_file(cpu.export)
    assert max((a[k] - c[k]).abs().max().item() for k in a) > 0
    assert new_config("coda").views.on_device is False  # the per-sample path stays the default
