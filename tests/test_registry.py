import pytest

from organfm.registry import Registry


def test_register_create_and_errors():
    reg = Registry("thing")

    @reg.register("a")
    def make(x=1, y=2):
        return (x, y)

    assert reg.create("a", x=5, y=None) == (5, 2)  # None kwargs fall back to the component default
    assert reg.names() == ["a"] and "a" in reg
    with pytest.raises(ValueError, match="unknown thing 'b'; valid: a"):
        reg.create("b")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(make)
