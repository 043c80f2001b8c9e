"""Full fine-tuning for classification: learns an easy task, reproducible, early stopping, layer decay."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from organfm.backbones import TimmBackbone
from organfm.engine.param_groups import build_param_groups
from organfm.evaluation.finetuning import finetune_classification, train_with_early_stopping


def _blobs(n: int, seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise with one disc: bright (label 1) or dark (label 0), at a random place and radius."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centers = torch.randint(8, size - 8, (n, 2), generator=g)
    radius = torch.randint(4, 8, (n, 1, 1), generator=g)
    disc = (yy - centers[:, 0, None, None]) ** 2 + (xx - centers[:, 1, None, None]) ** 2 < radius**2
    sign = torch.where(labels == 1, 1.0, -1.0)[:, None, None]
    images = 0.3 * torch.randn(n, size, size, generator=g) + sign * disc
    return images[:, None].float(), labels


class _Factory:
    """``make_backbone`` that counts its calls and keeps what it built; every call loads the same weights."""

    def __init__(self, name: str = "test_convnext") -> None:
        torch.manual_seed(123)
        self.name = name
        self.reference = {k: v.clone() for k, v in TimmBackbone(name).state_dict().items()}
        self.built: list[nn.Module] = []

    def __call__(self) -> nn.Module:
        backbone = TimmBackbone(self.name)
        backbone.load_state_dict(self.reference)
        self.built.append(backbone)
        return backbone


SPLITS = (_blobs(48, 0), _blobs(32, 1), _blobs(48, 2))


@pytest.fixture(scope="module")
def blob_runs() -> dict:
    factory = _Factory()
    kwargs = dict(num_classes=2, epochs=3, batch_size=16, lr=1e-3, seed=0)
    first = finetune_classification(factory, *SPLITS, **kwargs)
    second = finetune_classification(factory, *SPLITS, **kwargs)
    return {"factory": factory, "first": first, "second": second}


def test_learns_easy_task(blob_runs: dict) -> None:
    metrics = blob_runs["first"]["metrics"]
    assert metrics["accuracy"] >= 0.8  # chance is 0.5
    assert metrics["auc"] >= 0.9
    assert set(blob_runs["first"]) >= {"metrics", "best_epoch", "val_metrics", "history"}
    assert len(blob_runs["first"]["history"]) == blob_runs["first"]["epochs_run"] <= 3


def test_same_seed_same_numbers(blob_runs: dict) -> None:
    first, second = blob_runs["first"], blob_runs["second"]
    assert first["metrics"] == second["metrics"]
    assert first["history"] == second["history"]


def test_different_seed_differs() -> None:
    factory = _Factory("test_resnet")  # batch-norm backbone: the other family
    tiny = [(x[:16], y[:16]) for x, y in SPLITS]
    a = finetune_classification(factory, *tiny, num_classes=2, epochs=1, batch_size=16, seed=0)
    b = finetune_classification(factory, *tiny, num_classes=2, epochs=1, batch_size=16, seed=1)
    assert a["history"][0]["train_loss"] != b["history"][0]["train_loss"]


def test_backbone_built_fresh_and_fully_finetuned(blob_runs: dict) -> None:
    factory = blob_runs["factory"]
    assert len(factory.built) == 2  # one fresh backbone per run
    assert factory.built[0] is not factory.built[1]
    for backbone in factory.built:
        changed = [name for name, v in backbone.state_dict().items()
                   if not torch.equal(v, factory.reference[name])]
        assert any(name.startswith("model.stem") for name in changed)  # the earliest layer moved too
        assert any(name.startswith("model.stages.3") for name in changed)
    # the two runs trained separate copies from the same start, identically
    for name, v in factory.built[0].state_dict().items():
        assert torch.equal(v, factory.built[1].state_dict()[name])


def test_best_epoch_weights_are_restored() -> None:
    """Scripted validation scores: the loop must keep the best epoch's weights and stop after ``patience``."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    scores = iter([0.2, 0.7, 0.5, float("nan"), 0.69, 0.9])
    snapshots = []

    def validate() -> tuple[float, float, dict]:
        snapshots.append(model.weight.detach().clone())
        return next(scores), 1.0, {}

    fit = train_with_early_stopping(
        model, build_param_groups(nn.Identity(), model), num_train=8,
        compute_loss=lambda i: nn.functional.cross_entropy(model(x[i]), y[i]), validate=validate,
        epochs=10, batch_size=4, lr=0.1, weight_decay=0.0, patience=3, generator=torch.Generator().manual_seed(0))
    assert fit["best_epoch"] == 2 and fit["epochs_run"] == 5 and fit["stopped_early"]
    assert torch.equal(model.weight, snapshots[1])
    assert not torch.equal(model.weight, snapshots[-1])


