"""Method registry: one decorator per method, its ``method.*`` config derived from its constructor.

``@register_method("coda")`` on a :class:`~organfm.methods.base.Method` subclass registers it and builds
``Coda.Config``, a dataclass with one field per keyword-only constructor argument (same name, type and
default). So the CLI's defaults and ``create_method("coda", backbone=b)`` are one set of defaults, written
once, in the constructor.
"""
from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any

from organfm.registry import METHODS

__all__ = ["create_method", "get_method", "list_methods", "register_method"]


def _config_from_signature(cls: type) -> type:
    """A dataclass of the keyword-only arguments of ``cls.__init__`` that have defaults."""
    hints = typing.get_type_hints(cls.__init__)
    fields = []
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        if p.default is inspect.Parameter.empty:
            raise TypeError(f"{cls.__name__}.__init__: keyword argument {p.name!r} needs a default "
                            "(it is a method.* config key)")
        default = p.default
        spec = (dataclasses.field(default_factory=lambda d=default: list(d)) if isinstance(default, (list, tuple))
                else dataclasses.field(default=default))
        fields.append((p.name, hints.get(p.name, Any), spec))
    config = dataclasses.make_dataclass(f"{cls.__name__}Config", fields)
    config.__doc__ = f"``method.*`` keys of {cls.__name__}: its constructor's keyword arguments and defaults."
    config.__module__ = cls.__module__
    return config


def register_method(name: str):
    """Class decorator: register a :class:`Method` under ``name`` and derive its ``Config`` dataclass.

    The constructor must be ``__init__(self, backbone, *, key=default, ...)``; every keyword-only argument
    becomes a ``method.<key>`` config key (lists and tuples become list fields).
    """

    def wrap(cls: type) -> type:
        cls.name = name
        cls.Config = _config_from_signature(cls)
        return METHODS.register(name)(cls)

    return wrap


def get_method(name: str) -> type:
    """The registered method class ``name``; unknown names list the valid ones."""
    return METHODS.get(name)


def create_method(name: str, **kwargs: Any):
    """Build method ``name``: ``backbone=...`` plus any ``method.*`` keys; absent keys take the defaults."""
    return METHODS.create(name, **kwargs)


def list_methods() -> list[str]:
    return METHODS.names()
