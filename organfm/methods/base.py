"""The method contract: a module that composes backbone, heads and losses and returns the loss."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["Method", "StepOutput"]


@dataclass
class StepOutput:
    """What one forward of a method returns.

    Attributes:
        loss: scalar to backpropagate.
        logs: detached scalars, one per loss term and diagnostic.
    """

    loss: torch.Tensor
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


class Method(nn.Module):
    """Base of every pretraining method.

    A method never calls ``backward``, touches an optimizer or picks a device: the loop in
    ``organfm.engine.loop`` does. Its trainable parts live under ``student``; an EMA teacher, when the
    method has one, under ``teacher``.

    Attributes:
        export_prefix: the ``state_dict`` prefix of the timm model that ``organfm export`` writes.
    """

    export_prefix: str = "student.backbone.model."

    def forward(self, batch: dict, *, teacher_temp: float) -> StepOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def update_teacher(self, momentum: float) -> None:
        """EMA step of the teacher (no-op for methods without one)."""

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """Parameters frozen during the first ``optim.freeze_last_layer_epochs`` (DINO's prototype layer)."""
        return []

    def exported_backbone(self) -> nn.Module:
        """The backbone a user takes away (Coda and DINO: the teacher's)."""
        owner = self.teacher if self.export_prefix.startswith("teacher.") else self.student
        return owner["backbone"]
