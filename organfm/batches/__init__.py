"""Batch sources: where a method's batches come from.

A method names its source (``Method.batch_source``); the engine builds it with :func:`create_batch_source`
and only ever sees the :class:`BatchSource` it returns: an endless iterable of batches plus what the run
needs to know about the data (epoch length, organs, the input contract of the exported backbone, and the
constructor arguments the data fixes, such as a 3D backbone's ``spatial_dims``).

Built in: ``views`` (multi-view crops of an image dataset, made per sample or on the device),
``synthetic_pairs`` (RaSD's online buffer of synthetic image/label pairs), ``features`` (views plus stored
teacher features, MMKD), ``captioned`` (views with each image's text, CLIP), ``volumes`` (3D volumes with
SimMIM masks, Triad) and ``organ_sets`` (a set of organ images per subject, Pan-FM). A new source is one registered function in its own module.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from organfm.config import DataConfig, ViewsConfig
from organfm.registry import Registry

__all__ = ["BatchSource", "SourceContext", "create_batch_source", "list_batch_sources", "register_batch_source"]


@dataclass
class SourceContext:
    """What every source may read: the data and view sections plus the run's geometry.

    Attributes:
        data: the ``data.*`` section.
        views: the ``views.*`` section.
        batch_size: items per micro-batch on this rank.
        accumulate: micro-batches per optimisation step.
        seed: the run seed.
        start_batch: micro-batches this rank already consumed (resume point).
        rank: this process's global rank.
        world_size: number of processes.
        num_workers: loader worker processes.
        steps_per_epoch: ``trainer.steps_per_epoch`` (None: the source decides).
        run_dir: the run folder (skip logs live there).
        options: the method's ``source_keys`` values (``{key: method.<key>}``).
    """

    data: DataConfig
    views: ViewsConfig
    batch_size: int
    accumulate: int = 1
    seed: int = 0
    start_batch: int = 0
    rank: int = 0
    world_size: int = 1
    num_workers: int = 0
    steps_per_epoch: int | None = None
    run_dir: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class BatchSource:
    """A method's batches and the facts about them that the run records.

    Attributes:
        batches: an endless iterable of batches (CPU tensors; a ``DataLoader`` is set up by Fabric).
        steps_per_epoch: optimisation steps per epoch (the schedules' unit).
        contract: what the exported backbone expects: ``input_size``, ``mean``, ``std``, ``organs``,
            ``intensity`` (written into ``backbone.json``).
        method_kwargs: constructor arguments the data fixes (added to the ``method.*`` config).
        backbone_kwargs: backbone arguments the data fixes (e.g. ``spatial_dims``).
        summary: ``summary(steps_done) -> dict`` for ``data.json`` (counts, skips, generator settings).
        num_items: ``num_items(steps_done) -> int``: distinct items seen or available, for the summary line.
        write_run_files: ``write_run_files(run_dir)`` writes e.g. ``splits.csv`` (rank 0 only).
        on_device: ``on_device(batch) -> batch``, applied by the engine after a batch reaches the device
            (e.g. views made there from uint8 images); None: batches are used as they come.
        monitor: ``monitor(n) -> batch``: the fixed batch of ``n`` items the health monitor measures on
            (``organfm.batches.monitor``): a training-style batch plus ``monitor_input`` (what the exported
            network sees) and, where labels exist, ``monitor_label``; None: no monitor.
        input_sizes: the config keys that set an input's spatial size, with their values (e.g.
            ``{"views.local_size": 32}``), checked against the backbone's minimum input before training.
    """

    batches: Iterable[dict]
    steps_per_epoch: int
    contract: dict[str, Any]
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    summary: Callable[[int], dict[str, Any]] = lambda steps: {}
    num_items: Callable[[int], int] = lambda steps: 0
    write_run_files: Callable[[Path], None] = lambda run_dir: None
    on_device: Callable[[dict], dict] | None = None
    monitor: Callable[[int], dict] | None = None
    input_sizes: dict[str, int] = field(default_factory=dict)


_SOURCES: Registry[Callable[[SourceContext], BatchSource]] = Registry(
    "batch source", builtins=("organfm.batches.views", "organfm.batches.synthetic", "organfm.batches.features",
                              "organfm.batches.volumes", "organfm.batches.organ_sets",
                              "organfm.batches.captioned"))
register_batch_source = _SOURCES.register


def create_batch_source(name: str, ctx: SourceContext) -> BatchSource:
    """Build the registered source ``name`` for this run."""
    return _SOURCES.get(name)(ctx)


def list_batch_sources() -> list[str]:
    """The registered source names, sorted (the built-ins and any registered since)."""
    return _SOURCES.names()
