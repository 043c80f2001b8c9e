"""Parameter groups for fine-tuning: the engine's weight-decay rule, layer-wise lr decay, scheduled values."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from organfm.backbones import TimmBackbone
from organfm.engine.param_groups import build_param_groups, layer_ids, set_scheduled_values


@pytest.mark.parametrize("name", ["test_convnext", "test_resnet"])
def test_layer_decay_gives_earlier_layers_smaller_lr(name: str) -> None:
    backbone = TimmBackbone(name)
    head = nn.Linear(backbone.num_features, 3)
    groups = build_param_groups(backbone, head, layer_decay=0.5)
    lr_of = {name: g["lr_scale"] for g in groups for name in g["names"]}
    stem = "backbone.model.stem.0.weight" if name == "test_convnext" else "backbone.model.conv1.0.weight"
    last = "backbone.model.stages.3.blocks.1.conv_dw.weight" if name == "test_convnext" \
        else "backbone.model.layer4.0.conv1.weight"
    assert lr_of["head.weight"] == 1.0
    assert lr_of[stem] < lr_of[last] < lr_of["head.weight"]
    depth = layer_ids(backbone)
    top = max(depth.values()) + 1
    assert lr_of[stem] == pytest.approx(0.5 ** top)
    for pname, d in depth.items():  # lr strictly follows depth
        assert lr_of["backbone." + pname] == pytest.approx(0.5 ** (top - d))
    # every trainable parameter once; decay only on weights
    assert sum(len(g["params"]) for g in groups) == len(list(backbone.parameters())) + 2
    for g in groups:
        assert all(p.ndim >= 2 for p in g["params"]) == g["apply_weight_decay"]
        assert all(p.ndim < 2 for p in g["params"]) == (not g["apply_weight_decay"])
    # without layer decay every group has the base lr
    assert {g["lr_scale"] for g in build_param_groups(backbone, head)} == {1.0}


def test_layer_ids_fallbacks() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))  # no timm group_matcher
    assert layer_ids(net) == {"0.weight": 0, "0.bias": 0, "2.weight": 1, "2.bias": 1}

    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(2, 2))

    with pytest.warns(UserWarning, match="no layer structure"):
        assert layer_ids(Flat()) == {"w": 0}


def test_set_scheduled_values_scales_lr_and_masks_weight_decay() -> None:
    backbone, head = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3)), nn.Linear(3, 2)
    groups = build_param_groups(backbone, head, layer_decay=0.1)
    optimizer = torch.optim.AdamW([{k: v for k, v in g.items() if k != "names"} for g in groups], lr=1.0)
    set_scheduled_values(optimizer, lr=0.3, weight_decay=0.04)
    got = {(round(g["lr"], 6), g["weight_decay"]) for g in optimizer.param_groups}
    # Linear (depth 0): lr 0.3 * 0.1**2; LayerNorm (depth 1): 0.3 * 0.1, never decayed; head: 0.3
    assert got == {(0.003, 0.04), (0.003, 0.0), (0.03, 0.0), (0.3, 0.04), (0.3, 0.0)}
    set_scheduled_values(optimizer, lr=0.3, weight_decay=0.04)  # idempotent: the scale is not applied twice
    assert {(round(g["lr"], 6), g["weight_decay"]) for g in optimizer.param_groups} == got
