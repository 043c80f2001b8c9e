"""The protocol contract: one registry, one decorator, and what a protocol receives.

A protocol is a function registered with ``@register_protocol(name, ...)`` in its own module under
``organfm/evaluation/protocols/`` (the file is named like the protocol). It declares its settings section and
what data it needs, and gets one :class:`ModelRun` per model, the data, and ITS section only::

    @dataclass
    class ZeroShotConfig:                      # its task keys: ``zeroshot.prompts=[...]``
        prompts: list[str] = field(default_factory=list)

    @register_protocol("zeroshot", config=ZeroShotConfig, inputs="features", splits=("test",))
    def zeroshot(run: ModelRun, data: TaskData, settings: ZeroShotConfig) -> list[dict]:
        feats = run.features(data.splits["test"])
        return [make_row(run.name, "zeroshot", "prompts", {"accuracy": [...]})]

Nothing else changes: the task config gains the ``zeroshot.*`` section, ``protocols=[zeroshot]`` becomes
valid, and ``evaluate_models`` loads the declared splits and calls it. ``inputs`` says whether the
protocol reads frozen features (``"features"``), trains on the split images (``"images"``), or reads
its own data (``"own"``, e.g. segmentation from a CT volume; then ``splits`` is empty and ``data`` is the
task's data section, :class:`~organfm.evaluation.task_data.TaskDataConfig`, which says where the files are).
A protocol that reads another protocol's settings names it in ``uses`` (few-shot learners use ``linear.*``
and ``finetune.*``) and receives it as a keyword argument of that name; protocols never import each other
(shared pieces live in ``probes``, ``finetuning``, ``maps``). The task-wide seed and device come with the
:class:`ModelRun`. No protocol ever sees the whole task.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from organfm.features.extraction import FeatureCache, extract_features, normalize_images
from organfm.evaluation.metrics import CLASSIFICATION_METRICS, classification_metrics, summarize
from organfm.registry import Registry

if TYPE_CHECKING:
    from organfm.evaluation.task_data import SplitData
    from organfm.text.tower import JointText

__all__ = ["PROTOCOLS", "ModelRun", "ProtocolSpec", "classification_values", "get_protocol", "list_protocols",
           "make_row", "metric_lists", "register_protocol"]

Inputs = Literal["features", "images", "own"]
ProtocolFn = Callable[..., list[dict[str, Any]]]  # (run, data, settings, **uses) -> rows


@dataclass(frozen=True)
class ProtocolSpec:
    """A registered protocol and what it declares.

    Attributes:
        name: the stable name used in ``protocols=[...]``, in results rows and as its module's file name.
        fn: ``(run, data, settings, **uses) -> rows``; ``data`` is the task's splits (``inputs`` features or
            images) or the task's data section (``inputs="own"``); ``settings`` its own section (None without
            a config).
        config: dataclass of its ``<name>.*`` task keys, or None (no settings).
        inputs: ``"features"`` (frozen), ``"images"`` (trains on the split images) or ``"own"``.
        splits: labelled splits it reads (``"train"``, ``"val"``, ``"test"``, ``"all"``), or a function of
            its settings giving ``{split: cap}`` (a cap of None means ``data.max_<split>``).
        leakage_guard: check train/val/test overlap before it runs (protocols that train and test).
        uses: other protocols' sections it reads, passed as keyword arguments of those names.
        scatter_split: a function of its settings naming the split the report's scatter should show (the
            split the protocol maps), or None; the first chosen protocol with one decides, else ``test``.
    """

    name: str
    fn: ProtocolFn
    config: type | None
    inputs: Inputs
    splits: Sequence[str] | Callable[[Any], Mapping[str, int | None]]
    leakage_guard: bool
    uses: tuple[str, ...] = ()
    scatter_split: Callable[[Any], str] | None = None

    def settings(self, task: Any) -> Any:
        """This protocol's own section of ``task`` (None without a config)."""
        return getattr(task, self.name) if self.config is not None else None

    def limits(self, task: Any) -> dict[str, int | None]:
        """Split -> most items to read for this protocol (``task.data.max_*`` unless it says otherwise)."""
        if callable(self.splits):
            wanted = dict(self.splits(self.settings(task)))
        else:
            wanted = {s: None for s in self.splits}
        return {s: cap if cap is not None else getattr(task.data, f"max_{s}", None) for s, cap in wanted.items()}

    def __call__(self, run: ModelRun, data: Any, task: Any) -> list[dict[str, Any]]:
        """Rows of ``run``'s model: ``fn`` called with its own section of ``task`` and the sections in ``uses``."""
        return self.fn(run, data, self.settings(task), **{name: getattr(task, name) for name in self.uses})


PROTOCOLS: Registry[ProtocolSpec] = Registry("evaluation protocol", builtins=("organfm.evaluation.protocols",))


def register_protocol(name: str, *, config: type | None = None, inputs: Inputs = "features",
                      splits: Sequence[str] | Callable[[Any], Mapping[str, int | None]] = ("train", "val", "test"),
                      leakage_guard: bool | None = None, uses: Sequence[str] = (),
                      scatter_split: Callable[[Any], str] | None = None) -> Callable[[ProtocolFn], ProtocolFn]:
    """Decorator: register ``fn(run, data, settings, **uses) -> rows`` as protocol ``name`` (see the module docstring).

    ``leakage_guard`` defaults to True when the protocol reads ``train`` and another split.
    """
    if inputs not in ("features", "images", "own"):
        raise ValueError(f"protocol {name!r}: inputs must be features, images or own, got {inputs!r}")

    def wrap(fn: ProtocolFn) -> ProtocolFn:
        guard = leakage_guard if leakage_guard is not None else (
            not callable(splits) and "train" in splits and len(set(splits)) > 1)
        spec = ProtocolSpec(name=name, fn=fn, config=config, inputs=inputs,
                            splits=splits if callable(splits) else tuple(splits), leakage_guard=guard,
                            uses=tuple(uses), scatter_split=scatter_split)
        PROTOCOLS.register(name)(spec)
        return fn

    return wrap


