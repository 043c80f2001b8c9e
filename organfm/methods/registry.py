"""Method registry: ``register_method`` / ``create_method`` / ``list_methods``."""
from __future__ import annotations

from typing import Any

from organfm.registry import Registry

__all__ = ["create_method", "list_methods", "register_method"]

_METHODS: Registry = Registry("method")
register_method = _METHODS.register


def create_method(name: str, **kwargs: Any):
    """Build the method ``name`` from explicit kwargs (``backbone=...`` plus its ``method.*`` config)."""
    return _METHODS.create(name, **kwargs)


def list_methods() -> list[str]:
    return _METHODS.names()
