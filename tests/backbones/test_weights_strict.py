"""Strict loading of timm backbones: weights of another architecture or shape are an error, pickles are refused."""
from __future__ import annotations

import os
import warnings

import pytest
import torch
from safetensors.torch import save_file

from organfm.backbones import TimmBackbone, create_backbone


def save_export(model: TimmBackbone, path) -> str:
    save_file({k: v.contiguous() for k, v in model.model.state_dict().items()}, str(path))
    return str(path)


def test_same_architecture_round_trips_exactly(tmp_path):
    torch.manual_seed(0)
    source = create_backbone("test_convnext").eval()
    loaded = create_backbone("test_convnext", pretrained_file=save_export(source, tmp_path / "w.safetensors")).eval()
    assert loaded.load_report.complete and len(loaded.load_report.loaded) == len(source.model.state_dict())
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(source(x), loaded(x))


def test_weights_of_another_architecture_are_an_error_naming_file_architecture_and_keys(tmp_path):
    # before the fix timm's pretrained_cfg_overlay path printed "Unexpected keys" and trained from random init
    path = save_export(create_backbone("test_convnext"), tmp_path / "convnext.safetensors")
    with pytest.raises(ValueError) as info:
        create_backbone("test_resnet", pretrained_file=path)
    message = str(info.value)
    assert path in message and "'test_resnet'" in message
    assert "missing from the file (conv1.0.weight" in message and "unexpected (head.norm.bias" in message


def test_a_tensor_of_another_shape_is_named_with_both_shapes(tmp_path):
    state = {k: v.clone() for k, v in create_backbone("test_resnet").model.state_dict().items()}
    state["fc.weight"] = torch.zeros(1)  # extra classifier keys of a headless model are dropped, not this one
    state["conv1.0.weight"] = torch.zeros(16, 1, 5, 5)
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(ValueError, match=r"1 of another shape \(conv1.0.weight: file \(16, 1, 5, 5\) vs model \(16, 1, 3, 3\)"):
        create_backbone("test_resnet", pretrained_file=str(tmp_path / "w.pth"))


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)  # what a malicious pickle would do on load


def test_a_pickle_that_is_not_a_plain_state_dict_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    state = dict(create_backbone("test_resnet").model.state_dict(), evil=_RunsCode(str(marker)))
    torch.save(state, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match=r"evil\.pth: refused: .*never unpickles arbitrary objects"):
        create_backbone("test_resnet", pretrained_file=str(tmp_path / "evil.pth"))
    assert not marker.exists()


def test_partial_loading_is_an_opt_in_that_reports_what_was_loaded(tmp_path):
    torch.manual_seed(0)
    source = create_backbone("test_resnet")
    state = {k: v for k, v in source.model.state_dict().items() if not k.startswith("layer2.")}
    state["extra.weight"] = torch.zeros(3)
    torch.save({"state_dict": state}, tmp_path / "partial.pth")  # wrapped, as many training scripts save
    with pytest.raises(ValueError, match="does not fit"):
        create_backbone("test_resnet", pretrained_file=str(tmp_path / "partial.pth"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = create_backbone("test_resnet", pretrained_file=str(tmp_path / "partial.pth"), strict=False)
    report = model.load_report
    assert report.unexpected == ["extra.weight"] and report.missing and all(k.startswith("layer2.") for k in report.missing)
    assert sorted(report.loaded) == sorted(k for k in state if k != "extra.weight")
    assert torch.equal(model.model.state_dict()["conv1.0.weight"], source.model.state_dict()["conv1.0.weight"])
    assert any("partial load" in str(w.message) and "missing from the file (layer2." in str(w.message) for w in caught)
