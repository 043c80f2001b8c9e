"""organfm.load and Preprocess: an export's contract applied to arrays and files, 2D, 3D and organ sets."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import organfm
from organfm.contract import Preprocess

CONTRACT_2D = {"input_size": [1, 16, 16], "mean": [0.5], "std": [0.25], "interpolation": "bilinear",
               "intensity": {"mode": "minmax"}}


def test_preprocess_scales_resizes_and_normalises_an_array():
    pre = Preprocess(CONTRACT_2D)
    a = np.linspace(10, 20, 32 * 32, dtype=np.float32).reshape(32, 32)
    x = pre(a)
    assert x.shape == (1, 16, 16) and x.dtype == torch.float32
    # minmax to [0, 1], then (x - 0.5) / 0.25: the extremes map near -2 and +2
    assert x.min().item() == pytest.approx(-2.0, abs=0.1) and x.max().item() == pytest.approx(2.0, abs=0.1)
    same = pre(np.full((16, 16), 3.0))  # a constant image: zeros after minmax, never NaN
    assert torch.allclose(same, torch.full((1, 16, 16), -2.0))


def test_preprocess_reads_a_file_like_the_array(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 255, (16, 16), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    pre = Preprocess(CONTRACT_2D)
    assert torch.allclose(pre(tmp_path / "x.png"), pre(pixels.astype(np.float32)), atol=1e-5)
    with pytest.raises(FileNotFoundError):
        pre(tmp_path / "missing.png")


def test_preprocess_window_mode_and_3d():
    pre = Preprocess({"input_size": [1, 8, 8, 8], "mean": [0.0], "std": [1.0],
                      "intensity": {"mode": "window", "window": [0, 200]}})
    v = np.full((8, 8, 8), 50.0, dtype=np.float32)
    x = pre(v)
    assert x.shape == (1, 8, 8, 8) and torch.allclose(x, torch.full_like(x, 0.75))
    assert pre(np.zeros((1, 4, 4, 4))).shape == (1, 8, 8, 8)
    with pytest.raises(ValueError, match="3D image"):
        pre(np.zeros((4, 4)))


def test_preprocess_of_an_organ_set_marks_missing_organs_nan():
    pre = Preprocess(dict(CONTRACT_2D, organs=["heart", "liver", "lung"]), organ_set=True)
    x = pre({"liver": np.eye(16), "lung": None})
    assert x.shape == (3, 1, 16, 16)
    assert torch.isnan(x[0]).all() and torch.isnan(x[2]).all() and torch.isfinite(x[1]).all()
    with pytest.raises(ValueError, match="unknown organ"):
        pre({"brain": np.eye(16)})


def test_load_gives_a_model_and_preprocess_for_a_3d_export(tmp_path):
    from organfm.config import load_config
    from organfm.engine.pretrain import pretrain

    run = tmp_path / "triad"
    pretrain(load_config(None, "small/triad", ["method.cube=16", "trainer.max_steps=1", "trainer.batch_size=2",
                                               "data.synthetic_organs=2", "data.synthetic_images_per_organ=2", "method.text_weight=0",
                                               "trainer.progress=false", "trainer.monitor_every=0",
                                               f"trainer.out_dir={run}"]))
    model, pre = organfm.load(run)
    assert not model.training and pre.spatial_dims == 3
    x = pre(np.random.default_rng(0).random((20, 24, 28)).astype(np.float32))
    assert x.shape == (1, 16, 16, 16)
    with torch.no_grad():
        assert model(x[None]).dim() == 2


def test_import_organfm_stays_light():
    code = "import sys, organfm; assert 'torch' not in sys.modules, 'torch imported'; organfm.load; organfm.embed"
    subprocess.run([sys.executable, "-c", code.replace("; organfm.load; organfm.embed", "")], check=True)
    assert callable(organfm.load) and callable(organfm.pretrain) and callable(organfm.evaluate)
    assert callable(organfm.embed)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        organfm.nothing  # noqa: B018
