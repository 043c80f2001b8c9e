from __future__ import annotations

import pytest

from organfm.config import ConfigError, config_to_dict, dump_config, load_config, valid_keys


def test_defaults_then_file_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("trainer:\n  batch_size: 8\n  seed: 3\noptim:\n  lr: 1.0e-3\n")
    cfg = load_config("coda", f, ["trainer.seed=5", "optim.lr=1e-4", "data=/x/y.npz", "method.use_inter=false"])
    assert cfg.trainer.batch_size == 8  # from the file
    assert cfg.trainer.seed == 5  # the command line wins over the file
    assert cfg.optim.lr == pytest.approx(1e-4) and isinstance(cfg.optim.lr, float)  # "1e-4" is a float, not a str
    assert cfg.data.source == "/x/y.npz"  # data= shorthand
    assert cfg.method.use_inter is False and cfg.method.use_intra is True


def test_unknown_key_lists_valid_ones():
    with pytest.raises(ConfigError, match="unknown config key 'trainer.max_step'.*trainer.max_steps"):
        load_config("coda", None, ["trainer.max_step=3"])
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config("coda", None, ["nosection=3"])


def test_wrong_types_are_errors():
    with pytest.raises(ConfigError, match="trainer.max_steps: expected an integer"):
        load_config("coda", None, ["trainer.max_steps=2.5"])
    with pytest.raises(ConfigError, match="true/false"):
        load_config("coda", None, ["method.use_inter=maybe"])
    with pytest.raises(ConfigError, match="not of the form"):
        load_config("coda", None, ["trainer.max_steps"])


def test_method_keys_differ_per_method_and_method_defaults_apply():
    assert "method.use_inter" in valid_keys(load_config("coda"))
    with pytest.raises(ConfigError, match="method.use_inter"):
        load_config("dino", None, ["method.use_inter=false"])
    assert load_config("supcon").views.num_local_views == 0  # SupCon sees no local crops
    assert load_config("coda").views.num_local_views == 12
    with pytest.raises(ConfigError, match="unknown method 'byol'"):
        load_config("byol")


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config("dino", None, ["trainer.max_steps=7", "views.global_scale=[0.3,1.0]", "data.window=[40,400]"])
    (tmp_path / "config.yaml").write_text(dump_config(cfg))
    again = load_config(None, tmp_path / "config.yaml")  # the method name comes from the file
    assert again.method_name == "dino"
    assert config_to_dict(again) == config_to_dict(cfg)
    assert again.views.global_scale == [0.3, 1.0] and again.data.window == [40.0, 400.0]


def test_repo_configs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    files = sorted(root.glob("*.yaml"))
    assert files, "configs/*.yaml missing"
    for f in files:
        load_config(None, f)
    paper = load_config(None, root / "coda_paper.yaml")
    assert paper.backbone.name == "convnext_base" and paper.views.global_size == 224
    assert paper.views.local_size == 96 and paper.views.num_local_views == 12
    assert paper.method.out_dim == 65536 and paper.trainer.batch_size == 64 and paper.trainer.epochs == 800
    assert paper.optim.lr == pytest.approx(1.25e-4)
