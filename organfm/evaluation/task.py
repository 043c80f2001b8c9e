"""Task configs: what to evaluate on and how, as typed dataclasses (defaults < task YAML < ``key=value``).

A task YAML (``configs/tasks/*.yaml``) names the data (paths relative to ``data.root``), the labels,
the image size and the protocols with their settings. Overrides are dotted keys
(``data.root=/data knn.k=[10,20,50] protocols=[knn,linear]``); an unknown key is an error that lists
the valid ones. Only ``organfm.evaluation.suite`` reads the whole config; protocols get plain kwargs.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# the project's YAML-value coercion and dict flattening, shared with the pretraining config
from organfm.config import ConfigError, _coerce, _flatten, parse_overrides

__all__ = [
    "PROTOCOLS", "ClustersConfig", "FewShotConfig", "FinetuneConfig", "KNNConfig", "LinearConfig", "ReportConfig",
    "SegmentationConfig", "TaskConfig", "TaskDataConfig", "load_task", "task_to_dict", "valid_task_keys",
]

PROTOCOLS = ("knn", "linear", "fewshot", "finetune", "segmentation", "clusters")
_LABEL_SOURCES = ("organ", "label")


@dataclass
class TaskDataConfig:
    """The labelled images (``organfm.data.build_dataset`` kwargs, plus labels, size and CPU caps)."""

    root: str = "../shared/data"  # folder holding the shared data; relative paths below resolve against it
    source: str = ""  # npz | folder | manifest | tar | NIfTI volume (with label_map: organ crops)
    label: str = "organ"  # organ: the organ/folder name is the class; label: the record's label (npz labels)
    class_names: list[str] | None = None  # names of label ids 0..K-1 (label=label with int labels)
    image_size: int = 64
    intensity: str = "minmax"
    window: list[float] | None = None
    label_map: str | None = None
    class_map: str | None = None
    class_map_key: str | None = None
    organs: list[str] | None = None
    min_pixels: int = 64
    dedup: bool = True
    split_seed: int = 0
    split_fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    split_file: str | None = None
    max_train: int | None = None  # stratified, seeded caps per split (CPU budgets); None keeps all
    max_val: int | None = None
    max_test: int | None = None


@dataclass
class KNNConfig:
    """Weighted kNN (``knn_classify``)."""

    k: list[int] = field(default_factory=lambda: [10, 20])
    temperature: float = 0.07


@dataclass
class LinearConfig:
    """Linear-probe grid (``linear_probe``)."""

    lrs: list[float] = field(default_factory=lambda: [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0])
    weight_decays: list[float] = field(default_factory=lambda: [0.0, 1e-4, 1e-3, 1e-2])
    epochs: int = 100
    batch_size: int = 256


@dataclass
class FewShotConfig:
    """Few-shot subsets (``run_few_shot``) and the learners run on them."""

    fractions: list[float] = field(default_factory=lambda: [0.01, 0.1, 0.2, 0.5])
    shots: list[int] = field(default_factory=lambda: [1, 5, 10])
    seeds: int = 10
    methods: list[str] = field(default_factory=lambda: ["linear", "finetune"])


@dataclass
class FinetuneConfig:
    """Full fine-tuning (``finetune_classification`` kwargs), also used by few-shot fine-tuning."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    layer_decay: float | None = None
    patience: int = 5
    seeds: int = 1
    monitor: str = "balanced_accuracy"
    augment: bool = True
    max_train: int | None = None  # a smaller training set for CPU runs


@dataclass
class SegmentationConfig:
    """U-Net fine-tuning on CT slices (``load_ct_segmentation_slices`` + ``finetune_segmentation``)."""

    image: str | None = None  # default: data.source
    label_map: str | None = None  # default: data.label_map
    classes: list[str] | None = None  # organ names, ids 1..C in this order; None: every class present
    window: list[float] = field(default_factory=lambda: [40.0, 400.0])
    image_size: int = 64
    block_size: int = 8
    fractions: list[float] = field(default_factory=lambda: [0.6, 0.2, 0.2])
    gap: int = 1
    min_foreground: int = 10
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 10
    seeds: int = 1


@dataclass
class ClustersConfig:
    """Organ-embedding analysis (``cluster_scores`` + ``embed_2d``)."""

    split: str = "test"  # train | val | test | all
    embeddings: list[str] = field(default_factory=lambda: ["tsne", "umap"])
    color_by: list[str] = field(default_factory=lambda: ["class"])  # class, organ, split or a metadata column
    max_points: int = 2000
    k: int = 20
    perplexity: float = 30.0


