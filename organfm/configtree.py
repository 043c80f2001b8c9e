"""A tree of typed dataclasses resolved as defaults < a YAML mapping < dotted ``key=value`` overrides.

This is the config machinery shared by pretraining (``organfm.config``) and evaluation tasks
(``organfm.evaluation.task``). It knows no concrete config: a *tree* is any dataclass instance whose
fields are either leaves (typed values) or sections (fields whose current value is itself a dataclass
instance, so a section typed ``Any`` that holds a method's dataclass at run time works too).

Typical use::

    cfg = build_tree(TaskConfig(), file="configs/tasks/x.yaml", overrides=["knn.k=[10,20]", "data=x.npz"],
                     shorthands={"data": "data.source"})
    tree_to_dict(cfg)   # plain nested dicts, YAML/JSON ready

Rules:
    - YAML values are coerced to the field's annotation (``coerce``): ``1e-4`` becomes a float,
      ``"a,b"`` a ``list[str]``, ``"none"`` None for optional fields, ``Literal`` values are checked.
    - An unknown key raises ``ConfigError`` naming it and listing every valid dotted key.
    - A shorthand maps a short key to a dotted one (``data=x`` -> ``data.source=x``).
    - Setting a section to a mapping sets its keys (``{"data": {"root": "/d"}}``); setting a
      section to a scalar is an error unless a shorthand names it.
"""
from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = [
    "unknown_key_message",
    "ConfigError", "apply_overrides", "build_tree", "coerce", "config_from_signature", "flatten", "is_section",
    "load_yaml_mapping",
    "parse_overrides", "set_dotted", "tree_to_dict", "valid_keys",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override names an unknown key or holds a value of the wrong type."""


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML value to the annotation ``tp`` (so ``1e-4`` is a float, not a string).

    Args:
        value: the parsed YAML value (or an override string).
        tp: the field's resolved annotation (``int``, ``float | None``, ``list[str]``, ``Literal[...]``, ...).
        key: the dotted key, named in errors.

    Returns:
        The value with the field's type.

    Raises:
        ConfigError: the value cannot be read as ``tp``; the message names ``key``.
    """
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if origin is list or tp is list:
        (inner,) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.startswith("[") else [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        kt, vt = typing.get_args(tp) or (Any, Any)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {coerce(k, kt, key): coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if tp is int:
            if number != int(number):
                raise ConfigError(f"{key}: expected an integer, got {value!r}")
            return int(number)
        return number
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


def _as_list_type(tp: Any) -> Any:
    """``tuple[float, float]`` -> ``list[float]``: YAML has lists only, and ``coerce`` checks list items."""
    if typing.get_origin(tp) is tuple:
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return list[args[0]] if args and all(a == args[0] for a in args) else list
    return tp


def config_from_signature(cls: type, *, name: str, section: str,
                          extra: Iterable[tuple[str, Any, Any]] = ()) -> type:
    """A config dataclass whose fields are the keyword-only arguments of ``cls.__init__``.

    The constructor is the one place a default is written: each field has the argument's name, type and
    default, so a new argument is a new config key with no second edit. Tuples become lists (YAML has no
    tuples; ``coerce`` then checks their items).

    Args:
        cls: the class whose constructor declares the keys (``Coda``, ``GlobalLocalViews``).
        name: the dataclass's name (``CodaConfig``, ``ViewsConfig``).
        section: the keys' section, named in errors and the docstring (``method``, ``views``).
        extra: ``(name, type, default)`` fields that are config but not constructor arguments, appended in
            order (``views.on_device`` says *where* views are made, not *what* they are).

    Returns:
        The dataclass type, with ``__module__`` set to ``cls``'s.

    Raises:
        TypeError: a keyword-only argument has no default (every config key needs one).
    """
    hints = typing.get_type_hints(cls.__init__)
    fields = []
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        if p.default is inspect.Parameter.empty:
            raise TypeError(f"{cls.__name__}.__init__: keyword argument {p.name!r} needs a default "
                            f"(it is a {section}.* config key)")
        fields.append((p.name, _as_list_type(hints.get(p.name, Any)), p.default))
    specs = []
    for key, tp, default in [*fields, *extra]:
        # a mutable default is built per instance, so two configs never share one list
        spec = (dataclasses.field(default_factory=lambda d=default: list(d)) if isinstance(default, (list, tuple))
                else dataclasses.field(default=default))
        specs.append((key, tp, spec))
    config = dataclasses.make_dataclass(name, specs)
    config.__doc__ = f"``{section}.*`` keys of {cls.__name__}: its constructor's keyword arguments and defaults."
    config.__module__ = cls.__module__
    return config


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": 2}`` -> ``{"a.b": 1, "c": 2}`` (nested mappings become dotted keys)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["a.b=1", "data=x"]`` -> ``{"a.b": 1, "data": "x"}`` (values parsed as YAML scalars/lists).

    Raises:
        ConfigError: an item is not of the form ``key=value``.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
        out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
    return out


def is_section(value: Any) -> bool:
    """True for a dataclass *instance* (a section of the tree), False for leaves and dataclass types."""
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def valid_keys(tree: Any, shorthands: Mapping[str, str] | None = None, prefix: str = "") -> list[str]:
    """Every dotted leaf key of ``tree`` (shorthands first), in field order."""
    keys = list(shorthands or {}) if not prefix else []
    for f in dataclasses.fields(tree):
        value = getattr(tree, f.name)
        if is_section(value):
            keys += valid_keys(value, prefix=f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def unknown_key_message(dotted: str, valid: Iterable[str], kind: str = "config") -> str:
    """``unknown config key 'trainer.max_step'; did you mean trainer.max_steps?`` (up to 3 close keys).

    A key of a known section is compared with that section's keys; otherwise with every key. Without a close
    key the message lists the section's valid keys (or the sections).
    """
    import difflib

    valid = list(valid)
    section, _, leaf = dotted.rpartition(".")
    leaves = [k.rpartition(".")[2] for k in valid if k.rpartition(".")[0] == section] if section else []
    if leaves:
        close = [f"{section}.{m}" for m in difflib.get_close_matches(leaf, leaves, n=3, cutoff=0.6)]
    else:
        close = difflib.get_close_matches(dotted, valid, n=3, cutoff=0.75)
    if close:
        return f"unknown {kind} key {dotted!r}; did you mean {' or '.join(close)}?"
    if leaves:
        return f"unknown {kind} key {dotted!r}; valid keys of {section}: {', '.join(f'{section}.{k}' for k in leaves)}"
    return f"unknown {kind} key {dotted!r}; valid keys: {', '.join(valid)}"


def set_dotted(tree: Any, dotted: str, value: Any, shorthands: Mapping[str, str] | None = None,
               kind: str = "config") -> None:
    """Set one leaf by its dotted key, coercing ``value`` to the field's annotation.

    Args:
        tree: the root dataclass instance (changed in place).
        dotted: ``"section.key"`` (any depth), a top-level leaf, or a shorthand.
        value: the raw value; a mapping given for a section sets that section's keys.
        shorthands: short key -> dotted key (``{"data": "data.source"}``).
        kind: what the keys belong to, in errors (``"unknown task key 'x'"``).

    Raises:
        ConfigError: unknown key (the message lists the valid ones), a section set to a scalar, a bad value.
    """
    shorthands = shorthands or {}
    dotted = shorthands.get(dotted, dotted)
    obj = tree
    parts = dotted.split(".")
    for depth, part in enumerate(parts):
        fields = {f.name for f in dataclasses.fields(obj)} if is_section(obj) else set()
        if part not in fields:
            raise ConfigError(unknown_key_message(dotted, valid_keys(tree, shorthands), kind))
        current = getattr(obj, part)
        if depth == len(parts) - 1:
            if is_section(current):
                if isinstance(value, Mapping):
                    for sub, v in flatten(value).items():
                        set_dotted(tree, f"{dotted}.{sub}", v, kind=kind)
                    return
                raise ConfigError(f"{kind} key {dotted!r} is a section; set its keys, e.g. {dotted}.<key>=...")
            setattr(obj, part, coerce(value, typing.get_type_hints(type(obj))[part], dotted))
            return
        obj = current


def apply_overrides(tree: T, overrides: Mapping[str, Any], shorthands: Mapping[str, str] | None = None,
                    kind: str = "config") -> T:
    """Set every ``dotted -> value`` pair of ``overrides`` (see ``set_dotted``); returns ``tree``."""
    for key, value in overrides.items():
        set_dotted(tree, key, value, shorthands, kind)
    return tree


def load_yaml_mapping(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """The mapping held by a YAML file (empty file -> ``{}``).

    Raises:
        ConfigError: the file is missing, is not valid YAML, or does not hold a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {path} is not valid YAML: {e}") from None
    except UnicodeDecodeError as e:  # binary garbage, or a file saved in another encoding
        raise ConfigError(f"{what} {path} is not a text (UTF-8 YAML) file: undecodable byte at offset {e.start}; "
                          "pass the YAML file itself") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{what} {path} must hold a mapping, not {type(tree).__name__}")
    return tree


def build_tree(defaults: T, file: str | Path | Mapping[str, Any] | None = None,
               overrides: Iterable[str] | Mapping[str, Any] | None = None,
               shorthands: Mapping[str, str] | None = None, kind: str = "config") -> T:
    """Resolve ``defaults`` < ``file`` < ``overrides`` in place and return the tree.

    Args:
        defaults: the root dataclass instance holding the defaults (changed in place).
        file: a YAML file path (nested sections and/or dotted keys), or an already-loaded mapping.
        overrides: ``key=value`` strings (parsed by ``parse_overrides``) or a ``dotted -> value`` mapping.
        shorthands: short key -> dotted key.
        kind: what the keys belong to, in errors (``"task"``: "task file x does not exist", "unknown task key").

    Raises:
        ConfigError: see ``set_dotted``; errors from the file are prefixed with its path.
    """
    if file is not None:
        tree = file if isinstance(file, Mapping) else load_yaml_mapping(file, f"{kind} file")
        try:
            apply_overrides(defaults, flatten(tree), shorthands, kind)
        except ConfigError as e:
            raise ConfigError(f"{file if not isinstance(file, Mapping) else kind + ' file'}: {e}") from None
    if overrides is not None:
        pairs = overrides if isinstance(overrides, Mapping) else parse_overrides(overrides)
        apply_overrides(defaults, pairs, shorthands, kind)
    return defaults


def tree_to_dict(tree: Any) -> dict[str, Any]:
    """The tree as plain nested dicts (sections become dicts; YAML/JSON ready)."""
    return dataclasses.asdict(tree)