def get_protocol(name: str) -> ProtocolSpec:
    """The protocol registered as ``name``; unknown names raise ValueError listing the valid ones."""
    return PROTOCOLS.get(name)


def list_protocols() -> list[str]:
    """Every registered protocol name, sorted."""
    return PROTOCOLS.names()


class ModelRun:
    """One model within a task: its lazily built backbone, its cached features per split, the task-wide settings.

    Attributes:
        name: the model's name in the results.
        make_backbone: returns a FRESH backbone (pretrained weights) each call.
        contract: the model's data contract (``mean``, ``std``, ``model_hash``, ``text`` when it has a text
            tower, ...).
        device: where protocols compute.
        seed: the task's seed (``seed``); protocols derive their repeats' seeds from it.
        batch_size: images per feature-extraction batch (the task's ``batch_size``).
        artifacts: what a protocol leaves for the report (``"maps"``: 2-D maps and their colours).
    """

    def __init__(self, name: str, make_backbone: Callable[[], nn.Module], contract: dict[str, Any], device: str,
                 cache: FeatureCache, *, seed: int = 0, batch_size: int = 256) -> None:
        self.name, self.make_backbone, self.contract = name, make_backbone, contract
        self.device, self.cache, self.seed, self.batch_size = device, cache, seed, batch_size
        self.mean, self.std = contract["mean"], contract["std"]
        self.artifacts: dict[str, Any] = {}
        self._backbone: nn.Module | None = None
        self._features: dict[str, torch.Tensor] = {}
        self._joint: JointText | None = None

    def features(self, split: SplitData) -> torch.Tensor:
        """(N, E) features of ``split``, from the disk cache when the same model saw the same data."""
        if split.name not in self._features:
            key = FeatureCache.key(model=self.contract["model_hash"], data=split.identity,
                                   mean=self.mean, std=self.std)

            def extract() -> torch.Tensor:
                if self._backbone is None:
                    self._backbone = self.make_backbone()
                return extract_features(self._backbone, split.images, batch_size=self.batch_size,
                                        device=self.device, mean=self.mean, std=self.std)

            self._features[split.name] = self.cache.get_or_extract(key, extract)
        return self._features[split.name]

    def joint_text(self) -> JointText | None:
        """The model's text tower and joint-space heads (eval mode, on ``device``), or None without one.

        Joint-space image embeddings are ``joint_text().image(features(split))``: the pooled backbone
        features come from the feature cache, so text protocols never re-run the backbone.
        """
        if "text" not in self.contract:
            return None
        if self._joint is None:
            from organfm.text.tower import load_joint_text

            self._joint = load_joint_text(self.contract["text"]).to(self.device).eval()
        return self._joint

    def joint_images(self, split: SplitData) -> torch.Tensor:
        """(N, D) L2-normalised joint-space embeddings of ``split``'s images, on ``device`` (needs a text tower).

        Raises:
            ValueError: no text tower, or one built for another feature size than the backbone's.
        """
        joint = self.joint_text()
        if joint is None:
            raise ValueError(f"{self.name}: no text tower, so no joint image-text space")
        features = self.features(split)
        if features.shape[1] != joint.image_dim:
            raise ValueError(f"{self.contract['text']}: its image head takes {joint.image_dim}-dim features, "
                             f"the backbone of {self.name} gives {features.shape[1]}")
        return joint.embed_images(features)

    def warn_no_text(self, protocol: str) -> None:
        """Warn that ``protocol`` skips this model, which has no text tower."""
        warnings.warn(f"{self.name}: no text tower ({self.contract.get('spec')} has no text/ folder), {protocol} "
                      "skipped; only models trained with texts (method imagetext, or mmkd with texts) have one",
                      stacklevel=3)

    def normalized(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) in [0, 1] scaled by this model's contract, for fine-tuning."""
        return normalize_images(images, self.mean, self.std)


def make_row(model: str, protocol: str, setting: str, values: Mapping[str, Sequence[float]],
             **extra: Any) -> dict[str, Any]:
    """One results row: per metric ``summarize(values)`` (mean, sd, n, 95% interval) and the raw values."""
    values = {m: list(v) for m, v in values.items()}
    return {"model": model, "protocol": protocol, "setting": setting,
            "metrics": {m: summarize(v) for m, v in values.items()}, "values": values, **extra}


def metric_lists(values: Mapping[str, float]) -> dict[str, list[float]]:
    """``{"accuracy": 0.9}`` -> ``{"accuracy": [0.9]}`` (one repeat)."""
    return {m: [v] for m, v in values.items()}


def classification_values(y: torch.Tensor, probs: torch.Tensor) -> dict[str, float]:
    """``CLASSIFICATION_METRICS`` of (N, K) class probabilities against (N,) labels, one value each."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a class absent from a small split: AUC skips it
        out = classification_metrics(y.numpy(), probs.numpy())
    return {m: out[m] for m in CLASSIFICATION_METRICS}
