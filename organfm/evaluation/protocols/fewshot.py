"""Few-shot evaluation: stratified training subsets by fraction or by shots per class, repeated over seeds.

A subset depends only on the labels and the seed (``organfm.data.subsets.stratified_subset``), never on the
model, so every model is scored on the same subsets. Each setting (``"10%"``, ``"5-shot"``) runs once per seed
and is reported as mean ± sd with a 95% t-interval (the Coda paper's 1/10/20/50% protocol with 10 repeats).
The learners on each subset are the linear probe (settings ``linear.*``) and full fine-tuning (``finetune.*``).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from organfm.data.subsets import stratified_subset
from organfm.evaluation.finetuning import FinetuneConfig, finetune_once
from organfm.evaluation.metrics import summarize
from organfm.evaluation.probes import LinearConfig, linear_probe, linear_probe_kwargs
from organfm.evaluation.protocol import ModelRun, classification_values, make_row, register_protocol
from organfm.evaluation.task_data import TaskData

__all__ = ["FewShotConfig", "few_shot_settings", "fewshot", "run_few_shot"]


@dataclass
class FewShotConfig:
    """Few-shot subsets (``run_few_shot``) and the learners run on them (settings of ``linear.*``/``finetune.*``)."""

    fractions: list[float] = field(default_factory=lambda: [0.01, 0.1, 0.2, 0.5])
    shots: list[int] = field(default_factory=lambda: [1, 5, 10])
    seeds: int = 10
    methods: list[Literal["linear", "finetune"]] = field(default_factory=lambda: ["linear", "finetune"])


def few_shot_settings(fractions: Sequence[float] = (0.01, 0.1, 0.2, 0.5),
                      shots: Sequence[int] = (1, 5, 10)) -> list[tuple[str, dict[str, Any]]]:
    """Named settings: ``[("1%", {"fraction": 0.01}), ..., ("5-shot", {"shots": 5}), ...]``."""
    named = [(f"{100 * f:g}%", {"fraction": float(f)}) for f in fractions]
    return named + [(f"{int(s)}-shot", {"shots": int(s)}) for s in shots]


def run_few_shot(labels: np.ndarray | Sequence[int], evaluate: Callable[[np.ndarray, int], dict[str, float]], *,
                 fractions: Sequence[float] = (0.01, 0.1, 0.2, 0.5), shots: Sequence[int] = (1, 5, 10),
                 seeds: Sequence[int] = tuple(range(10))) -> dict[str, dict[str, Any]]:
    """Score ``evaluate`` on every setting x seed and summarise each metric over the seeds.

    Args:
        labels: (N,) training labels the subsets are drawn from.
        evaluate: ``(subset indices, seed) -> {metric: float}``, e.g. a linear probe or a fine-tune on
            the subset (the seed also seeds that training).
        fractions, shots: the settings (see :func:`few_shot_settings`).
        seeds: one repeat per seed.

    Returns:
        ``{setting: {"metrics": {metric: summarize(values)}, "values": {metric: [per seed]},
        "n_train": [subset size per seed], "seeds": [...]}}``.
    """
    results: dict[str, dict[str, Any]] = {}
    for name, kwargs in few_shot_settings(fractions, shots):
        values: dict[str, list[float]] = {}
        sizes = []
        for seed in seeds:
            subset = stratified_subset(labels, seed=int(seed), **kwargs)
            sizes.append(int(len(subset)))
            for metric, value in evaluate(subset, int(seed)).items():
                values.setdefault(metric, []).append(float(value))
        results[name] = {"metrics": {m: summarize(v) for m, v in values.items()}, "values": values,
                         "n_train": sizes, "seeds": [int(s) for s in seeds]}
    return results


@register_protocol("fewshot", config=FewShotConfig, inputs="images", splits=("train", "val", "test"),
                   uses=("linear", "finetune"))
def fewshot(run: ModelRun, data: TaskData, settings: FewShotConfig, *, linear: LinearConfig,
            finetune: FinetuneConfig) -> list[dict[str, Any]]:
    """Rows ``fewshot-<method>`` per setting (``1%``, ``5-shot``, ...), one value per seed.

    Args:
        run: the model.
        data: the task's train, val and test splits.
        settings: the task's ``fewshot.*`` section.
        linear: the ``linear.*`` section (the linear learner's grid).
        finetune: the ``finetune.*`` section (the fine-tuning learner's recipe).
    """
    s = settings
    train, val, test = data.splits["train"], data.splits["val"], data.splits["test"]
    seeds = [run.seed + k for k in range(s.seeds)]
    rows: list[dict[str, Any]] = []
    for method in s.methods:
        if method == "linear":
            f_train, f_val, f_test = run.features(train), run.features(val), run.features(test)
            kwargs = linear_probe_kwargs(linear, len(data.class_names), run.device)

            def evaluate(idx: np.ndarray, seed: int) -> dict[str, float]:
                out = linear_probe(f_train[idx], train.labels[idx], f_val, val.labels, f_test, seed=seed, **kwargs)
                return classification_values(test.labels, out["test_probs"])
        else:
            def evaluate(idx: np.ndarray, seed: int) -> dict[str, float]:
                out = finetune_once(run, data, idx, seed, finetune)
                out.pop("best_epoch")
                return out
        summary = run_few_shot(train.labels.numpy(), evaluate, fractions=s.fractions, shots=s.shots, seeds=seeds)
        rows += [make_row(run.name, f"fewshot-{method}", setting, r["values"], n_train=r["n_train"])
                 for setting, r in summary.items()]
    return rows
