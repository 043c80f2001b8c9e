"""configtree: defaults < YAML < overrides on any dataclass tree, typed, with errors that list the valid keys."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from organfm.configtree import (ConfigError, build_tree, coerce, flatten, parse_overrides, set_dotted,
                                tree_to_dict, unknown_key_message, valid_keys)


@dataclass
class Inner:
    lr: float = 0.1
    ks: list[int] = field(default_factory=lambda: [1, 2])
    name: str | None = None
    mode: Literal["a", "b"] = "a"


@dataclass
class Leaf:
    depth: int = 1


@dataclass
class Root:
    seed: int = 0
    flag: bool = False
    inner: Inner = field(default_factory=Inner)
    dynamic: Any = None  # a section only when it holds a dataclass instance (as pretraining's ``method``)


def test_coerce_known_answers():
    assert coerce("1e-4", float, "k") == pytest.approx(1e-4) and isinstance(coerce(3, float, "k"), float)
    assert coerce("4", int, "k") == 4 and coerce(4.0, int, "k") == 4
    assert coerce("a,b", list[str], "k") == ["a", "b"] and coerce("[1, 2]", list[int], "k") == [1, 2]
    assert coerce(7, list[int], "k") == [7]
    assert coerce("none", int | None, "k") is None and coerce("3", int | None, "k") == 3
    assert coerce("yes", bool, "k") is True and coerce("0", bool, "k") is False
    for value, tp, msg in [(1.5, int, "k: expected an integer"), (True, int, "expected a number"),
                           ("maybe", bool, "true/false"), ([1], str, "expected a string"),
                           ("c", Literal["a", "b"], "k must be one of a, b")]:
        with pytest.raises(ConfigError, match=msg):
            coerce(value, tp, "k")


def test_flatten_and_parse_overrides():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}
    # YAML 1.1 reads "1e-3" as a string: coerce() turns it into a float once the field type is known
    assert parse_overrides(["a.b=1e-3", "x=[1,2]", "y=", "z=0.5"]) == {"a.b": "1e-3", "x": [1, 2], "y": None,
                                                                      "z": 0.5}
    with pytest.raises(ConfigError, match="not of the form key=value"):
        parse_overrides(["novalue"])


def test_build_tree_layers_defaults_file_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("seed: 3\ninner:\n  lr: 1e-2\n  ks: [5]\n  name: x\n")
    cfg = build_tree(Root(), f, ["inner.lr=0.5", "flag=true", "short=b"], shorthands={"short": "inner.mode"})
    assert (cfg.seed, cfg.flag, cfg.inner.lr, cfg.inner.ks, cfg.inner.name, cfg.inner.mode) == (
        3, True, 0.5, [5], "x", "b")
    assert tree_to_dict(cfg) == {"seed": 3, "flag": True, "dynamic": None,
                                 "inner": {"lr": 0.5, "ks": [5], "name": "x", "mode": "b"}}


def test_dynamic_section_and_mapping_values():
    cfg = Root(dynamic=Leaf())
    assert valid_keys(cfg) == ["seed", "flag", "inner.lr", "inner.ks", "inner.name", "inner.mode", "dynamic.depth"]
    set_dotted(cfg, "dynamic.depth", "4")
    set_dotted(cfg, "inner", {"lr": "2"})
    assert cfg.dynamic.depth == 4 and cfg.inner.lr == 2.0


def test_unknown_key_message_suggests_the_three_closest_keys():
    valid = ["trainer.max_steps", "trainer.seed", "trainer.epochs", "trainer.log_every", "data.source"]
    assert unknown_key_message("trainer.max_step", valid).endswith("did you mean trainer.max_steps?")
    assert "did you mean trainer.max_steps?" in unknown_key_message("traner.max_steps", valid)  # a section typo
    many = unknown_key_message("trainer.ep", ["trainer.epa", "trainer.epb", "trainer.epc", "trainer.epd"])
    assert many.count(" or ") == 2  # three suggestions at most
    assert unknown_key_message("nothing.like.it", valid) == \
        "unknown config key 'nothing.like.it'; valid keys: " + ", ".join(valid)


def test_errors_name_the_key_the_file_and_the_valid_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown task key 'inner\.lrr'; did you mean inner\.lr\?"):
        build_tree(Root(), None, ["inner.lrr=1"], kind="task")
    with pytest.raises(ConfigError, match=r"unknown task key 'inner\.zzz'; valid keys of inner: inner\.lr"):
        build_tree(Root(), None, ["inner.zzz=1"], kind="task")
    with pytest.raises(ConfigError, match="unknown config key 'seed.x'"):
        set_dotted(Root(), "seed.x", 1)
    with pytest.raises(ConfigError, match="config key 'inner' is a section"):
        set_dotted(Root(), "inner", 3)
    bad = tmp_path / "bad.yaml"
    bad.write_text("inner:\n  colour: red\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'inner\.colour'"):
        build_tree(Root(), bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        build_tree(Root(), bad)
    with pytest.raises(ConfigError, match="does not exist"):
        build_tree(Root(), tmp_path / "missing.yaml")
