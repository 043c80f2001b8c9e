import pytest
import torch

from organfm.views import GlobalLocalViews


def test_shapes_counts_and_normalisation():
    r = GlobalLocalViews(num_global_views=2, global_size=32, num_local_views=5, local_size=16)
    views = r(torch.rand(1, 50, 60))
    assert [tuple(v.shape) for v in views["global"]] == [(1, 32, 32)] * 2
    assert [tuple(v.shape) for v in views["local"]] == [(1, 16, 16)] * 5
    # intensities in [0, 1] map to [-1, 1] by (x - 0.5) / 0.5; blur and crops cannot leave that range
    for v in views["global"] + views["local"]:
        assert v.min() >= -1 - 1e-5 and v.max() <= 1 + 1e-5


def test_one_channel_in_one_channel_out_and_3d_refused():
    r = GlobalLocalViews(global_size=32, num_local_views=0)
    assert r(torch.rand(1, 40, 40))["global"][0].shape[0] == 1
    with pytest.raises(ValueError, match="2D image"):
        r(torch.rand(1, 8, 40, 40))


def test_global_views_differ_and_vertical_flip_is_off_by_default():
    r = GlobalLocalViews(global_size=32, num_local_views=0, rotation_degrees=0, brightness=0, contrast=0,
                         gamma=(1.0, 1.0), blur_probs=(0, 0, 0), global_scale=(1.0, 1.0), hflip_prob=0)
    img = torch.linspace(0, 1, 32).view(1, 32, 1).expand(1, 32, 32).contiguous()  # top-to-bottom ramp
    torch.manual_seed(0)
    for _ in range(5):  # a full-scale crop with no other augmentation keeps the anatomy's orientation
        v = r(img)["global"][0]
        assert v[0, 0].mean() < v[0, -1].mean()


def test_the_views_config_and_the_device_recipe_take_the_recipe_signature_defaults():
    import dataclasses
    import inspect

    from organfm.config import ViewsConfig
    from organfm.views.device import DeviceViews
    from organfm.views.recipes import resolve_view_arguments

    recipe = {name: p.default for name, p in inspect.signature(GlobalLocalViews).parameters.items()}
    config = dataclasses.asdict(ViewsConfig())
    assert list(config) == [*recipe, "on_device"] and config.pop("on_device") is False
    assert config == {k: list(v) if isinstance(v, tuple) else v for k, v in recipe.items()}
    assert resolve_view_arguments(global_size=40) == {**recipe, "global_size": 40}
    device = DeviceViews()
    assert (device.global_size, device.blur_probs, device.hflip_prob) == (64, (1.0, 0.1, 0.5), 0.5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'blur'"):
        DeviceViews(blur=1.0)