def test_early_stopping_when_nothing_improves() -> None:
    # lr=0: the weights (LayerNorm net, no batch statistics) never change, so epoch 1 stays the best
    tiny = [(x[:16], y[:16]) for x, y in SPLITS]
    result = finetune_classification(_Factory(), *tiny, num_classes=2, epochs=10, batch_size=16, lr=0.0,
                                     patience=2, augment=False)
    assert result["best_epoch"] == 1
    assert result["epochs_run"] == 3 and result["stopped_early"]
    assert result["val_metrics"]["balanced_accuracy"] == result["history"][0]["balanced_accuracy"]


def test_best_epoch_matches_history(blob_runs: dict) -> None:
    result = blob_runs["first"]
    keys = [(h["balanced_accuracy"], -h["val_loss"]) for h in result["history"]]
    assert result["best_epoch"] == 1 + max(range(len(keys)), key=lambda i: keys[i])
    best = result["history"][result["best_epoch"] - 1]
    # the returned val metrics are re-scored on the restored weights: same as logged at that epoch
    assert result["val_metrics"]["balanced_accuracy"] == best["balanced_accuracy"]
    assert result["val_metrics"]["auc"] == pytest.approx(best["auc"], abs=1e-12)


def test_scheduled_lr_and_weight_decay_reach_the_right_groups() -> None:
    """Every step: lr = the engine's cosine schedule x lr_scale, weight decay only on weights (ndim >= 2)."""
    from organfm.engine.schedules import cosine_schedule

    torch.manual_seed(0)
    backbone, head = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten()), nn.Linear(4 * 4 * 4, 2)
    model = nn.Sequential(backbone, head)
    x, y = torch.randn(12, 1, 6, 6), torch.randint(0, 2, (12,))
    seen: list[tuple[int, list[tuple[float, float, bool]]]] = []

    def on_step(step: int, optimizer: torch.optim.Optimizer) -> None:
        seen.append((step, [(g["lr"], g["weight_decay"], all(p.ndim >= 2 for p in g["params"]))
                            for g in optimizer.param_groups]))

    groups = build_param_groups(backbone, head, layer_decay=0.5)
    train_with_early_stopping(model, groups, num_train=12, compute_loss=lambda i: nn.functional.cross_entropy(
        model(x[i]), y[i]), validate=lambda: (0.0, 1.0, {}), epochs=3, batch_size=4, lr=0.2, weight_decay=0.05,
        patience=5, generator=torch.Generator().manual_seed(0), on_step=on_step)
    steps_per_epoch, total = 3, 9
    expected = cosine_schedule(0.2, 0.002, total, warmup_steps=min(steps_per_epoch, total // 10))
    assert [s for s, _ in seen] == list(range(total))
    scales = [g["lr_scale"] for g in groups]
    assert sorted(set(scales)) == [0.25, 0.5, 1.0]  # conv (depth 0), batch norm (depth 1), head (depth 2)
    for step, values in seen:
        for (lr, wd, is_weight), scale in zip(values, scales):
            assert lr == pytest.approx(expected[step] * scale)
            assert wd == (0.05 if is_weight else 0.0)
    names = {n: g["apply_weight_decay"] for g in groups for n in g["names"]}
    assert names == {"backbone.0.weight": True, "backbone.0.bias": False, "backbone.1.weight": False,
                     "backbone.1.bias": False, "head.weight": True, "head.bias": False}


def test_rejects_bad_labels() -> None:
    bad = (SPLITS[0][0], SPLITS[0][1] + 5)
    with pytest.raises(ValueError, match="labels"):
        finetune_classification(_Factory(), bad, SPLITS[1], SPLITS[2], num_classes=2)


def test_balanced_class_weights_are_inverse_frequency() -> None:
    from organfm.evaluation.finetuning import balanced_class_weights

    w = balanced_class_weights(torch.tensor([0, 0, 0, 1]), 3)
    assert torch.allclose(w, torch.tensor([4 / 9, 4 / 3, 0.0]))  # N / (K N_k); an absent class gets 0


def test_class_weight_balanced_reaches_the_loss(monkeypatch) -> None:
    import organfm.evaluation.finetuning as ft

    seen = []
    real = ft.F.cross_entropy

    def spy(logits, target, weight=None, **kw):
        seen.append(None if weight is None else weight.clone())
        return real(logits, target, weight=weight, **kw)

    monkeypatch.setattr(ft.F, "cross_entropy", spy)
    x, y = _blobs(16, 5)
    y = torch.tensor([0] * 12 + [1] * 4)
    kwargs = dict(num_classes=2, epochs=1, batch_size=8, seed=0, augment=False)
    finetune_classification(_Factory(), (x, y), SPLITS[1], SPLITS[2], class_weight="balanced", **kwargs)
    weighted = [w for w in seen if w is not None]  # the training steps (validation losses stay unweighted)
    assert len(weighted) == 2 and all(torch.allclose(w, torch.tensor([16 / 24, 16 / 8])) for w in weighted)
    seen.clear()
    finetune_classification(_Factory(), (x, y), SPLITS[1], SPLITS[2], **kwargs)
    assert seen and all(w is None for w in seen)
    with pytest.raises(ValueError, match="class_weight"):
        finetune_classification(_Factory(), (x, y), SPLITS[1], SPLITS[2], class_weight="inverse", **kwargs)
