"""Task configs: what to evaluate on and how, as typed dataclasses (defaults < task YAML < ``key=value``).

A task YAML (``configs/tasks/*.yaml``) names the data (paths relative to ``data.root``), the labels,
the image size and the protocols with their settings. Overrides are dotted keys
(``data.root=/data knn.k=[10,20,50] protocols=[knn,linear]``); an unknown key is an error that lists
the valid ones. The machinery is pretraining's (``organfm.configtree``); the ``data`` section extends
pretraining's ``DataConfig`` (same keys, same meaning) with what a labelled task adds.

The protocol sections (``knn.*``, ``linear.*``, ...) are not written here: each registered protocol
declares its own config dataclass (``organfm.evaluation.protocol.register_protocol``), and
``TaskConfig`` is built once, when this module is imported, as ``TaskSettings`` plus one section per
registered protocol. The dependency runs one way: this module reads the registry and ``task_data`` (the
``data`` section); no protocol imports this module, since each receives only its own section (and the data
section or splits). Only ``organfm.evaluation.suite`` reads the whole config.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from organfm.configtree import ConfigError, build_tree, flatten, tree_to_dict
from organfm.evaluation.protocol import get_protocol, list_protocols
from organfm.evaluation.task_data import TaskDataConfig

__all__ = ["ReportConfig", "TaskConfig", "TaskSettings", "changed_settings", "load_task",
           "settings_notes", "task_to_dict"]

# ``data=x`` is shorthand for ``data.source=x``, as in pretraining
_SHORTHANDS = {"data": "data.source"}


@dataclass
class ReportConfig:
    """The HTML report's interactive scatter."""

    scatter_points: int = 400  # 0: no scatter
    thumbnail_size: int = 48


