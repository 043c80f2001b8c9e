"""Config flows one way: dataclass defaults < method defaults < YAML file < ``key=value`` overrides.

The resolved config is a tree of typed dataclasses. Only the boundary (``engine/pretrain.py``) reads it;
every object below receives plain constructor kwargs (``dataclasses.asdict(cfg.method)``).

The ``method`` section is the method's own ``Config`` (derived from its constructor by
``organfm.methods.register_method``) and its ``section_defaults``; they are looked up by name in
``organfm.registry.METHODS``, so this module imports no method.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from organfm import configtree
from organfm.configtree import ConfigError
from organfm.registry import METHODS
from organfm.views.recipes import GlobalLocalViews

__all__ = [
    "BackboneConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "OptimConfig",
    "TeacherConfig",
    "TrainerConfig",
    "ViewsConfig",
    "apply_overrides",
    "config_to_dict",
    "dump_config",
    "load_config",
    "new_config",
    "parse_overrides",
    "valid_keys",
    "validate",
]


@dataclass
class DataConfig:
    """Where images come from (see ``organfm.data.build_dataset`` for the meaning of each key)."""

    source: str = "synthetic"  # folder | manifest | .npz | .tar/.tar.gz | NIfTI/DICOM | synthetic
    split: str | None = "train"
    organ_from: str = "auto"
    label_map: str | None = None
    class_map: str | None = None
    class_map_key: str | None = None
    organs: list[str] | None = None
    label_columns: list[str] | None = None  # subject manifests: the label columns (others ignored); None: all extra
    dedup: bool = True
    split_seed: int = 0
    split_file: str | None = None
    intensity: str = "minmax"
    window: list[float] | None = None
    on_error: str = "raise"
    max_member_bytes: int = 512 << 20  # an archive member may expand to this much (gzip bombs are refused)
    max_image_pixels: int = 1 << 27  # checked before any pixel of an image is decoded
    # checked from the header before a volume is inflated or allocated (organfm.data.voxel_cap): one NIfTI,
    # DICOM series or npz volume; and one npz array, all rows together (numpy inflates a member whole)
    max_volume_voxels: int = 1 << 28
    max_array_voxels: int = 1 << 29
    # the embedded default: synthetic images, generated on the fly (organs for image methods, image/label
    # pairs for a method fed by the synthetic-pair source; ``synthetic_dim`` and ``synthetic_refresh`` are theirs)
    synthetic_organs: int = 8
    synthetic_images_per_organ: int = 128
    synthetic_size: int = 64
    synthetic_labels: int = 6
    synthetic_seed: int = 0
    # synthetic subjects (Pan-FM): item i is the generator's subject synthetic_index_offset + i, and the organ
    # carrying the strong disease mark; the same seed with another offset gives other subjects of the same world
    synthetic_index_offset: int = 0
    synthetic_dominant: int = 0
    # how strong the planted shortcut is: the dominant organ's disease-mark amplitude, every other organ's, and
    # the pixel noise (the generator's defaults; recorded in the contract so an evaluation draws the same world)
    synthetic_dominant_strength: float = 0.35
    synthetic_subtle_strength: float = 0.12
    synthetic_noise: float = 0.05
    # > 0: disease 0's graded severity also scales the dominant organ's whole intensity (an organ-wide shortcut)
    synthetic_dominant_gain: float = 0.0
    # how organs go missing: every organ's base probability, the dominant organ's, and the logit shift for a
    # subject with disease 0 (missing not at random; 0: completely at random)
    synthetic_missing_prob: float = 0.2
    synthetic_dominant_missing_prob: float = 0.1
    synthetic_mnar_strength: float = 1.0
    synthetic_dim: int = 2
    synthetic_refresh: int | None = None  # pair-buffer samples replaced per step; None: max(1, batch_size // 10)


# ``views.*``: the multi-crop recipe's keyword arguments with its defaults (``GlobalLocalViews`` is where a view
# augmentation and its default are written, once), plus where the views are made: ``on_device`` makes them on
# the accelerator from cached uint8 images (batched tensor ops, ``organfm.views.device.DeviceViews``)
ViewsConfig = configtree.config_from_signature(GlobalLocalViews, name="ViewsConfig", section="views",
                                               extra=[("on_device", bool, False)])
ViewsConfig.__module__ = __name__


@dataclass
class BackboneConfig:
    """Any timm architecture name; weights come from a local file only."""

    name: str = "convnext_atto"
    pretrained_file: str | None = None
    drop_path_rate: float = 0.0
    strict_load: bool = True  # false: load what fits from pretrained_file and report the rest (timm names only)
    # the size of an organfm backbone that takes them (organ_set_vit: width E, blocks, heads, patch edge);
    # None: the backbone's default (or its pretrained_file's); a backbone without the argument refuses a set value
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    patch_size: int | None = None


@dataclass
class OptimConfig:
    """AdamW with per-step cosine schedules (DINO defaults, lr as an absolute value)."""

    lr: float = 5e-4
    min_lr: float = 1e-6
    warmup_epochs: float = 1.0
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    clip_grad: float | None = 3.0
    clip_mode: str = "global"  # or "per_param" (DINO: each parameter's gradient clipped on its own)
    freeze_last_layer_epochs: float = 1.0


@dataclass
class TeacherConfig:
    """EMA teacher momentum and teacher-temperature schedules."""

    momentum: float = 0.996
    momentum_end: float = 1.0
    temp: float = 0.07
    warmup_temp: float = 0.04
    warmup_temp_epochs: float = 3.0


@dataclass
class TrainerConfig:
    """How the loop runs. ``max_steps`` is where training stops; ``epochs`` sets the schedules' horizon."""

    max_steps: int | None = None
    epochs: float = 10.0
    steps_per_epoch: int | None = None  # None: dataset size / global batch; endless sources set their own
    batch_size: int = 32
    accumulate_grad_batches: int = 1
    seed: int = 0
    deterministic: bool = False
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "auto"  # auto: bf16-mixed on GPU, 32-true on CPU (bf16 is 16x slower on CPU)
    num_workers: int = 2
    torch_threads: int | None = None
    out_dir: str | None = None
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    log_every: int = 10
    # steps between host reads of the loss's finiteness; None: every step on CPU, log_every on CUDA with fused
    # AdamW (a NaN then freezes the student on the device until the read names its step)
    check_finite_every: int | None = None
    progress: bool = True
    compile: bool = False
    # the training-health monitor (organfm.monitor): steps between measurements on a fixed batch of this many
    # items (0: off); health.json / health.png in the run folder say whether the run is learning
    monitor_every: int = 100
    monitor_images: int = 256
    # views.png in the run folder (and TensorBoard): the first batch's augmented views, as the network sees them
    views_png: bool = True


