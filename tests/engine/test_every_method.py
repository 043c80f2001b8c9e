"""Generated from the method registry: every registered method builds the same model from Python and from the
CLI defaults, runs on its embedded default, resumes exactly, exports, and its export reloads.

A method that cannot run on defaults alone (e.g. it needs teacher models) lists the overrides that make a
small example of it in ``Method.smoke_overrides``.
"""
from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
from safetensors.torch import load_file

from organfm.backbones import create_backbone
from organfm.config import load_config, new_config
from organfm.engine.pretrain import pretrain
from organfm.methods import create_method, get_method, list_methods

SMALL = ["trainer.batch_size=4", "trainer.num_workers=0", "trainer.progress=false", "trainer.deterministic=true",
         "trainer.log_every=1", "views.num_local_views=2", "data.synthetic_images_per_organ=4",
         "data.synthetic_organs=3"]


def _overrides(name: str) -> list[str]:
    return SMALL + list(getattr(get_method(name), "smoke_overrides", ()))


def _data_fixed(name: str, tmp_path) -> dict:
    """Constructor keys a batch source fixes from the data: a text tower's corpus tokenizer."""
    from organfm.text.tokenizer import WordTokenizer

    if "tokenizer_file" not in asdict(new_config(name).method):
        return {}
    WordTokenizer.from_corpus(["a medical image of the organ 00"]).save(tmp_path / "tok.json")
    return {"tokenizer_file": str(tmp_path / "tok.json")}


@pytest.mark.parametrize("name", list_methods())
def test_python_and_cli_defaults_build_the_same_model(name, tmp_path):
    cfg = new_config(name)
    # the backbone the CLI default uses, at the size its data would fix (3D for a 3D default)
    make = lambda: create_backbone(cfg.backbone.name, in_chans=1)  # noqa: E731
    fixed = _data_fixed(name, tmp_path)
    torch.manual_seed(0)
    from_python = create_method(name, backbone=make(), **fixed)
    torch.manual_seed(0)
    from_cli = get_method(name)(make(), **{**asdict(cfg.method), **fixed})
    a, b = from_python.state_dict(), from_cli.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert repr(from_python) == repr(from_cli)


@pytest.mark.parametrize("name", list_methods())
def test_config_keys_are_the_constructor_arguments(name):
    import inspect

    cls = get_method(name)
    params = [p.name for p in inspect.signature(cls.__init__).parameters.values() if p.kind is p.KEYWORD_ONLY]
    assert list(asdict(new_config(name).method)) == params
    assert set(cls.source_keys) <= set(params)


@pytest.mark.slow
@pytest.mark.parametrize("name", list_methods())
def test_method_runs_resumes_exactly_and_exports(name, tmp_path):
    common = _overrides(name)
    full = pretrain(load_config(name, None, common + ["trainer.max_steps=2", f"trainer.out_dir={tmp_path / 'full'}"]))
    pretrain(load_config(name, None, common + ["trainer.max_steps=1", f"trainer.out_dir={tmp_path / 'part'}"]))
    resumed = pretrain(load_config(None, tmp_path / "part" / "config.yaml", ["trainer.max_steps=2"]),
                       resume_dir=tmp_path / "part")
    assert resumed.result.start_step == 1 and resumed.result.step == 2
    a, b = load_file(full.export), load_file(resumed.export)
    assert a.keys() == b.keys() and max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    # the health monitor measured the run at step 0 and at its end, with the method's own signals
    from organfm.monitor import read_health

    health = read_health(full.run_dir)
    assert health is not None and [r["step"] for r in health["history"]] == [0, 2]
    assert {"embed_std_ratio", "rankme", "distance"} <= set(health["signals"])
    assert health["verdict"] in ("learning", "not learning yet", "collapsed") and health["reason"]
    # the export reloads into the same architecture, strictly
    import json

    contract = json.loads((full.export.parent / "backbone.json").read_text())
    reloaded = create_backbone(contract["architecture"], in_chans=1, pretrained_file=str(full.export))
    state = reloaded.model.state_dict()
    assert all(torch.equal(state[k], a[k]) for k in a)
