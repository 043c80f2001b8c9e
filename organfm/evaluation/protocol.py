"""The protocol contract: one registry, one decorator, and what a protocol receives.

A protocol is a function registered with ``@register_protocol(name, ...)`` in its own module under
``organfm/evaluation/protocols/``. It declares what it needs and gets one :class:`ModelRun` per model::

    @dataclass
    class ZeroShotConfig:                      # its task keys: ``zeroshot.prompts=[...]``
        prompts: list[str] = field(default_factory=list)

    @register_protocol("zeroshot", config=ZeroShotConfig, inputs="features", splits=("test",))
    def zeroshot(run: ModelRun, data: TaskData | None) -> list[dict]:
        settings = run.task.zeroshot             # a ZeroShotConfig, resolved from the task file
        feats = run.features(data.splits["test"])
        return [make_row(run.name, "zeroshot", "prompts", {"accuracy": [...]})]

Nothing else changes: the task config gains the ``zeroshot.*`` section, ``protocols=[zeroshot]`` becomes
valid, and ``evaluate_models`` loads the declared splits and calls it. ``inputs`` says whether the
protocol reads frozen features (``"features"``), trains on the split images (``"images"``), or reads
its own data (``"own"``, e.g. segmentation from a CT volume; then ``splits`` is empty).
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
    from organfm.evaluation.task import TaskConfig
    from organfm.evaluation.task_data import SplitData, TaskData
    from organfm.text.tower import JointText

__all__ = ["PROTOCOLS", "ModelRun", "ProtocolSpec", "classification_values", "get_protocol", "list_protocols",
           "make_row", "metric_lists", "register_protocol"]

Inputs = Literal["features", "images", "own"]
ProtocolFn = Callable[["ModelRun", "TaskData | None"], list[dict[str, Any]]]


@dataclass(frozen=True)
class ProtocolSpec:
    """A registered protocol and what it declares.

    Attributes:
        name: the stable name used in ``protocols=[...]`` and in results rows.
        fn: ``(run, data) -> rows``; ``data`` is None when ``splits`` is empty.
        config: dataclass of its ``<name>.*`` task keys, or None (no settings).
        inputs: ``"features"`` (frozen), ``"images"`` (trains on the split images) or ``"own"``.
        splits: labelled splits it reads (``"train"``, ``"val"``, ``"test"``, ``"all"``), or a function of
            the task giving ``{split: cap}`` (a cap of None means ``data.max_<split>``).
        leakage_guard: check train/val/test overlap before it runs (protocols that train and test).
    """

    name: str
    fn: ProtocolFn
    config: type | None
    inputs: Inputs
    splits: Sequence[str] | Callable[[Any], Mapping[str, int | None]]
    leakage_guard: bool

    def limits(self, task: TaskConfig) -> dict[str, int | None]:
        """Split -> most items to read for this protocol (``task.data.max_*`` unless it says otherwise)."""
        if callable(self.splits):
            wanted = dict(self.splits(task))
        else:
            wanted = {s: None for s in self.splits}
        return {s: cap if cap is not None else getattr(task.data, f"max_{s}", None) for s, cap in wanted.items()}

    def __call__(self, run: ModelRun, data: TaskData | None) -> list[dict[str, Any]]:
        return self.fn(run, data)


PROTOCOLS: Registry[ProtocolSpec] = Registry("evaluation protocol", builtins=("organfm.evaluation.protocols",))


def register_protocol(name: str, *, config: type | None = None, inputs: Inputs = "features",
                      splits: Sequence[str] | Callable[[Any], Mapping[str, int | None]] = ("train", "val", "test"),
                      leakage_guard: bool | None = None) -> Callable[[ProtocolFn], ProtocolFn]:
    """Decorator: register ``fn(run, data) -> rows`` as protocol ``name`` (see the module docstring).

    ``leakage_guard`` defaults to True when the protocol reads ``train`` and another split.
    """
    if inputs not in ("features", "images", "own"):
        raise ValueError(f"protocol {name!r}: inputs must be features, images or own, got {inputs!r}")

    def wrap(fn: ProtocolFn) -> ProtocolFn:
        guard = leakage_guard if leakage_guard is not None else (
            not callable(splits) and "train" in splits and len(set(splits)) > 1)
        spec = ProtocolSpec(name=name, fn=fn, config=config, inputs=inputs,
                            splits=splits if callable(splits) else tuple(splits), leakage_guard=guard)
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
    """One model within a task: its lazily built backbone, its cached features per split, its settings.

    Attributes:
        name: the model's name in the results.
        make_backbone: returns a FRESH backbone (pretrained weights) each call.
        contract: the model's data contract (``mean``, ``std``, ``model_hash``, ``text`` when it has a text
            tower, ...).
        task: the resolved task (a protocol reads its own section, e.g. ``run.task.knn``).
        device: where protocols compute.
        artifacts: what a protocol leaves for the report (``"clusters"``: maps and colours).
    """

    def __init__(self, name: str, make_backbone: Callable[[], nn.Module], contract: dict[str, Any],
                 task: TaskConfig, device: str, cache: FeatureCache) -> None:
        self.name, self.make_backbone, self.contract = name, make_backbone, contract
        self.task, self.device, self.cache = task, device, cache
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
                return extract_features(self._backbone, split.images, batch_size=self.task.batch_size,
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
