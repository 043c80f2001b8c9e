"""Few-shot subsets: stratified, deterministic per seed, model-independent; summaries over seeds; fine-tune path."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from organfm.evaluation.protocols.fewshot import few_shot_settings, run_few_shot


def test_same_seed_gives_the_same_subset_for_every_model():
    labels = np.random.default_rng(0).integers(0, 5, size=500)
    seen: dict[str, list[np.ndarray]] = {}
    for model in ("a", "b"):
        def evaluate(idx: np.ndarray, seed: int, model: str = model) -> dict[str, float]:
            seen.setdefault(model, []).append(idx)
            return {"accuracy": float(len(idx))}
        run_few_shot(labels, evaluate, fractions=(0.1,), shots=(1,), seeds=(0, 1, 2))
    assert all(np.array_equal(a, b) for a, b in zip(seen["a"], seen["b"]))


def test_run_few_shot_summarises_each_setting_over_seeds():
    labels = np.repeat(np.arange(2), 50)
    out = run_few_shot(labels, lambda idx, seed: {"accuracy": 0.5 + 0.01 * seed}, fractions=(0.2,), shots=(5,),
                       seeds=range(4))
    assert list(out) == ["20%", "5-shot"] == [name for name, _ in few_shot_settings((0.2,), (5,))]
    summary = out["20%"]["metrics"]["accuracy"]
    assert summary["n"] == 4 and summary["mean"] == pytest.approx(0.515)
    assert summary["sd"] == pytest.approx(np.std([0.5, 0.51, 0.52, 0.53], ddof=1))
    assert summary["ci95_low"] < summary["mean"] < summary["ci95_high"]
    assert out["5-shot"]["n_train"] == [10, 10, 10, 10]


def test_few_shot_finetuning_runs_on_real_pneumonia(pneumonia_small):
    from organfm.evaluation.finetuning import finetune_classification
    from organfm.features.encoders import load_encoder

    make, contract = load_encoder("random:test_resnet", image_size=32)
    splits = pneumonia_small.splits
    norm = {n: (s.images - 0.5) / 0.5 for n, s in splits.items()}
    val, test = (norm["val"][:32], splits["val"].labels[:32]), (norm["test"][:32], splits["test"].labels[:32])

    def evaluate(idx: np.ndarray, seed: int) -> dict[str, float]:
        out = finetune_classification(make, (norm["train"][idx], splits["train"].labels[idx]), val, test,
                                      num_classes=2, epochs=1, batch_size=16, seed=seed)
        return {"accuracy": out["metrics"]["accuracy"]}

    a = run_few_shot(splits["train"].labels.numpy(), evaluate, fractions=(), shots=(8,), seeds=(3,))
    b = run_few_shot(splits["train"].labels.numpy(), evaluate, fractions=(), shots=(8,), seeds=(3,))
    assert a["8-shot"]["values"] == b["8-shot"]["values"]  # same seed, same subset, same number
    assert a["8-shot"]["n_train"] == [16] and contract["mean"] == [0.5]
    assert torch.isfinite(torch.tensor(a["8-shot"]["values"]["accuracy"])).all()
