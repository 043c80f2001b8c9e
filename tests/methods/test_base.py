"""The method contract: a step's state names a missing schedule, and the exported backbone is the teacher's or the
student's as ``export_prefix`` says; the monitor embeds with that backbone."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from organfm.methods.base import Method, StepOutput, StepState


def test_a_schedule_the_method_did_not_declare_is_a_key_error_naming_the_scheduled_ones():
    state = StepState(step=3, epoch=0.5, values={"lr": 0.1, "weight_decay": 0.04})
    assert state["lr"] == 0.1
    with pytest.raises(KeyError, match=r"no schedule 'momentum' this step; the method must list it in its "
                                       r"`schedules` \(scheduled: lr, weight_decay\)"):
        state["momentum"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.step = 4  # the loop's state is read-only to a method


class _Student(Method):
    def __init__(self) -> None:
        super().__init__()
        self.student = nn.ModuleDict({"backbone": nn.Linear(4, 2)})
        self.teacher = nn.ModuleDict({"backbone": nn.Linear(4, 2)})


class _Teacher(_Student):
    export_prefix = "teacher.backbone.model."


def test_the_exported_backbone_follows_the_export_prefix_and_the_monitor_uses_it():
    student, teacher = _Student(), _Teacher()
    assert student.exported_backbone() is student.student["backbone"]
    assert teacher.exported_backbone() is teacher.teacher["backbone"]
    x = torch.randn(3, 4)
    torch.testing.assert_close(teacher.monitor_embeddings({"monitor_input": x}), teacher.teacher["backbone"](x))
    assert not torch.allclose(teacher.monitor_embeddings({"monitor_input": x}), teacher.student["backbone"](x))


def test_the_defaults_declare_nothing_beyond_images_and_an_abstract_forward():
    m = _Student()
    assert (m.batch_source, m.source_keys, m.schedules, m.section_defaults) == ("views", (), (), {})
    assert m.last_layer_parameters() == [] and m.exported_text() is None
    assert m.health_signals({}, StepState(step=0)) == {} and m.after_step(StepState(step=0)) is None
    with pytest.raises(NotImplementedError):
        m({}, StepState(step=0))
    out = StepOutput(loss=torch.tensor(1.0))
    assert out.logs == {} and StepOutput(loss=torch.tensor(1.0)).logs is not out.logs