@dataclass
class TaskSettings:
    """One evaluation task: data, protocols and where results go (the protocol sections are added below)."""

    name: str = "task"
    note: str = ""  # caveats printed with every result (e.g. a modified split, no patient ids)
    out_dir: str | None = None  # default: eval/<name>-<time>
    protocols: list[str] = field(default_factory=lambda: ["knn", "linear"])
    seed: int = 0
    device: str = "auto"  # auto: cuda when available
    batch_size: int = 256  # feature extraction
    cache_dir: str | None = None  # default: <out_dir>/cache
    allow_leakage: bool = False
    data: TaskDataConfig = field(default_factory=TaskDataConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def data_path(self, path: str | None) -> str | None:
        """``path`` resolved against ``data.root`` (absolute paths and None pass through)."""
        return self.data.resolve(path)


def _task_class() -> type:
    """``TaskSettings`` plus one section per registered protocol that declares a config (``knn``, ...)."""
    sections = []
    for name in list_protocols():
        config = get_protocol(name).config
        if config is not None:
            sections.append((name, config, field(default_factory=config)))
    cls = dataclasses.make_dataclass("TaskConfig", sections, bases=(TaskSettings,))
    cls.__module__ = __name__
    cls.__doc__ = TaskSettings.__doc__.replace(" (the protocol sections are added below)", "") + \
        " Sections: " + ", ".join(n for n, _, _ in sections) + "."
    return cls


TaskConfig = _task_class()


def _validate(cfg: Any) -> None:
    valid = list_protocols()
    unknown = [p for p in cfg.protocols if p not in valid]
    if unknown or not cfg.protocols:
        raise ConfigError(f"protocols: unknown {unknown or 'empty list'}; valid: {', '.join(valid)}")
    if cfg.data.split not in (None, "all"):
        raise ConfigError(f"data.split={cfg.data.split!r}: a task reads every split; choose them with "
                          "data.split_file or data.split_fractions")
    needs_data = [p for p in cfg.protocols if get_protocol(p).inputs != "own"]
    if needs_data and not cfg.data.source:
        raise ConfigError(f"data.source is empty: name the dataset (relative to data.root) for {', '.join(needs_data)}")
    if needs_data and cfg.data.source == "synthetic":
        raise ConfigError("data.source=synthetic: evaluation tasks read labelled files (npz, folders, manifests, ...)")
    _validate_protocol_sections(cfg)


_NON_EMPTY = ("lrs", "weight_decays", "k", "methods")  # grids and lists a protocol loops over
_AT_LEAST_ONE = ("seeds", "epochs", "batch_size")  # counts a protocol loops over
_POSITIVE_ITEMS = ("k", "shots")


def _validate_protocol_sections(cfg: Any) -> None:
    """Protocol settings that would crash deep inside a protocol (``linear.lrs=[]``, ``fewshot.seeds=-3``)."""
    for protocol in list_protocols():
        config = get_protocol(protocol).config
        if config is None:
            continue
        section, default = getattr(cfg, protocol), config()
        for f in dataclasses.fields(section):
            value, dotted = getattr(section, f.name), f"{protocol}.{f.name}"
            if f.name in _NON_EMPTY and isinstance(value, list) and not value:
                raise ConfigError(f"{dotted}=[]: needs at least one value (default {getattr(default, f.name)})")
            if f.name in _AT_LEAST_ONE and isinstance(value, int) and not isinstance(value, bool) and value < 1:
                raise ConfigError(f"{dotted}={value}: must be at least 1 (default {getattr(default, f.name)})")
            if f.name in _POSITIVE_ITEMS and isinstance(value, list) and any(int(v) < 1 for v in value):
                raise ConfigError(f"{dotted}={value}: every value must be at least 1")


def load_task(file: str | os.PathLike[str] | None = None, overrides: list[str] | None = None) -> Any:
    """Resolve a task: dataclass defaults < ``file`` (YAML) < ``overrides`` (``key=value`` strings).

    Args:
        file: a task YAML (nested sections or dotted keys), or a shipped task's name (``mednist``).
        overrides: dotted ``key=value`` strings, values parsed as YAML (``protocols=[knn,linear]``).

    Returns:
        The validated ``TaskConfig``.

    Raises:
        ConfigError: a missing file, an unknown key (the message lists the valid ones), a bad value.
    """
    from organfm.presets import resolve_task_file

    file = resolve_task_file(file) if file is not None and not isinstance(file, dict) else file
    cfg = build_tree(TaskConfig(), file, overrides or [], shorthands=_SHORTHANDS, kind="task")
    _validate(cfg)
    return cfg


def task_to_dict(cfg: Any) -> dict[str, Any]:
    """The resolved task as plain data (for ``results.json``)."""
    return tree_to_dict(cfg)


# the data keys that change what a number means (which images, at what size); the rest is where files are
_DATA_SETTINGS = ("image_size", "max_train", "max_val", "max_test")


# keys that say where files go or how the report looks, never what a number means: not named as overrides
_PLACES = ("out_dir", "cache_dir", "data.root", "report.")


def changed_settings(file_task: Any, task: Any) -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (the task file's value, the value used) for every setting that overrides changed.

    Keys of places (``out_dir``, ``cache_dir``, ``data.root``) and of the report's looks (``report.*``) are left
    out: they change no result.

    Args:
        file_task: the task as its file resolves it (``load_task(file)``).
        task: the task as run (``load_task(file, overrides)``).
    """
    before, after = flatten(task_to_dict(file_task)), flatten(task_to_dict(task))
    return {k: (before.get(k), v) for k, v in after.items()
            if before.get(k) != v and not k.startswith(_PLACES)}


def settings_notes(task: Any, changed: dict[str, tuple[Any, Any]] | None = None) -> list[str]:
    """The report's notes: the task's own note, then what this evaluation actually ran with.

    A task file's note is prose written for the file's values ("200 train volumes, 5 epochs, one seed"); the
    settings line says the values used, and after overrides a second line names each changed key, so a
    report never claims settings it did not run with.

    Args:
        task: the resolved task.
        changed: from :func:`changed_settings` (None or empty: no override).

    Returns:
        Note strings, in the order the report prints them.
    """
    def show(value: Any) -> str:
        return "none" if value is None else str(value)

    parts = [f"protocols {', '.join(task.protocols)}", f"seed {task.seed}"]
    parts += [f"data.{k} {show(getattr(task.data, k))}" for k in _DATA_SETTINGS]
    for protocol in task.protocols:
        section = getattr(task, protocol, None)
        if section is not None and dataclasses.is_dataclass(section):
            values = ", ".join(f"{f.name} {show(getattr(section, f.name))}" for f in dataclasses.fields(section))
            parts.append(f"{protocol}: {values}")
    notes = [task.note] if task.note else []
    notes.append("Settings of this evaluation: " + "; ".join(parts) + ".")
    if changed:
        keys = ", ".join(f"{k}={show(v)} (task file: {show(was)})" for k, (was, v) in changed.items())
        notes.append(f"Overridden for this evaluation: {keys}"
                     + ("; the task's note above describes the file's values." if task.note else "."))
    return notes