@dataclass
class ReportConfig:
    """The HTML report's interactive scatter."""

    scatter_points: int = 400  # 0: no scatter
    thumbnail_size: int = 48


@dataclass
class TaskConfig:
    """One evaluation task: data, protocols and where results go."""

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
    knn: KNNConfig = field(default_factory=KNNConfig)
    linear: LinearConfig = field(default_factory=LinearConfig)
    fewshot: FewShotConfig = field(default_factory=FewShotConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    clusters: ClustersConfig = field(default_factory=ClustersConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def data_path(self, path: str | None) -> str | None:
        """``path`` resolved against ``data.root`` (absolute paths and None pass through)."""
        if path is None:
            return None
        p = Path(os.path.expanduser(path))
        return str(p if p.is_absolute() else Path(os.path.expanduser(self.data.root)) / p)


_SECTIONS = ("data", "knn", "linear", "fewshot", "finetune", "segmentation", "clusters", "report")


def valid_task_keys(cfg: TaskConfig | None = None) -> list[str]:
    """Every dotted key a task file or override may set."""
    cfg = cfg or TaskConfig()
    keys = [f.name for f in dataclasses.fields(cfg) if f.name not in _SECTIONS]
    for section in _SECTIONS:
        keys += [f"{section}.{f.name}" for f in dataclasses.fields(getattr(cfg, section))]
    return keys


def _set(cfg: TaskConfig, dotted: str, value: Any) -> None:
    section, dot, name = dotted.partition(".")
    obj: Any = cfg
    if dot:
        if section not in _SECTIONS or "." in name:
            raise ConfigError(f"unknown task key {dotted!r}; valid keys: {', '.join(valid_task_keys(cfg))}")
        obj = getattr(cfg, section)
    else:
        name = section
        if name in _SECTIONS:
            raise ConfigError(f"task key {dotted!r} is a section; set its keys, e.g. {name}.<key>=...")
    fields = {f.name for f in dataclasses.fields(obj)}
    if name not in fields:
        raise ConfigError(f"unknown task key {dotted!r}; valid keys: {', '.join(valid_task_keys(cfg))}")
    setattr(obj, name, _coerce(value, typing.get_type_hints(type(obj))[name], dotted))


def _validate(cfg: TaskConfig) -> None:
    unknown = [p for p in cfg.protocols if p not in PROTOCOLS]
    if unknown or not cfg.protocols:
        raise ConfigError(f"protocols: unknown {unknown or 'empty list'}; valid: {', '.join(PROTOCOLS)}")
    if cfg.data.label not in _LABEL_SOURCES:
        raise ConfigError(f"data.label must be one of {', '.join(_LABEL_SOURCES)}, got {cfg.data.label!r}")
    bad = [m for m in cfg.fewshot.methods if m not in ("linear", "finetune")]
    if bad:
        raise ConfigError(f"fewshot.methods: unknown {bad}; valid: linear, finetune")
    bad = [e for e in cfg.clusters.embeddings if e not in ("tsne", "umap")]
    if bad:
        raise ConfigError(f"clusters.embeddings: unknown {bad}; valid: tsne, umap")
    if cfg.clusters.split not in ("train", "val", "test", "all"):
        raise ConfigError(f"clusters.split must be train, val, test or all, got {cfg.clusters.split!r}")
    if not cfg.data.source and any(p != "segmentation" for p in cfg.protocols):
        raise ConfigError("data.source is empty: name the dataset (relative to data.root)")


def load_task(file: str | os.PathLike[str] | None = None, overrides: list[str] | None = None) -> TaskConfig:
    """Resolve a task: dataclass defaults < ``file`` (YAML) < ``overrides`` (``key=value`` strings).

    Args:
        file: a task YAML (nested sections or dotted keys).
        overrides: dotted ``key=value`` strings, values parsed as YAML (``protocols=[knn,linear]``).

    Returns:
        The validated task config.

    Raises:
        ConfigError: a missing file, an unknown key (the message lists the valid ones), a bad value.
    """
    cfg = TaskConfig()
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"task file {path} does not exist")
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(tree, dict):
            raise ConfigError(f"task file {path} must hold a mapping")
        try:
            for key, value in _flatten(tree).items():
                _set(cfg, key, value)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    for key, value in parse_overrides(overrides or []).items():
        _set(cfg, key, value)
    _validate(cfg)
    return cfg


def task_to_dict(cfg: TaskConfig) -> dict[str, Any]:
    """The resolved task as plain data (for ``results.json``)."""
    return dataclasses.asdict(cfg)
