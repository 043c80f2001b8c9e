"""Model specs: random init (seeded), run folders (read from the checkpoint, never written into), export folders,
weights files; every factory's backbone carries its contract."""
from __future__ import annotations

import shutil

import pytest
import torch

from organfm.backbones import TimmBackbone
from organfm.backbones.contract import BackboneContract
from organfm.engine.checkpoint import export_backbone, save_checkpoint
from organfm.features.encoders import load_encoder, parse_models


def _state(backbone: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in backbone.state_dict().items()}


def test_random_spec_is_seeded_and_hashed_by_spec_and_seed():
    make, contract = load_encoder("random:test_resnet", image_size=32, seed=0)
    a, b = _state(make()), _state(make())
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert contract["mean"] == [0.5] and contract["std"] == [0.5] and contract["input_size"] == [1, 32, 32]
    assert contract["model_hash"] == load_encoder("random:test_resnet", seed=0)[1]["model_hash"]
    assert contract["model_hash"] != load_encoder("random:test_resnet", seed=1)[1]["model_hash"]
    assert contract["model_hash"] != load_encoder("random:test_convnext", seed=0)[1]["model_hash"]
    other = _state(load_encoder("random:test_resnet", seed=1)[0]())
    assert not all(torch.equal(a[k], other[k]) for k in a)


def _fake_run(tmp_path):
    """A run folder holding one checkpoint in the pretraining format (no export yet)."""
    torch.manual_seed(7)
    backbone = TimmBackbone("test_resnet")
    prefix = "teacher.backbone.model."
    state = {"step": 3, "export_prefix": prefix,
             "method": {prefix + k: v for k, v in backbone.model.state_dict().items()},
             "contract": {"architecture": "test_resnet", "in_chans": 1, "mean": [0.4], "std": [0.2],
                          "input_size": [1, 32, 32]}}
    run = tmp_path / "run"
    save_checkpoint(state, run, step=3)
    return run, backbone


def test_a_run_folder_is_loaded_from_its_checkpoint_without_writing_into_it(tmp_path):
    run, original = _fake_run(tmp_path)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    make, contract = load_encoder(str(run))
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before, "loading wrote into the run folder"
    assert contract["mean"] == [0.4] and contract["std"] == [0.2] and contract["architecture"] == "test_resnet"
    loaded = make()
    assert all(torch.equal(v, loaded.model.state_dict()[k]) for k, v in original.model.state_dict().items())
    assert isinstance(loaded.contract, BackboneContract) and loaded.contract.mean == [0.4]
    assert loaded.contract.model_hash == contract["model_hash"] and loaded.contract.num_features == loaded.num_features
    # an export of that checkpoint, its folder and its weights file name the same model (same bytes, same hash)
    export_backbone(run)
    assert load_encoder(str(run / "export"))[1]["model_hash"] == contract["model_hash"]
    assert load_encoder(str(run / "export" / "backbone.safetensors"))[1]["model_hash"] == contract["model_hash"]
    assert load_encoder(str(run))[1]["model_hash"] == contract["model_hash"]


def test_every_factory_attaches_the_contract_it_returns(tmp_path):
    run, _ = _fake_run(tmp_path)
    export_backbone(run)
    for spec in ("random:test_resnet", "random:unet_small", str(run), str(run / "export")):
        make, contract = load_encoder(spec, image_size=32)
        backbone = make()
        assert isinstance(backbone.contract, BackboneContract)
        assert {k: v for k, v in backbone.contract.to_dict().items() if k in contract} == \
            {k: v for k, v in contract.items() if v is not None}
        assert backbone.contract.spatial_dims == backbone.spatial_dims
        assert backbone.contract.num_features == backbone.num_features
        assert make().contract is not backbone.contract  # each backbone owns its copy


def test_a_text_tower_in_the_export_is_named_in_the_contract(tmp_path):
    from organfm.text.tower import save_joint_text
    from tests.evaluation.protocols.test_zeroshot import tiny_joint

    run, _ = _fake_run(tmp_path)
    export_backbone(run)
    assert "text" not in load_encoder(str(run))[1]  # exported without texts
    text = save_joint_text(tiny_joint(["a medical image of the liver"], image_dim=96), run / "export" / "text")
    for spec in (run, run / "export", run / "export" / "backbone.safetensors"):
        assert load_encoder(str(spec))[1]["text"] == str(text)
    assert "text" not in load_encoder("random:test_resnet")[1]


def test_timm_spec_with_local_weights(tmp_path):
    run, original = _fake_run(tmp_path)
    export_backbone(run)
    weights = tmp_path / "plain.safetensors"
    shutil.copy(run / "export" / "backbone.safetensors", weights)
    with pytest.raises(FileNotFoundError, match="no contract JSON"):
        load_encoder(str(weights))
    make, contract = load_encoder(f"timm:test_resnet:{weights}", image_size=32)
    assert contract["input_size"] == [1, 32, 32] and len(contract["mean"]) == 1
    loaded = make().model.state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in original.model.state_dict().items())


def test_bad_specs_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown architecture 'not_a_net'"):
        load_encoder("random:not_a_net")
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_encoder(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="neither an export"):
        load_encoder(str(tmp_path))


def test_organfm_registered_backbones_are_specs_too():
    make, contract = load_encoder("random:unet_small", image_size=32)
    assert make()(torch.rand(2, 1, 32, 32)).shape == (2, make().num_features)


def test_parse_models():
    assert parse_models("a=runs/x, scratch=random:resnet18") == {"a": "runs/x", "scratch": "random:resnet18"}
    assert parse_models("random:resnet18") == {"resnet18": "random:resnet18"}
    with pytest.raises(ValueError, match="twice"):
        parse_models("a=x,a=y")
    with pytest.raises(ValueError, match="empty"):
        parse_models(" , ")


def test_the_model_hash_names_the_content_not_the_metadata_order(tmp_path):
    # safetensors writes its metadata from a hash map: the same file can come out with its keys in either order
    from organfm.features.encoders import _hash_bytes, hash_file

    def blob(header: str) -> bytes:
        return len(header).to_bytes(8, "little") + header.encode() + b"\x00" * 8

    a = blob('{"__metadata__":{"architecture":"x","format":"pt"},"w":{"dtype":"I64","shape":[],"data_offsets":[0,8]}}')
    b = blob('{"w":{"dtype":"I64","shape":[],"data_offsets":[0,8]},"__metadata__":{"format":"pt","architecture":"x"}}')
    other = blob('{"__metadata__":{"architecture":"y","format":"pt"},"w":{"dtype":"I64","shape":[],"data_offsets":[0,8]}}')
    assert a != b and _hash_bytes(a) == _hash_bytes(b) != _hash_bytes(other)
    for name, data in (("a", a), ("b", b)):
        (tmp_path / f"{name}.safetensors").write_bytes(data)
    assert hash_file(tmp_path / "a.safetensors") == hash_file(tmp_path / "b.safetensors") == _hash_bytes(a)
    (tmp_path / "a.pth").write_bytes(a)  # any other file: its plain bytes
    assert hash_file(tmp_path / "a.pth") != hash_file(tmp_path / "a.safetensors")