@dataclass
class Config:
    method_name: str = "coda"
    data: DataConfig = field(default_factory=DataConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    method: Any = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


_SECTIONS = ("data", "views", "backbone", "method", "optim", "teacher", "trainer")
# ``data=<x>`` is shorthand for ``data.source=<x>``
_SHORTHANDS = {"data": "data.source"}


def new_config(method: str) -> Config:
    """Defaults for ``method``: the dataclass defaults plus the method's own defaults of other sections."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; valid: {', '.join(METHODS.names())}")
    cls = METHODS.get(method)
    cfg = Config(method_name=method, method=cls.Config())
    for dotted, value in cls.section_defaults.items():
        _set(cfg, dotted, value)
    return cfg


def valid_keys(cfg: Config) -> list[str]:
    """Every dotted key an override may set."""
    return [k for k in configtree.valid_keys(cfg, _SHORTHANDS) if k != "method_name"]


def _check_key(dotted: str, cfg: Config) -> None:
    # ``method_name`` is chosen by --method or the file's ``method.name``, never by an override
    if _SHORTHANDS.get(dotted, dotted).split(".")[0] not in _SECTIONS:
        raise ConfigError(configtree.unknown_key_message(dotted, valid_keys(cfg)))


def _set(cfg: Config, dotted: str, value: Any) -> None:
    _check_key(dotted, cfg)
    configtree.set_dotted(cfg, dotted, value, _SHORTHANDS)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["a.b=1", "data=x"]`` -> ``{"a.b": 1, "data": "x"}`` (values parsed as YAML scalars)."""
    return configtree.parse_overrides(items)


def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    for key, value in overrides.items():
        _set(cfg, key, value)
    return cfg


def load_config(method: str | None = None, file: str | Path | None = None,
                overrides: list[str] | None = None) -> Config:
    """Resolve a config: defaults < method defaults < ``file`` < ``overrides``.

    Args:
        method: registered method name; falls back to the file's ``method.name``, then ``coda``.
        file: YAML of nested overrides (sections data, views, backbone, method, optim, teacher, trainer), or a
            shipped recipe's name (``coda``, ``small/coda``; ``organfm.presets``).
        overrides: ``key=value`` strings with dotted keys.
    """
    if file is not None:
        from organfm.presets import resolve_config_file

        file = resolve_config_file(file)
    tree = configtree.load_yaml_mapping(file) if file is not None else {}
    file_method = (tree.get("method") or {}).pop("name", None) if isinstance(tree.get("method"), dict) else None
    name = method or file_method or "coda"
    cfg = new_config(name)
    try:
        apply_overrides(cfg, configtree.flatten(tree))
    except ConfigError as e:
        raise ConfigError(f"{file}: {e}") from None
    apply_overrides(cfg, parse_overrides(overrides or []))
    validate(cfg)
    return cfg


# keys whose value must be >= the bound (None allowed where the field is optional)
_BOUNDS = {"trainer.batch_size": 1, "trainer.accumulate_grad_batches": 1, "trainer.max_steps": 1,
           "trainer.epochs": 1e-9, "trainer.steps_per_epoch": 1, "trainer.checkpoint_every": 1,
           "trainer.keep_checkpoints": 1, "trainer.log_every": 1, "trainer.check_finite_every": 1,
           "trainer.num_workers": 0, "trainer.num_nodes": 1,
           "trainer.torch_threads": 1, "trainer.monitor_every": 0, "trainer.monitor_images": 2,
           "backbone.embed_dim": 1, "backbone.depth": 1, "backbone.num_heads": 1, "backbone.patch_size": 1,
           "views.num_global_views": 1, "views.num_local_views": 0,
           "views.global_size": 1, "views.local_size": 1, "optim.lr": 0.0, "optim.min_lr": 0.0,
           "optim.warmup_epochs": 0.0, "data.synthetic_organs": 1, "data.synthetic_images_per_organ": 1,
           "data.synthetic_size": 8, "data.synthetic_labels": 1, "data.synthetic_index_offset": 0,
           "data.synthetic_dominant": 0, "data.synthetic_dominant_strength": 0.0,
           "data.synthetic_subtle_strength": 0.0, "data.synthetic_noise": 0.0,
           "data.synthetic_dominant_gain": 0.0, "data.synthetic_missing_prob": 0.0,
           "data.synthetic_dominant_missing_prob": 0.0,
           "data.max_member_bytes": 1, "data.max_image_pixels": 1,
           "data.max_volume_voxels": 1, "data.max_array_voxels": 1}


def validate(cfg: Config) -> None:
    """Refuse values that would fail hours later or silently do nothing (``trainer.max_steps=-5``)."""
    for dotted, low in _BOUNDS.items():
        section, name = dotted.split(".")
        value = getattr(getattr(cfg, section), name)
        if value is not None and value < low:
            what = "a positive number" if low > 0 else f">= {low}"
            raise ConfigError(f"{dotted} must be {what}, got {value}")
    if cfg.optim.clip_mode not in ("global", "per_param"):
        raise ConfigError(f"optim.clip_mode must be 'global' or 'per_param', got {cfg.optim.clip_mode!r}")
    _validate_devices(cfg.trainer)


_ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


def _validate_devices(trainer: TrainerConfig) -> None:
    """``trainer.devices`` / ``trainer.accelerator`` in the forms Lightning Fabric takes (else a TypeError deep in it)."""
    devices = trainer.devices
    text = str(devices).strip()
    ids = [p.strip() for p in text.strip("[]").split(",") if p.strip()]
    ok = (isinstance(devices, int) and not isinstance(devices, bool) and (devices >= 1 or devices == -1)) \
        or text == "auto" or (ids and all(p.isdigit() for p in ids) and ids != ["0"])  # "0": no device at all
    if not ok:
        raise ConfigError(f"trainer.devices={devices!r} is not a device count: use a number (1, 2, ...), -1 for "
                          "all, auto, or device ids like 0,1")
    if trainer.accelerator not in _ACCELERATORS:
        raise ConfigError(f"trainer.accelerator={trainer.accelerator!r} is unknown; use one of "
                          f"{', '.join(_ACCELERATORS)}")


def config_to_dict(cfg: Config) -> dict[str, Any]:
    out = {"method": {"name": cfg.method_name, **dataclasses.asdict(cfg.method)}}
    for section in _SECTIONS:
        if section != "method":
            out[section] = dataclasses.asdict(getattr(cfg, section))
    return out


def dump_config(cfg: Config) -> str:
    """The resolved config as the YAML that ``load_config(None, file)`` reads back."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)

