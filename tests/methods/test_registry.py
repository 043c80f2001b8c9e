"""The method registry: ``@register_method`` derives ``method.*`` config from the constructor, refuses a second
registration of a name, and ``create_method`` drops ``None`` so the constructor's defaults win."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from organfm.methods.base import Method, StepOutput, StepState
from organfm.methods.registry import create_method, get_method, list_methods, register_method
from organfm.registry import METHODS


@pytest.fixture
def scratch_methods(monkeypatch):
    """The method registry with the built-ins loaded, restored after the test (no test method leaks out)."""
    METHODS.names()  # load the built-ins into the real table first: the copy below must hold them
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))
    return METHODS


class _Toy(Method):
    """A method with one of each kind of config key."""

    def __init__(self, backbone: nn.Module, *, temp: float = 0.1, sizes: tuple[int, ...] = (2, 3),
                 name_hint: str | None = None) -> None:
        super().__init__()
        self.student = nn.ModuleDict({"backbone": backbone})
        self.temp, self.sizes, self.name_hint = temp, sizes, name_hint

    def forward(self, batch: dict, state: StepState) -> StepOutput:
        loss = self.student["backbone"](batch["image"]).mean() / self.temp
        return StepOutput(loss=loss, logs={"loss": loss.detach()})


def test_the_config_is_the_keyword_arguments_with_their_defaults(scratch_methods):
    cls = register_method("toy")(_Toy)
    assert cls is _Toy and cls.name == "toy" and get_method("toy") is _Toy and "toy" in list_methods()
    fields = {f.name: f for f in dataclasses.fields(cls.Config)}
    assert list(fields) == ["temp", "sizes", "name_hint"]  # keyword-only arguments, in order; not the backbone
    config = cls.Config()
    assert (config.temp, config.sizes, config.name_hint) == (0.1, [2, 3], None)  # a tuple default becomes a list
    assert cls.Config().sizes is not config.sizes  # each config its own list
    assert cls.Config.__name__ == "_ToyConfig"


def test_create_method_drops_none_so_the_constructor_default_wins(scratch_methods):
    register_method("toy")(_Toy)
    m = create_method("toy", backbone=nn.Flatten(), temp=None, sizes=[4])
    assert (m.temp, m.sizes) == (0.1, [4])
    out = m({"image": torch.ones(2, 1, 2, 2)}, StepState(step=0))
    assert out.loss.item() == pytest.approx(10.0)  # mean of ones / temp 0.1


def test_a_name_registered_twice_is_refused_and_the_first_stays(scratch_methods):
    register_method("toy")(_Toy)

    class Other(_Toy):
        pass

    with pytest.raises(ValueError, match="method 'toy' is registered twice"):
        register_method("toy")(Other)
    assert get_method("toy") is _Toy
    with pytest.raises(ValueError, match="method 'coda' is registered twice"):  # a built-in name is taken too
        register_method("coda")(Other)


def test_unknown_names_list_the_valid_ones_and_a_key_without_default_is_refused(scratch_methods):
    with pytest.raises(ValueError, match=r"unknown method 'nope'; valid: .*\bcoda\b.*\bdino\b"):
        get_method("nope")

    class NoDefault(_Toy):
        def __init__(self, backbone: nn.Module, *, temp: float) -> None:
            super().__init__(backbone, temp=temp)

    with pytest.raises(TypeError, match="keyword argument 'temp' needs a default"):
        register_method("no_default")(NoDefault)
    assert "no_default" not in list_methods()
