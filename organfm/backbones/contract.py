"""The backbone contract: what an encoder is and what it must be fed, carried by the model as ``backbone.contract``.

timm attaches a typed ``PretrainedCfg`` to every model and ``resolve_data_config`` reads it; organfm does the
same with :class:`BackboneContract`. It is built in one place (:func:`build_contract`: ``create_backbone`` for a
fresh network, pretraining for the data side it learnt), travels as a plain dict inside checkpoints (they load
with ``weights_only=True``), and is written and read only here (:meth:`BackboneContract.to_dict`,
:meth:`BackboneContract.from_dict`, :func:`read_contract`) as an export's ``backbone.json``.

The JSON keys are the ones exports have always had, so older exports still load: a key this module does not
know is kept in ``extra`` and written back unchanged, and the nested ``pretrained_cfg`` (timm's habit) is
derived from the contract's own fields rather than stored twice.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

__all__ = ["CONTRACT_FILE", "BackboneContract", "attach_contract", "build_contract", "read_contract"]

CONTRACT_FILE = "backbone.json"


@dataclass
class BackboneContract:
    """One encoder's identity and input contract.

    Attributes:
        architecture: the ``create_backbone`` name (an organfm backbone or any timm name).
        backbone_args: constructor arguments that rebuild the architecture (empty for timm names).
        in_chans: C, input channels.
        num_features: E, the pooled embedding size.
        spatial_dims: 2 or 3.

            These four are set for every built network; a contract made before its network is built
            (``random:``/``timm:`` specs) may leave them None, and a reader treats None as unknown.
        input_size: (C, H, W) or (C, D, H, W) of one input (one organ image for an organ set); None until
            the network is trained or told its data.
        interpolation: how inputs are resized to ``input_size`` (``bilinear``/``trilinear``).
        mean, std: per-channel normalisation applied after ``intensity``; None when not known.
        intensity: how an image is mapped to [0, 1] (``mode``, ``window``, ``percentiles``, a ``note``).
        organs: organ names the network was trained on (the slots of an organ set, in order).
        method: the pretraining method (or ``random-init``/``timm`` for contract-less specs).
        synthetic_subjects: the synthetic-subject world pretraining drew, so an evaluation draws others.
        created: when pretraining assembled the contract (``%Y-%m-%dT%H:%M:%S``).
        step: the optimisation step of the exported checkpoint.
        network: which network of the method was exported (``teacher``/``student``).
        health: the monitor's verdict on the exported network.
        teachers: the models a distilled student learnt from.
        training_data: counts of the training data (never a path).
        license: the licence of the weights.
        text: the text side: its description inside a checkpoint, the folder of the exported text tower once
            loaded (``export/text/``, for zero-shot and retrieval).
        spec: the model spec the network was loaded from (``organfm.features.load_encoder``).
        weights: the weights file it was loaded from (None for random initialisation).
        model_hash: names the weights (a feature cache keys on it).
        extra: keys of other (older or newer) exports, written back unchanged.
    """

    architecture: str
    backbone_args: dict[str, Any] | None = None
    in_chans: int | None = None
    num_features: int | None = None
    spatial_dims: int | None = None
    input_size: list[int] | None = None
    interpolation: str | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    intensity: dict[str, Any] | None = None
    organs: list[str] | None = None
    synthetic_subjects: dict[str, Any] | None = None
    method: str | None = None
    created: str | None = None
    step: int | None = None
    network: str | None = None
    health: dict[str, Any] | None = None
    teachers: list[str] | None = None
    training_data: dict[str, Any] | None = None
    license: str | None = None
    text: dict[str, Any] | str | None = None
    spec: str | None = None
    weights: str | None = None
    model_hash: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pretrained_cfg(self) -> dict[str, Any] | None:
        """timm's view of the input contract (``input_size``, ``mean``, ``std``, ``num_classes``), once known."""
        if self.input_size is None or self.mean is None or self.std is None:
            return None
        return {"input_size": self.input_size, "mean": self.mean, "std": self.std, "num_classes": 0}

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``backbone.json``, a checkpoint's ``contract``): every known field that is set, in
        the order exports have always written them, ``pretrained_cfg`` after ``method``, then ``extra``."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is not None:  # unset fields stay absent, as in the exports written before this class
                out[f.name] = value
            if f.name == "method" and "pretrained_cfg" not in self.extra and self.pretrained_cfg is not None:
                out["pretrained_cfg"] = self.pretrained_cfg
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackboneContract:
        """The contract of a ``backbone.json`` or a checkpoint's ``contract`` dict, old or new.

        A missing field takes its default; an unknown key is kept in ``extra``; a stored ``pretrained_cfg``
        equal to the derived one is dropped (it is derived again on writing), another is kept in ``extra``.

        Raises:
            ValueError: ``data`` is not a dict or names no ``architecture``.
        """
        if not isinstance(data, dict) or "architecture" not in data:
            raise ValueError("a backbone contract needs an 'architecture' key")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        contract = cls(**{k: v for k, v in data.items() if k in known},
                       extra={k: v for k, v in data.items() if k not in known and k != "pretrained_cfg"})
        stored = data.get("pretrained_cfg")
        if stored is not None and stored != contract.pretrained_cfg:
            contract.extra["pretrained_cfg"] = stored
        return contract

    def to_json(self) -> str:
        """``backbone.json``'s text."""
        return json.dumps(self.to_dict(), indent=2)

    def replace(self, **changes: Any) -> BackboneContract:
        """A copy with ``changes`` applied (field names only)."""
        return dataclasses.replace(self, **changes)


