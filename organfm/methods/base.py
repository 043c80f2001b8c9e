"""The method contract: a module that composes backbone, heads and losses and returns the loss.

A method declares everything the engine needs to run it, so the engine holds no method name:

- ``batch_source``: the registered batch source that feeds it (``organfm.batches``), and ``source_keys``,
  the ``method.*`` keys that the source needs too (e.g. a label count);
- ``schedules``: the per-step values it reads beyond ``lr`` and ``weight_decay`` (which every method gets),
  e.g. ``("momentum", "teacher_temp")`` for an EMA teacher (``organfm.engine.schedules``);
- ``section_defaults``: its defaults for other config sections (``{"views.num_local_views": 0}``);
- ``export_prefix``: the ``state_dict`` prefix of the backbone that ``organfm export`` writes;
- its ``method.*`` config: the keyword-only arguments of ``__init__`` (``register_method`` derives it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = ["Method", "StepOutput", "StepState"]


@dataclass(frozen=True)
class StepState:
    """What the loop knows about the current optimisation step.

    Attributes:
        step: optimisation steps done before this one (0-based index of this step).
        epoch: ``step / steps_per_epoch``, fractional.
        values: this step's scheduled values, by name (``lr``, ``weight_decay`` and the method's own).
        rank: this process's global rank (a method drawing random masks seeds them by it, so ranks differ).
        micro_batch: index of this micro-batch within the step's gradient accumulation (0 without it).
    """

    step: int
    epoch: float = 0.0
    values: dict[str, float] = field(default_factory=dict)
    rank: int = 0
    micro_batch: int = 0

    def __getitem__(self, name: str) -> float:
        try:
            return self.values[name]
        except KeyError:
            raise KeyError(f"no schedule {name!r} this step; the method must list it in its `schedules` "
                           f"(scheduled: {', '.join(sorted(self.values))})") from None


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
    """

    name: ClassVar[str]
    card_summary: ClassVar[str] = ""  # one line for an export's model card (engine/model_folder.py)
    Config: ClassVar[type]
    batch_source: ClassVar[str] = "views"
    source_keys: ClassVar[tuple[str, ...]] = ()
    schedules: ClassVar[tuple[str, ...]] = ()
    section_defaults: ClassVar[dict[str, Any]] = {}
    export_prefix: ClassVar[str] = "student.backbone.model."

    def forward(self, batch: dict, state: StepState) -> StepOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def after_step(self, state: StepState) -> None:
        """Called once after each optimizer step (an EMA teacher follows the student here)."""

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """Parameters frozen during the first ``optim.freeze_last_layer_epochs`` (DINO's prototype layer)."""
        return []

    def exported_text(self) -> nn.Module | None:
        """The exported network's text side (an ``organfm.text.tower.JointText`` at ``<network>.text``), or None.

        ``organfm export`` writes it to ``export/text/`` beside the backbone.
        """
        return None

    def monitor_embeddings(self, batch: dict) -> torch.Tensor:
        """(N, D) embeddings of the monitor batch's ``monitor_input`` by the exported network (the health
        monitor's spread, rank and kNN are taken on them). An organ-set or other multi-input encoder overrides."""
        return self.exported_backbone()(batch["monitor_input"])

    def health_signals(self, batch: dict, state: StepState) -> dict[str, float]:
        """The method's own health signals on the fixed monitor batch (eval mode, no gradient); they must
        change no state (no centre update, no RNG draw). Keys the verdict reads
        (``organfm.monitor.verdict.judge``): ``teacher_entropy``, ``teacher_batch_entropy``, ``log_k``
        (prototype heads), ``alignment``, ``uniformity`` (contrastive), ``masked_loss``,
        ``mean_baseline_loss`` (masked reconstruction), ``organ_entropy`` (organ-set attention)."""
        return {}

    def exported_backbone(self) -> nn.Module:
        """The backbone a user takes away (Coda and DINO: the teacher's)."""
        owner = self.teacher if self.export_prefix.startswith("teacher.") else self.student
        return owner["backbone"]
