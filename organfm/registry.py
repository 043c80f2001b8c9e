"""One small generic registry: every named concept (backbones, methods, readers, ...) uses it."""
from __future__ import annotations

import importlib
from typing import Any, Callable, Generic, TypeVar

__all__ = ["METHODS", "Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps stable snake_case names to constructors.

    Args:
        kind: What is registered ("backbone", "method", ...), used in error messages.
        builtins: Modules that register the built-in entries when imported; they are imported on the first
            lookup, so code that only *uses* the registry (the config layer, the engine) never imports the
            implementations.
    """

    def __init__(self, kind: str, *, builtins: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._builtins = builtins
        self._entries: dict[str, Callable[..., T]] = {}

    def _load_builtins(self) -> None:
        modules, self._builtins = self._builtins, ()
        for module in modules:
            importlib.import_module(module)

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator that registers a class or factory function under ``name``."""

        def wrap(fn: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = fn
            return fn

        return wrap

    def get(self, name: str) -> Callable[..., T]:
        """The constructor registered as ``name``; unknown names list the valid ones."""
        self._load_builtins()
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}")
        return self._entries[name]

    def create(self, name: str, **kwargs: Any) -> T:
        """Construct ``name``; ``None`` kwargs are dropped so component defaults win."""
        return self.get(name)(**{k: v for k, v in kwargs.items() if v is not None})

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._load_builtins()
        return name in self._entries


# Pretraining methods: shared by the config layer (which reads a method's declared config) and
# ``organfm.methods`` (which registers them), so that neither imports the other's modules.
METHODS: Registry = Registry("method", builtins=("organfm.methods",))
