"""``views.png``: every view of a few items of the first batch, discovered from any batch's structure."""
from __future__ import annotations

import io

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from organfm.config import load_config
from organfm.engine.pretrain import pretrain
from organfm.monitor.views import ViewsSnapshot, find_view_stacks, plot_views
from tests.engine.test_pretrain import TINY


def _size(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


def test_every_image_tensor_is_found_and_nothing_else():
    batch = {"global": [torch.rand(8, 1, 32, 32)] * 2, "local": [torch.rand(8, 1, 16, 16)] * 3,
             "organ": torch.zeros(8, dtype=torch.long), "label_map": torch.zeros(8, 1, 32, 32, dtype=torch.long),
             "teacher": torch.rand(8, 64)}
    stacks = find_view_stacks(batch, 2, max_items=4)
    assert [s.name for s in stacks] == ["global[0]", "global[1]", "local[0]", "local[1]", "local[2]"]
    assert all(s.tensor.shape[0] == 4 and not s.is_set for s in stacks)
    # 3D: a volume (B, C, D, H, W) is one view; organ sets (B, O, C, *S) are sets with their availability
    volume = find_view_stacks({"image": torch.rand(2, 1, 8, 8, 8), "mask": torch.ones(2, 4, 4, 4)}, 3)
    assert [(s.name, s.is_set) for s in volume] == [("image", False)]
    sets = find_view_stacks({"images": torch.rand(3, 5, 1, 16, 16), "available": torch.ones(3, 5, dtype=torch.bool)}, 2)
    assert sets[0].is_set and sets[0].present is not None and sets[0].present.shape == (3, 5)


def test_the_grid_has_one_row_per_item_and_a_column_per_view():
    two_views = plot_views({"global": [torch.rand(8, 1, 32, 32)] * 2}, max_items=4)
    six_views = plot_views({"global": [torch.rand(8, 1, 32, 32)] * 2, "local": [torch.rand(8, 1, 16, 16)] * 4},
                           max_items=4)
    (w2, h2), (w6, h6) = _size(two_views), _size(six_views)
    assert w6 > 2 * w2 and abs(h6 - h2) < 10
    one_row = plot_views({"global": [torch.rand(8, 1, 32, 32)] * 2}, max_items=1)
    assert _size(one_row)[1] < h2 / 2
    # a 3D view is drawn as three mid-slices; an absent organ (NaN) is drawn as "missing", not as a crash
    volume = plot_views({"image": torch.rand(2, 1, 8, 8, 8)}, spatial_dims=3)
    assert _size(volume)[0] > 2 * _size(plot_views({"image": torch.rand(2, 1, 8, 8)}))[0]
    images = torch.rand(2, 3, 1, 16, 16)
    images[0, 2] = float("nan")
    assert plot_views({"images": images, "available": torch.tensor([[1, 1, 0], [1, 1, 1]]).bool()}) is not None
    assert plot_views({"organ": torch.zeros(4, dtype=torch.long)}) is None


def test_a_failure_to_draw_is_a_warning(tmp_path, capsys):
    def broken(tag, image, step):
        raise RuntimeError("no board")

    snap = ViewsSnapshot(tmp_path, log_image=broken)
    assert snap({"global": [torch.rand(2, 1, 8, 8)]}) is None
    assert "warning: could not draw views.png: RuntimeError: no board" in capsys.readouterr().err
    assert ViewsSnapshot(tmp_path / "x")({"image": "not a tensor"}) is None  # nothing to draw: no file
    assert not (tmp_path / "x" / "views.png").exists()


def _run(tmp_path, name, method, extra):
    over = TINY + (["method.out_dim=64", "method.hidden_dim=32", "method.bottleneck_dim=16"] if method == "coda"
                   else []) + ["trainer.max_steps=2", "trainer.monitor_every=0", *extra]
    return pretrain(load_config(method, None, over + [f"trainer.out_dir={tmp_path / name}"]))


def test_a_run_writes_views_png_and_tensorboard_and_the_switch_changes_no_weight(tmp_path):
    on = _run(tmp_path, "on", "coda", [])
    off = _run(tmp_path, "off", "coda", ["trainer.views_png=false"])
    png = on.run_dir / "views.png"
    width, height = Image.open(png).size
    assert width > 300 and height > 300  # 4 items x (2 global + 2 local views)
    assert not (off.run_dir / "views.png").exists()
    events = list((on.run_dir / "logs" / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and any(b"views" in e.read_bytes() for e in events)
    a, b = load_file(on.export), load_file(off.export)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_3d_run_writes_its_mid_slices(tmp_path):
    from organfm.methods import get_method

    s = pretrain(load_config("triad", None, ["trainer.batch_size=4", "trainer.num_workers=0", "trainer.progress=false",
                                             "trainer.max_steps=1", "trainer.monitor_every=0",
                                             *get_method("triad").smoke_overrides,
                                             f"trainer.out_dir={tmp_path / 'triad'}"]))
    width, height = Image.open(s.run_dir / "views.png").size
    assert width > 300 and height > 300  # 4 items x 3 planes
