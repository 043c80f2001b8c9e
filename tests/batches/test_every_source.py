"""Generated from the batch-source registry: every registered source yields batches of the shapes it declares,
resumes mid-epoch to exactly the batches an uninterrupted run yields, and reports its contract (input size,
spatial dims, intensity) consistently with the batches it yields.

A new source without a tiny case here fails ``test_every_registered_source_has_a_tiny_case``, so the registry
and this file cannot drift apart.
"""
from __future__ import annotations

import itertools
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from organfm.backbones.contract import build_contract
from organfm.batches import BatchSource, SourceContext, create_batch_source, list_batch_sources
from organfm.config import DataConfig, ViewsConfig, new_config
from organfm.methods import get_method, list_methods

B = 4  # items per batch in every case
SMALL_VIEWS = {"num_global_views": 2, "global_size": 32, "num_local_views": 2, "local_size": 16}
IMAGES = {"synthetic_organs": 3, "synthetic_images_per_organ": 4, "synthetic_size": 32}  # 12 images: 3 batches/epoch
VIEWS_SHAPES = {"global": [(B, 1, 32, 32)] * 2, "local": [(B, 1, 16, 16)] * 2, "organ": (B,)}


@dataclass(frozen=True)
class Case:
    """A tiny run of one source.

    Attributes:
        data, views: ``DataConfig`` and ``ViewsConfig`` overrides.
        options: overrides of the method's ``source_keys`` defaults (the method is the one naming the source).
        shapes: the batch the source's docstring declares: key -> shape, a list of shapes for a view group, or
            ``str`` for a list of B strings.
        input_key: the batch tensor (the first of a group) whose trailing dims are the contract's ``input_size``.
        spatial_dims: 2 or 3, what the contract's ``input_size`` and the backbone arguments must both say.
        intensity: the contract's intensity mode.
        steps_per_epoch: ``trainer.steps_per_epoch`` (an endless source needs one).
    """

    data: dict[str, Any] = field(default_factory=dict)
    views: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    shapes: dict[str, Any] = field(default_factory=dict)
    input_key: str = "global"
    spatial_dims: int = 2
    intensity: str = "minmax"
    steps_per_epoch: int | None = None


_TEACHERS = {"teachers": ["a=random:test_resnet", "b=random:test_convnext"], "embed_dim": 8, "projector_hidden": 16,
             "projector_steps": 10, "features_dir": ""}

CASES: dict[str, dict[str, Case]] = {
    "views": {
        "cpu": Case(data=IMAGES, views=SMALL_VIEWS, shapes=VIEWS_SHAPES),
        # the loader moves uint8 images and item seeds; BatchSource.on_device makes the same groups of views
        "on_device": Case(data=IMAGES, views={**SMALL_VIEWS, "on_device": True}, shapes=VIEWS_SHAPES),
    },
    "captioned": {"auto": Case(data=IMAGES, views=SMALL_VIEWS, shapes={**VIEWS_SHAPES, "text": str, "text_id": (B,)})},
    "features": {"two_teachers": Case(data=IMAGES, views={**SMALL_VIEWS, "num_local_views": 0}, options=_TEACHERS,
                                      shapes={"global": [(B, 1, 32, 32)] * 2, "local": [], "organ": (B,),
                                              "teacher": (B, 8), "teacher_id": (B,), "available": (B, 2),
                                              "index": (B,)})},
    "synthetic_pairs": {
        "2d": Case(data={"synthetic_size": 16, "synthetic_refresh": 1}, options={"num_labels": 3}, steps_per_epoch=3,
                   shapes={"image": (B, 1, 16, 16), "label_map": (B, 1, 16, 16), "index": (B,)}, input_key="image"),
    },
    "volumes": {
        "synthetic": Case(data={"synthetic_organs": 2, "synthetic_images_per_organ": 6},
                          options={"cube": 16, "mask_patch_size": 4, "text_encoder": "hash", "text_dim": 8},
                          shapes={"image": (B, 1, 16, 16, 16), "mask": (B, 8, 8, 8), "text": (B, 8), "index": (B,)},
                          input_key="image", spatial_dims=3, intensity="percentile_minmax"),
    },
    "organ_sets": {
        "synthetic": Case(data={"synthetic_organs": 3, "synthetic_images_per_organ": 12, "synthetic_size": 16},
                          shapes={"images": (B, 3, 1, 16, 16), "available": (B, 3), "labels": (B, 6),
                                  "organ_ids": (B, 3), "index": (B,)}, input_key="images"),
    },
}
PARAMS = [pytest.param(name, variant, id=f"{name}-{variant}") for name in list_batch_sources()
          for variant in CASES.get(name, {"missing": None})]


