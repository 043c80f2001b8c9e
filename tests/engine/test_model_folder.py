"""The export as a timm / Hugging Face model folder: config.json + model.safetensors + README.md model card."""
from __future__ import annotations

import json
import os
import stat

import pytest
import timm
import torch
from safetensors.torch import load_file

from organfm.config import load_config
from organfm.engine.checkpoint import export_backbone, load_checkpoint, save_checkpoint
from organfm.engine.model_folder import data_facts, record_evaluation, render_model_card, timm_config
from organfm.engine.pretrain import pretrain

TINY = ["backbone.name=test_convnext", "data.synthetic_organs=3", "data.synthetic_images_per_organ=8",
        "data.synthetic_size=32", "views.global_size=32", "views.local_size=32", "views.num_local_views=2",
        "trainer.batch_size=4", "trainer.num_workers=0", "trainer.progress=false", "trainer.max_steps=2",
        "trainer.monitor_every=0", "method.out_dim=64", "method.hidden_dim=32", "method.bottleneck_dim=16"]


@pytest.fixture(scope="module")
def coda_run(tmp_path_factory):
    old = os.umask(0o022)
    try:
        run_dir = tmp_path_factory.mktemp("runs") / "coda"
        summary = pretrain(load_config("coda", None, TINY + [f"trainer.out_dir={run_dir}"]))
    finally:
        os.umask(old)
    return summary


def test_timm_loads_the_export_folder_with_its_contract(coda_run):
    export = coda_run.run_dir / "export"
    model = timm.create_model(f"local-dir:{export}", pretrained=True)
    cfg = timm.data.resolve_data_config(model=model)
    assert cfg["input_size"] == (1, 32, 32)
    assert list(cfg["mean"]) == [0.5] and list(cfg["std"]) == [0.5]
    assert cfg["interpolation"] == "bilinear" and cfg["crop_pct"] == 1.0
    assert model.num_classes == 0
    # the same weights as organfm's own file, and the same pooled features as organfm's backbone
    ours = load_file(export / "backbone.safetensors")
    theirs = model.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    x = torch.rand(2, 1, 32, 32)
    import organfm

    backbone, _ = organfm.load(export)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), backbone(x), atol=1e-6)


