"""The shipped recipes and task files, by name: ``--config coda``, ``--config small/coda``, ``--task mednist``.

One copy of each file: the repository's ``configs/`` (a checkout reads it in place; a wheel ships it as the
package data ``organfm/configs``, see ``setup.py``). A name that is an existing file is that file; otherwise
it is looked up in the shipped folder (with or without ``.yaml``, with or without a leading ``configs/``),
so ``--config configs/coda.yaml`` also works from any folder. Task names look in ``tasks/`` first.

Data roots: a task's ``data.root`` left unset is :func:`default_data_root` (``$ORGANFM_DATA``, else the
``shared/data`` folder beside a checkout), never the current folder.
"""
from __future__ import annotations

import os
from pathlib import Path

from organfm.configtree import ConfigError

__all__ = ["DATA_ENV", "config_folder", "default_data_root", "list_presets", "resolve_config_file",
           "resolve_task_file"]

DATA_ENV = "ORGANFM_DATA"


def config_folder() -> Path:
    """The shipped ``configs`` folder: ``organfm/configs`` in an installed wheel, else the checkout's."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "configs", package.parent / "configs"):
        if candidate.is_dir():
            return candidate
    return package / "configs"


def list_presets(kind: str = "config") -> list[str]:
    """Names ``--config`` (``kind="config"``) or ``--task`` (``kind="task"``) accepts, e.g. ``small/coda``."""
    root = config_folder()
    if kind == "task":
        return sorted(p.stem for p in (root / "tasks").glob("*.yaml"))
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.yaml")
                  if p.parent.name != "tasks")


def resolve_config_file(name: str | os.PathLike[str]) -> Path:
    """``name`` as a file, or the shipped recipe it names (``coda``, ``small/coda``, ``configs/coda.yaml``).

    Raises:
        ConfigError: neither a file nor a shipped name; the message lists the shipped names.
    """
    return _resolve(name, "config", ("",))


def resolve_task_file(name: str | os.PathLike[str]) -> Path:
    """``name`` as a file, or the shipped task file it names (``mednist``, ``tasks/mednist``).

    Raises:
        ConfigError: neither a file nor a shipped task name; the message lists them.
    """
    return _resolve(name, "task", ("tasks/", ""))


def default_data_root() -> str:
    """Where shared data lives when a task does not say: ``$ORGANFM_DATA``, else ``<checkout>/../shared/data``."""
    env = os.environ.get(DATA_ENV)
    if env:
        return str(Path(env).expanduser())
    checkout = Path(__file__).resolve().parent.parent
    return str((checkout.parent / "shared" / "data").resolve())


def _resolve(name: str | os.PathLike[str], kind: str, prefixes: tuple[str, ...]) -> Path:
    path = Path(name).expanduser()
    if path.is_file():
        return path
    text = Path(name).as_posix()
    stem = text[len("configs/"):] if text.startswith("configs/") else text
    root = config_folder()
    if not path.is_absolute():
        for prefix in prefixes:
            for candidate in (root / f"{prefix}{stem}", root / f"{prefix}{stem}.yaml"):
                if candidate.is_file():
                    return candidate
    flag = "--task" if kind == "task" else "--config"
    raise ConfigError(f"{kind} file {name} does not exist, and no shipped {kind} has that name; {flag} takes a "
                      f"file or one of: {', '.join(list_presets(kind))}")
