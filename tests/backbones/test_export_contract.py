"""The contract on disk: a real export's ``backbone.json`` round-trips exactly, older exports load, loading attaches it."""
from __future__ import annotations

import json

import pytest
import torch

from organfm.backbones.contract import BackboneContract, read_contract

TINY = ["backbone.name=test_convnext", "data.synthetic_organs=3", "data.synthetic_images_per_organ=8",
        "data.synthetic_size=32", "views.global_size=32", "views.local_size=32", "views.num_local_views=2",
        "trainer.batch_size=4", "trainer.num_workers=0", "trainer.progress=false", "trainer.max_steps=2",
        "trainer.monitor_every=0", "method.out_dim=64", "method.hidden_dim=32", "method.bottleneck_dim=16"]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """The export folder of a two-step Coda run."""
    from organfm.config import load_config
    from organfm.engine.pretrain import pretrain

    run_dir = tmp_path_factory.mktemp("runs") / "coda"
    return pretrain(load_config("coda", None, TINY + [f"trainer.out_dir={run_dir}"])).run_dir / "export"


def test_a_real_exports_contract_round_trips_to_the_same_dict_and_bytes(export):
    text = (export / "backbone.json").read_text(encoding="utf-8")
    data = json.loads(text)
    contract = BackboneContract.from_dict(data)
    assert contract.to_dict() == data
    assert list(contract.to_dict()) == list(data)  # the same key order: the file is rewritten byte for byte
    assert contract.to_json() == text
    assert contract.extra == {}  # every key an export writes is a typed field
    assert data["pretrained_cfg"] == contract.pretrained_cfg == {"input_size": [1, 32, 32], "mean": [0.5],
                                                                 "std": [0.5], "num_classes": 0}
    assert read_contract(export / "backbone.json") == contract


def test_loading_an_export_attaches_its_contract(export):
    import organfm
    from organfm.features import load_encoder

    on_disk = read_contract(export / "backbone.json")
    for spec in (export, export.parent, export / "backbone.safetensors"):
        model, preprocess = organfm.load(spec)
        assert type(model.contract) is BackboneContract
        assert model.contract.replace(spec=None, weights=None, model_hash=None) == on_disk
        assert preprocess(torch.rand(40, 40)).shape == (1, 32, 32)
    make, contract = load_encoder(str(export))
    assert make().contract.to_dict() == contract


def test_an_older_exports_dict_loads_and_keeps_what_it_does_not_know():
    old = {"architecture": "resnet18", "input_size": [1, 64, 64], "mean": [0.4], "std": [0.3],
           "pretrained_cfg": {"input_size": [1, 64, 64], "mean": [0.4], "std": [0.3], "num_classes": 0},
           "a_key_of_another_version": {"x": 1}}
    contract = BackboneContract.from_dict(old)
    assert contract.architecture == "resnet18" and contract.organs is None and contract.interpolation is None
    assert contract.to_dict() == old
    edited = dict(old, pretrained_cfg={"input_size": [1, 64, 64], "mean": [0.4], "std": [0.3], "num_classes": 5})
    assert BackboneContract.from_dict(edited).to_dict() == edited  # a pretrained_cfg of its own is kept as is
    with pytest.raises(ValueError, match="architecture"):
        BackboneContract.from_dict({"mean": [0.5]})
