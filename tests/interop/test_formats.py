"""``organfm export RUN --format nnunet|monai``: written atomically beside the export, refused before any write."""
from __future__ import annotations

import os
import stat

import pytest
import torch

from organfm.backbones import create_backbone
from organfm.cli.main import build_parser, main
from organfm.engine.checkpoint import export_backbone
from organfm.interop import EXPORT_FORMATS, FORMAT_FILES

BACKBONES = {"plainconv3d": {"in_chans": 1, "channels": [4, 8], "strides": [1, 2]},
             "swin3d": {"in_chans": 1, "embed_dim": 12, "depths": [2, 2, 2, 2], "num_heads": [3, 6, 12, 24],
                        "window_size": 7, "patch_size": 2}}
FORMAT_OF = {"plainconv3d": "nnunet", "swin3d": "monai"}


def _run(tmp_path, architecture: str):
    """A run folder with one Triad-like checkpoint of ``architecture`` (what ``organfm pretrain`` saves)."""
    backbone = create_backbone(architecture, **BACKBONES[architecture])
    prefix = "student.backbone.model."
    contract = {"architecture": architecture, "backbone_args": backbone.backbone_args, "in_chans": 1,
                "num_features": backbone.num_features, "spatial_dims": 3, "input_size": [1, 32, 32, 32],
                "interpolation": "trilinear", "mean": [0.0], "std": [1.0], "organs": ["liver"], "method": "triad"}
    state = {"step": 3, "method": {prefix + k: v for k, v in backbone.model.state_dict().items()},
             "export_prefix": prefix, "contract": contract}
    run = tmp_path / architecture
    (run / "checkpoints").mkdir(parents=True)
    torch.save(state, run / "checkpoints" / "step-00000003.ckpt")
    return run


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_the_cli_offers_every_format_and_no_other(capsys):
    for fmt in EXPORT_FORMATS:
        assert build_parser().parse_args(["export", "run", "--format", fmt]).format == fmt
    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "run", "--format", "onnx"])
    assert "invalid choice: 'onnx'" in capsys.readouterr().err


@pytest.mark.parametrize("architecture", ["plainconv3d", "swin3d"])
def test_export_writes_the_format_with_the_umask_modes(tmp_path, capsys, umask_022, architecture):
    run, fmt = _run(tmp_path, architecture), FORMAT_OF[architecture]
    assert main(["export", str(run), "--format", fmt]) == 0
    out = capsys.readouterr().out
    for name in FORMAT_FILES[fmt]:
        path = run / "export" / name
        assert str(path) in out and stat.S_IMODE(path.stat().st_mode) == 0o644, name
    assert not [p for p in (run / "export").iterdir() if p.name.endswith(".tmp")]
    weights = torch.load(run / "export" / FORMAT_FILES[fmt][0], weights_only=True)
    assert ("network_weights" in weights) == (fmt == "nnunet")


def test_a_backbone_the_format_cannot_hold_is_refused_before_any_write(tmp_path, capsys):
    run = _run(tmp_path, "plainconv3d")
    assert main(["export", str(run), "--format", "monai"]) == 2
    assert "only the swin3d backbone matches; this export is 'plainconv3d'" in capsys.readouterr().err
    assert not (run / "export").exists()
    with pytest.raises(ValueError, match="unknown export format 'onnx'"):
        export_backbone(run, format="onnx")


def test_a_later_export_without_the_format_removes_the_stale_files(tmp_path):
    run = _run(tmp_path, "plainconv3d")
    export_backbone(run, format="nnunet")  # the Python path of the same export
    assert all((run / "export" / name).is_file() for name in FORMAT_FILES["nnunet"])
    export_backbone(run)
    assert not any((run / "export" / name).exists() for name in FORMAT_FILES["nnunet"])
    assert (run / "export" / "backbone.safetensors").is_file()
