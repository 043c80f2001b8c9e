"""Method registry: one decorator per method, its ``method.*`` config derived from its constructor.

``@register_method("coda")`` on a :class:`~organfm.methods.base.Method` subclass registers it and builds
``Coda.Config``, a dataclass with one field per keyword-only constructor argument (same name, type and
default). So the CLI's defaults and ``create_method("coda", backbone=b)`` are one set of defaults, written
once, in the constructor.
"""
from __future__ import annotations

from typing import Any

from organfm.configtree import config_from_signature
from organfm.registry import METHODS

__all__ = ["create_method", "get_method", "list_methods", "register_method"]


def register_method(name: str):
    """Class decorator: register a :class:`Method` under ``name`` and derive its ``Config`` dataclass.

    The constructor must be ``__init__(self, backbone, *, key=default, ...)``; every keyword-only argument
    becomes a ``method.<key>`` config key (lists and tuples become list fields).
    """

    def wrap(cls: type) -> type:
        cls.name = name
        cls.Config = config_from_signature(cls, name=f"{cls.__name__}Config", section="method")
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