def build_contract(backbone: nn.Module, *, architecture: str, data: dict[str, Any] | None = None,
                   method: str | None = None, text: dict[str, Any] | None = None) -> BackboneContract:
    """The contract of ``backbone``: its identity, plus the data side pretraining fed it.

    Args:
        backbone: a network meeting the backbone contract (``num_features``, ``spatial_dims``,
            ``backbone_args``).
        architecture: its ``create_backbone`` name.
        data: a batch source's data contract (``input_size``, ``mean``, ``std``, ``organs``, ``intensity``,
            ``synthetic_subjects``), or None for a fresh network (no input contract yet).
        method: the pretraining method's name.
        text: the text side's description, for a network trained with texts.

    Returns:
        The contract; with ``data``, stamped with its creation time.
    """
    identity = dict(architecture=architecture, backbone_args=dict(getattr(backbone, "backbone_args", {}) or {}),
                    in_chans=int(getattr(backbone, "in_chans", 1) or 1),
                    num_features=int(backbone.num_features) if hasattr(backbone, "num_features") else None,
                    spatial_dims=int(getattr(backbone, "spatial_dims", 2)), method=method, text=text)
    if data is None:
        return BackboneContract(**identity)
    input_size = list(data["input_size"])
    # the exported encoder is fed one channel: organfm's pretraining reads gray images and volumes
    identity["in_chans"] = 1
    return BackboneContract(**identity, input_size=input_size,
                            interpolation="trilinear" if len(input_size) == 4 else "bilinear",
                            mean=list(data["mean"]), std=list(data["std"]), intensity=data.get("intensity"),
                            organs=list(data["organs"]), synthetic_subjects=data.get("synthetic_subjects"),
                            created=time.strftime("%Y-%m-%dT%H:%M:%S"))


def attach_contract(backbone: nn.Module, contract: BackboneContract) -> nn.Module:
    """Set ``backbone.contract`` (as timm sets ``model.pretrained_cfg``) and return the backbone."""
    backbone.contract = contract
    return backbone


def read_contract(path: str | Path) -> BackboneContract:
    """The contract in an export's ``backbone.json`` (or a ``<stem>.json`` beside a weights file).

    Raises:
        ValueError: the file cannot be read, is not JSON, or names no ``architecture`` (naming the file).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the backbone contract ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict) or "architecture" not in data:
        raise ValueError(f"{path}: a backbone contract needs an 'architecture' key")
    return BackboneContract.from_dict(data)
