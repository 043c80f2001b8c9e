"""Careless or unlucky inputs give one line that names the file or key, the value and the fix; the CLI exits 2.

Each case below was a raw traceback or an unhelpful message before (issue 22); each test fails if the
traceback or the old wording comes back.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from organfm.cli.main import main

DICOM_SERIES = Path(__file__).resolve().parents[2] / "../shared/data/totalseg-example/example_ct_dicom"


@pytest.fixture
def imgs(tmp_path) -> Path:
    """Two organ folders of 6 small images each (9 or so training images after the split)."""
    rng = np.random.default_rng(0)
    for organ in ("lung", "hand"):
        (tmp_path / "imgs" / organ).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(tmp_path / "imgs" / organ / f"{i}.png")
    return tmp_path / "imgs"


def _task(tmp_path: Path, imgs: Path) -> str:
    path = tmp_path / "task.yaml"
    path.write_text(f"name: t\nprotocols: [knn]\ndata:\n  root: {imgs.parent}\n  source: {imgs.name}\n"
                    "  image_size: 32\n")
    return str(path)


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


def test_knn_with_every_k_larger_than_the_training_set_clamps_k_with_a_note(tmp_path, imgs, capsys):
    # before: IndexError from an empty list of k (default k=[10, 20], ~9 training images)
    with pytest.warns(UserWarning, match=r"knn\.k=\[10, 20\] is larger than the \d+ training images: using k=\d+"):
        code = main(["evaluate", "--models", "r=random:test_convnext", "--task", _task(tmp_path, imgs),
                     f"out_dir={tmp_path / 'ev'}"])
    assert code == 0
    assert "knn" in capsys.readouterr().out


@pytest.mark.parametrize("override, message", [
    ("linear.lrs=[]", r"linear\.lrs=\[\]: needs at least one value \(default \[0\.001"),
    ("fewshot.seeds=-3", r"fewshot\.seeds=-3: must be at least 1 \(default 10\)"),
    ("knn.k=[0,5]", r"knn\.k=\[0, 5\]: every value must be at least 1"),
])
def test_empty_grids_and_negative_counts_of_protocols_are_config_errors(tmp_path, imgs, capsys, override, message):
    # before: RuntimeError "stack expects a non-empty TensorList" and StopIteration
    import re

    line = _one_line_error(capsys, ["evaluate", "--models", "r=random:test_convnext", "--task",
                                    _task(tmp_path, imgs), override])
    assert re.search(message, line), line


def test_a_task_file_of_garbage_bytes_is_named(tmp_path, capsys):
    garbage = tmp_path / "task.yaml"
    garbage.write_bytes(bytes(range(128, 256)) * 3)
    line = _one_line_error(capsys, ["evaluate", "--models", "r=random:test_convnext", "--task", str(garbage)])
    assert str(garbage) in line and "not a text (UTF-8 YAML) file" in line and "codec" not in line


@pytest.mark.parametrize("value", ["abc", "0", "1.5x", "0,x"])
def test_trainer_devices_that_are_no_device_count_are_config_errors(capsys, value):
    # before: TypeError from inside Lightning Fabric
    line = _one_line_error(capsys, ["pretrain", "--method", "coda", f"trainer.devices={value}", "trainer.max_steps=1"])
    assert "trainer.devices=" in line and "is not a device count: use a number" in line


def test_valid_device_settings_still_pass():
    from organfm.config import load_config

    for value in ("1", "auto", "-1", "0,1"):
        load_config("coda", None, [f"trainer.devices={value}"])
    with pytest.raises(ValueError, match=r"trainer\.accelerator='gpx' is unknown; use one of auto, cpu, gpu"):
        load_config("coda", None, ["trainer.accelerator=gpx"])


def test_accelerator_gpu_without_a_gpu_names_the_key_and_the_way_out(monkeypatch):
    # before: RuntimeError "No supported gpu backend found!"
    from organfm.config import load_config
    from organfm.engine.pretrain import _resolve_device_settings

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = load_config("coda", None, ["trainer.accelerator=gpu"])
    with pytest.raises(ValueError, match=r"trainer\.accelerator=gpu: no CUDA GPU is visible on this machine; use "
                                         r"trainer\.accelerator=cpu"):
        _resolve_device_settings(cfg)


def test_a_zero_byte_checkpoint_or_weights_file_says_it_is_empty(tmp_path, capsys):
    # before: "checkpoint ... cannot be read: " and nothing after
    from organfm.backbones.weights import read_state_dict
    from organfm.engine.checkpoint import load_checkpoint

    empty = tmp_path / "step-00000001.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"step-00000001\.ckpt cannot be read: it is empty \(0 bytes"):
        load_checkpoint(empty)
    with pytest.raises(ValueError, match=r"w\.pth: empty file \(0 bytes"):
        (tmp_path / "w.pth").write_bytes(b"")
        read_state_dict(tmp_path / "w.pth")
    # any other unreadable file still says what failed, never an empty reason
    (tmp_path / "junk.ckpt").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match=r"junk\.ckpt cannot be read \(.+\)"):
        load_checkpoint(tmp_path / "junk.ckpt")


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_a_refused_pickle_never_relays_the_advice_to_load_with_weights_only_false(tmp_path):
    from organfm.backbones.weights import read_state_dict
    from organfm.engine.checkpoint import load_checkpoint

    marker = tmp_path / "pwned"
    torch.save({"step": 1, "evil": _RunsCode(str(marker))}, tmp_path / "evil.ckpt")
    for load in (load_checkpoint, read_state_dict):
        with pytest.raises(ValueError) as info:
            load(tmp_path / "evil.ckpt")
        message = str(info.value)
        assert "evil.ckpt" in message and "refused" in message and "never unpickles" in message
        assert "weights_only=False" not in message and "weights_only set to False" not in message
        assert "\n" not in message
    assert not marker.exists()


def test_a_weight_mismatch_names_the_config_key_for_partial_loading(tmp_path):
    from organfm.backbones import create_backbone
    from safetensors.torch import save_file

    path = tmp_path / "convnext.safetensors"
    save_file({k: v.contiguous() for k, v in create_backbone("test_convnext").model.state_dict().items()}, str(path))
    with pytest.raises(ValueError, match=r"opt in to partial loading \(backbone\.strict_load=false\)"):
        create_backbone("test_resnet", pretrained_file=str(path))


def test_cache_of_non_square_images_stores_squares_of_the_first_images_height(tmp_path):
    # before: "one channel count per cache (set data.channels)", and data.channels is no key
    from organfm.data.shards import ShardDataset, write_shards

    class NonSquare(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 3

        def __getitem__(self, i: int) -> dict:
            return {"image": torch.rand(1, 20, 30), "organ": 0, "index": i}

    (tmp_path / "cache").mkdir()
    write_shards(NonSquare(), tmp_path / "cache")
    assert tuple(ShardDataset(str(tmp_path / "cache"))[2]["image"].shape) == (1, 20, 20)


def test_triad_with_batch_size_1_is_a_config_error_naming_the_key(tmp_path, capsys):
    # before: "Expected more than 1 value per channel when training" from BatchNorm
    line = _one_line_error(capsys, ["pretrain", "--config", "configs/triad.yaml", "trainer.batch_size=1",
                                    "trainer.max_steps=1", "trainer.num_workers=0", "trainer.progress=false",
                                    f"trainer.out_dir={tmp_path / 'run'}"])
    assert "trainer.batch_size=1" in line and "at least 2" in line and "set trainer.batch_size=2" in line


@pytest.mark.skipif(not DICOM_SERIES.is_dir(), reason="needs ../shared/data/totalseg-example")
def test_a_truncated_dicom_slice_is_called_truncated_naming_the_file(tmp_path):
    # before: "1 slice(s) lack ImagePositionPatient/ImageOrientationPatient"
    from organfm.data.dicom_series import read_dicom_series
    from organfm.data.errors import DataError

    folder = tmp_path / "series"
    shutil.copytree(DICOM_SERIES, folder)
    for path in folder.iterdir():
        path.chmod(0o644)
    victim = sorted(folder.iterdir())[3]
    victim.write_bytes(victim.read_bytes()[:700])  # cut before the position tags and the pixels
    with pytest.raises(DataError, match=rf"slice {victim.name} is truncated or unreadable .*re-copy it or remove it"):
        read_dicom_series(folder)
    victim.write_bytes((DICOM_SERIES / victim.name).read_bytes()[:-1000])  # the pixels cut short
    with pytest.raises(DataError, match=rf"{victim.name}"):
        read_dicom_series(folder)


def test_embedding_with_a_3d_model_says_what_data_it_needs(tmp_path, imgs, monkeypatch):
    # before: "plainconv3d expects (B, 1, D, H, W) volumes, got shape (30, 1, 32, 32)" from deep inside the model
    from organfm.data import build_dataset
    from organfm.features import encoders as models
    from organfm.features import store as embed

    contract = {"architecture": "plainconv3d", "input_size": [1, 32, 32, 32], "mean": [0.0], "std": [1.0],
                "model_hash": "x"}
    monkeypatch.setattr(models, "load_encoder", lambda spec, **kw: (None, contract))
    with pytest.raises(ValueError, match=r"runs/triad is a 3D model .*organfm embed feeds it 2D images.*finetune3d"):
        embed.embed_dataset("runs/triad", build_dataset(str(imgs), split=None), tmp_path / "emb")