def test_export_files_follow_the_umask(coda_run):
    export = coda_run.run_dir / "export"
    for name in ("backbone.safetensors", "backbone.json", "config.json", "model.safetensors", "README.md"):
        assert stat.S_IMODE((export / name).stat().st_mode) == 0o644, name
    for path in [*(coda_run.run_dir / "checkpoints").glob("*.ckpt"), coda_run.run_dir / "config.yaml",
                 coda_run.run_dir / "data.json"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_model_card_says_method_data_steps_health_use_and_licence(coda_run):
    card = (coda_run.run_dir / "export" / "README.md").read_text()
    assert card.startswith("---\nlicense: other\nlibrary_name: timm\n")
    assert f'timm.create_model("local-dir:{(coda_run.run_dir / "export").resolve()}", pretrained=True)' in card
    assert "organfm.load(" in card and "## Method" in card and "Coda" in card
    assert "- steps: 2" in card and "24 images" in card and "procedurally generated" in card
    assert "## Training health" in card and "not monitored" in card
    assert "## Intended use" in card and "## Licence" in card and "Not evaluated yet" in card


def test_license_option_and_teachers_reach_config_json_and_card(coda_run, tmp_path):
    ckpt_path = coda_run.checkpoint
    ckpt = load_checkpoint(ckpt_path)
    ckpt["config"]["method"]["teachers"] = ["a=random:test_convnext", "b=runs/rasd"]
    run_dir = tmp_path / "run"
    save_checkpoint(ckpt, run_dir, int(ckpt["step"]))
    _, contract_path = export_backbone(run_dir, license="cc-by-4.0")
    contract = json.loads(contract_path.read_text())
    assert contract["teachers"] == ["a=random:test_convnext", "b=runs/rasd"] and contract["license"] == "cc-by-4.0"
    assert json.loads((run_dir / "export" / "config.json").read_text())["pretrained_cfg"]["license"] == "cc-by-4.0"
    card = (run_dir / "export" / "README.md").read_text()
    assert "license: cc-by-4.0" in card and "`a=random:test_convnext`" in card
    export_backbone(run_dir)  # a re-export keeps the licence it was given
    assert json.loads(contract_path.read_text())["license"] == "cc-by-4.0"


def test_evaluation_results_are_recorded_in_the_card(coda_run, tmp_path):
    import shutil

    export = tmp_path / "export"
    shutil.copytree(coda_run.run_dir / "export", export)
    rows = [{"model": "coda", "protocol": "knn", "setting": "k=10",
             "metrics": {"accuracy": {"mean": 0.8125, "sd": 0.01, "n": 100}}}]
    record_evaluation(export, task="mednist", model="coda", rows=rows)
    card = (export / "README.md").read_text()
    assert "Task `mednist`" in card and "| knn | k=10 | accuracy | 0.8125 ± 0.0100 |" in card
    assert "Not evaluated yet" not in card
    assert json.loads((export / "evaluation.json").read_text())["mednist"]["rows"][0]["protocol"] == "knn"


def test_data_facts_keep_counts_and_drop_paths():
    facts = data_facts({"source": "/data/patients/ct", "n_items": 12, "organs": {"lung": 7, "liver": 5},
                        "splits": {"train": 10, "test": 2}, "split_file": "/secret/split.csv"})
    assert facts == {"num_images": 12, "organs": {"lung": 7, "liver": 5}, "splits": {"train": 10, "test": 2},
                     "procedural": False}
    assert "/data" not in render_model_card({"architecture": "plainconv3d", "method": "triad", "input_size": [1, 8, 8, 8],
                                             "mean": [0.0], "std": [1.0], "training_data": facts})


def test_every_generator_says_it_is_procedural_and_every_method_brings_its_card_line():
    from organfm.methods.registry import get_method, list_methods
    from organfm.synthesis.organs import SyntheticOrgans
    from organfm.synthesis.pairs import RaSDPairs
    from organfm.synthesis.subjects import SyntheticSubjects

    for summary in (SyntheticOrgans(num_organs=2, images_per_organ=2).summary(), RaSDPairs((16, 16)).summary(),
                    SyntheticSubjects(num_subjects=2).summary()):
        assert data_facts(summary)["procedural"] is True
    card = render_model_card({"architecture": "plainconv3d", "method": "triad", "input_size": [1, 8, 8, 8],
                              "mean": [0.0], "std": [1.0], "training_data": data_facts(RaSDPairs((16, 16)).summary())})
    assert "no patient data" in card and get_method("triad").card_summary in card
    assert all(get_method(m).card_summary for m in list_methods())
    assert "organfm method `mine`" in render_model_card({"architecture": "plainconv3d", "method": "mine",
                                                         "input_size": [1, 8, 8, 8], "mean": [0.0], "std": [1.0]})


def test_timm_config_is_one_channel_with_the_contract_size():
    cfg = timm_config({"architecture": "resnet18", "input_size": [1, 64, 64], "mean": [0.4], "std": [0.2],
                       "method": "dino"})
    assert cfg["in_chans"] == 1 and cfg["num_classes"] == 0
    assert cfg["pretrained_cfg"]["input_size"] == [1, 64, 64] and cfg["pretrained_cfg"]["crop_pct"] == 1.0


def test_organfm_architectures_get_a_card_but_no_timm_files(tmp_path):
    from organfm.engine.model_folder import write_model_folder

    contract = {"architecture": "plainconv3d", "method": "triad", "input_size": [1, 8, 8, 8], "mean": [0.0],
                "std": [1.0]}
    (tmp_path / "backbone.json").write_text(json.dumps(contract))
    (tmp_path / "config.json").write_text("{}")  # stale, from an earlier export: removed
    write_model_folder(tmp_path, contract, tmp_path / "backbone.safetensors")
    assert not (tmp_path / "config.json").exists() and not (tmp_path / "model.safetensors").exists()
    assert "library_name: organfm" in (tmp_path / "README.md").read_text()