def _method_of(source: str) -> str | None:
    """The first registered method that names ``source`` (its ``source_keys`` defaults fill the options)."""
    return next((m for m in list_methods() if get_method(m).batch_source == source), None)


def _ctx(name: str, case: Case, tmp_path: Path, start_batch: int = 0) -> SourceContext:
    options: dict[str, Any] = {}
    method = _method_of(name)
    if method is not None:
        defaults = asdict(new_config(method).method)
        options = {key: defaults[key] for key in get_method(method).source_keys}
    return SourceContext(data=DataConfig(**case.data), views=ViewsConfig(**case.views), batch_size=B, seed=3,
                         start_batch=start_batch, steps_per_epoch=case.steps_per_epoch, run_dir=tmp_path,
                         options={**options, **case.options})


def _build(name: str, case: Case, tmp_path: Path, start_batch: int = 0) -> BatchSource:
    with warnings.catch_warnings():  # e.g. the volumes source on identical synthetic acquisitions
        warnings.simplefilter("ignore", UserWarning)
        return create_batch_source(name, _ctx(name, case, tmp_path, start_batch))


def _shape(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, list) and all(isinstance(v, str) for v in value) and value:
        return str
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return type(value)


def _assert_equal(a: Any, b: Any, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _assert_equal(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b)):
            _assert_equal(x, y, f"{where}[{k}]")
    else:
        assert a == b, where


def test_every_registered_source_has_a_tiny_case():
    assert sorted(CASES) == list_batch_sources()
    assert all(CASES[name] for name in CASES)


@pytest.mark.parametrize(("name", "variant"), PARAMS)
def test_the_source_yields_the_shapes_it_declares_and_reports_its_contract(name: str, variant: str, tmp_path: Path):
    case = CASES[name][variant]
    source = _build(name, case, tmp_path)
    batch = next(iter(source.batches))
    if source.on_device is not None:
        batch = source.on_device(batch)
    assert {key: _shape(batch[key]) for key in case.shapes} == case.shapes
    for key, value in batch.items():
        for t in value if isinstance(value, list) else [value]:
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                assert torch.isfinite(t).all(), f"{name}: batch[{key!r}] holds a non-finite value"
    assert source.steps_per_epoch >= 1
    # the contract: the input the batch carries, its spatial dims as the backbone is told them, its intensity
    contract = source.contract
    first = batch[case.input_key][0] if isinstance(batch[case.input_key], list) else batch[case.input_key]
    assert list(contract["input_size"]) == [1, *first.shape[-case.spatial_dims:]]
    assert len(contract["input_size"]) - 1 == case.spatial_dims
    assert source.backbone_kwargs.get("spatial_dims", 2) == case.spatial_dims
    assert contract["intensity"]["mode"] == case.intensity and contract["intensity"]["note"]
    assert len(contract["mean"]) == len(contract["std"]) == 1 and contract["std"][0] > 0
    # the one typed contract is built from it as pretraining builds it
    backbone = nn.Module()
    backbone.num_features, backbone.spatial_dims = 8, case.spatial_dims
    typed = build_contract(backbone, architecture="tiny", data=contract, method=_method_of(name))
    assert typed.input_size == list(contract["input_size"]) and typed.intensity == contract["intensity"]
    assert typed.interpolation == ("trilinear" if case.spatial_dims == 3 else "bilinear")


@pytest.mark.parametrize(("name", "variant"), PARAMS)
def test_the_source_resumed_mid_epoch_yields_the_uninterrupted_batches(name: str, variant: str, tmp_path: Path):
    case = CASES[name][variant]
    # five batches cross an epoch boundary (three batches an epoch); the resume starts inside epoch 0
    full = list(itertools.islice(iter(_build(name, case, tmp_path).batches), 5))
    resumed = list(itertools.islice(iter(_build(name, case, tmp_path, start_batch=2).batches), 3))
    for k, (expected, got) in enumerate(zip(full[2:], resumed), start=2):
        _assert_equal(expected, got, f"{name}: batch {k}")
    # and the batches are not all one batch: the stream moves on
    with pytest.raises(AssertionError):
        _assert_equal(full[0], full[1], "")
