"""Zero-shot classification with prompts (CLIP's protocol): no training, the nearest class prompt wins.

Each class gets one prompt, templated from its name like the training captions ("a medical image of the
liver"), or given explicitly (``zeroshot.prompts``). Images and prompts meet in the model's joint space
(its text tower, ``<export>/text/``): ``probs = softmax(exp(logit_scale) * image_emb @ prompt_emb.T)``.
Models without a text tower are skipped with a warning.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from organfm.evaluation.protocol import ModelRun, classification_values, make_row, metric_lists, register_protocol
from organfm.evaluation.task_data import TaskData
from organfm.text.captions import TEMPLATE, check_template, prompts

__all__ = ["ZeroShotConfig", "class_prompts", "zero_shot_probs", "zeroshot"]


@dataclass
class ZeroShotConfig:
    """One prompt per class: ``template`` filled with ``modality`` and the class name, or ``prompts`` verbatim."""

    template: str = TEMPLATE  # placeholders: {modality}, {organ} (the class name), {label} (empty here)
    modality: str = "medical"
    prompts: list[str] = field(default_factory=list)  # one per class, in class order; overrides the template


def class_prompts(class_names: list[str], config: ZeroShotConfig) -> list[str]:
    """The prompt of each class, in class order.

    Raises:
        ValueError: explicit prompts whose count is not the number of classes, or a bad template.
    """
    if config.prompts:
        if len(config.prompts) != len(class_names):
            raise ValueError(f"zeroshot.prompts has {len(config.prompts)} prompts for {len(class_names)} classes "
                             f"({', '.join(class_names)}); give one per class, in that order")
        return list(config.prompts)
    check_template(config.template, "zeroshot.template")
    return prompts(class_names, modality=config.modality, template=config.template)


def zero_shot_probs(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """Class probabilities from joint-space embeddings.

    Args:
        image_emb: (N, D) L2-normalised image embeddings.
        text_emb: (K, D) L2-normalised prompt embeddings, one per class.
        logit_scale: the model's learnt log inverse temperature (logits are scaled by its exp).

    Returns:
        (N, K) float32 probabilities on the CPU.
    """
    logits = torch.exp(torch.as_tensor(float(logit_scale))) * (image_emb.float() @ text_emb.float().T)
    return logits.softmax(dim=1).cpu()


@register_protocol("zeroshot", config=ZeroShotConfig, inputs="features", splits=("test",))
def zeroshot(run: ModelRun, data: TaskData, settings: ZeroShotConfig) -> list[dict[str, Any]]:
    """One row: accuracy, AUC, ... of the nearest class prompt on test, and the prompts used."""
    joint = run.joint_text()
    if joint is None:
        run.warn_no_text("zeroshot")
        return []
    test = data.splits["test"]
    texts = class_prompts(data.class_names, settings)
    probs = zero_shot_probs(run.joint_images(test), joint.embed_texts(texts).to(run.device),
                            joint.logit_scale.item())
    setting = "prompts" if settings.prompts else "template"
    return [make_row(run.name, "zeroshot", setting, metric_lists(classification_values(test.labels, probs)),
                     prompts=texts)]
