"""Triad: reconstruction loss sees masked voxels only, the mask value learns, the text term switches off at 0."""
from __future__ import annotations

import pytest
import torch

from organfm.backbones import create_backbone
from organfm.methods import create_method
from organfm.methods.base import StepState
from organfm.views.mask3d import SimMIMMask3D


def _method(**kw):
    backbone = create_backbone("plainconv3d", in_chans=1, channels=[4, 8, 16], strides=[1, 2, 2])
    return create_method("triad", backbone=backbone, cube=16, mask_patch_size=4, text_dim=8, text_hidden=16, **kw)


def _batch(b: int = 4, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    gen = SimMIMMask3D(16, 4, 2, 0.6)
    return {"image": torch.rand(b, 1, 16, 16, 16, generator=g), "mask": torch.stack([gen(g) for _ in range(b)]),
            "text": torch.randn(b, 8, generator=g)}


def test_reconstruction_gradient_reaches_masked_input_voxels_only_through_the_target():
    torch.manual_seed(0)
    m = _method(text_weight=0.0)
    batch = _batch()
    image = batch["image"].requires_grad_(True)
    # the target's gradient: with the encoder input fixed, only masked voxels of the target matter
    out = m(dict(batch, image=image), StepState(step=0))
    (grad,) = torch.autograd.grad(out.loss, image)
    voxels = SimMIMMask3D(16, 4, 2, 0.6).voxels(batch["mask"]).unsqueeze(1).bool()
    # visible voxels feed the encoder (non-zero grad possible); masked voxels are replaced by the mask value
    # in the encoder input, so their only gradient is through the L1 target
    rec = m.student["decoder"](m.student["backbone"].forward_skips(batch["image"], mask=voxels.float())[-1],
                               (16, 16, 16)).detach()
    expected = -torch.sign(rec - batch["image"]) * voxels / voxels.sum()
    assert torch.allclose(grad[voxels], expected[voxels], atol=1e-6)


def test_loss_ignores_visible_voxels_of_the_prediction():
    torch.manual_seed(0)
    m = _method(text_weight=0.0)
    batch = _batch()
    captured = {}
    decoder = m.student["decoder"]

    def keep(module, args, output):
        captured["rec"] = output

    hook = decoder.register_forward_hook(keep)
    out = m(batch, StepState(step=0))
    hook.remove()
    (grad,) = torch.autograd.grad(out.loss, captured["rec"])
    voxels = SimMIMMask3D(16, 4, 2, 0.6).voxels(batch["mask"]).unsqueeze(1).bool()
    assert (grad[~voxels] == 0).all() and (grad[voxels] != 0).any()


def test_mask_value_gets_a_gradient_and_moves():
    torch.manual_seed(0)
    m = _method(text_weight=0.0)
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    before = m.student["backbone"].model.mask_value.detach().clone()
    out = m(_batch(), StepState(step=0))
    out.loss.backward()
    assert m.student["backbone"].model.mask_value.grad.abs().item() > 0
    opt.step()
    assert not torch.equal(before, m.student["backbone"].model.mask_value.detach())


def test_text_weight_zero_builds_no_text_head_and_positive_adds_the_term():
    off, on = _method(text_weight=0.0), _method(text_weight=0.5)
    assert "text_head" not in off.student and "text_head" in on.student
    torch.manual_seed(0)
    out = on(_batch(), StepState(step=0))
    assert set(out.logs) == {"loss", "loss_rec", "loss_text"}
    assert torch.isclose(out.loss, out.logs["loss_rec"] + 0.5 * out.logs["loss_text"])
    out.loss.backward()
    # the text head is trained; the decoder only by reconstruction
    assert all(p.grad is not None for p in on.student["text_head"].parameters())


def test_refuses_a_2d_or_unmaskable_backbone():
    with pytest.raises(ValueError, match="3D encoder"):
        create_method("triad", backbone=create_backbone("unet_small", in_chans=1, channels=[8, 16]))
    with pytest.raises(ValueError, match="masks its input"):
        create_method("triad", backbone=create_backbone("unet_small", in_chans=1, spatial_dims=3, channels=[8, 16]))


def test_text_pairing_depends_on_step_and_batch_not_on_the_global_rng():
    # a DataLoader draws from the global RNG when it starts, so a resumed run's global RNG differs
    torch.manual_seed(0)
    m = _method(text_weight=1.0)
    batch = dict(_batch(b=6), index=torch.arange(6))
    torch.manual_seed(1)
    a = m(batch, StepState(step=5)).logs["loss_text"]
    torch.manual_seed(2)
    b = m(batch, StepState(step=5)).logs["loss_text"]
    c = m(batch, StepState(step=6)).logs["loss_text"]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_decoder_width_follows_the_encoder():
    # the Swin path: width = the bottleneck (embed x 16; the spec's 768 at embed 48), so the adapter is the identity
    swin = create_backbone("swin3d", in_chans=1, embed_dim=6)
    m = create_method("triad", backbone=swin, cube=64, mask_patch_size=16, text_dim=8, text_hidden=16)
    decoder = m.student["decoder"]
    assert isinstance(decoder.adapter, torch.nn.Identity) and decoder.blocks[0][0].in_channels == 96
    assert [b[0].out_channels for b in decoder.blocks] == [48, 24, 12, 6, 6]
    # the U-Net path keeps the reference's 24; an explicit width wins
    assert _method().student["decoder"].blocks[0][0].in_channels == 24
    assert _method(decoder_dim=8).student["decoder"].blocks[0][0].in_channels == 8


def test_health_baselines_are_each_volumes_visible_mean_and_median():
    torch.manual_seed(0)
    m = _method(text_weight=0.0)
    batch = _batch(b=3)
    image = torch.zeros(3, 1, 16, 16, 16)
    image[:, :, 4:7, 4:7, 4:7] = 1.0  # a sparse binary shape: the visible median is 0, the mean is small
    signals = m.health_signals(dict(batch, image=image), StepState(step=0))
    hidden = SimMIMMask3D(16, 4, 2, 0.6).voxels(batch["mask"]).unsqueeze(1).bool()
    # predicting 0 everywhere: the L1 over hidden voxels is the fraction of them that are foreground
    assert signals["median_baseline_loss"] == pytest.approx(float(image[hidden].mean()), abs=1e-6)
    assert signals["median_baseline_loss"] < signals["mean_baseline_loss"]


def test_reconstruction_range_holds_the_values_and_passes_the_gradient_straight_through():
    from organfm.methods.triad import TriadDecoder

    torch.manual_seed(0)
    free, held = TriadDecoder(16, 8, 2), TriadDecoder(16, 8, 2, out_range=(0.0, 1.0))
    held.load_state_dict(free.state_dict())
    with torch.no_grad():
        free.head.bias.fill_(0.5)  # outputs on both sides of [0, 1]
        held.head.bias.fill_(0.5)
        free.head.weight.mul_(20)
        held.head.weight.mul_(20)
    x = torch.randn(2, 16, 4, 4, 4)
    a, b = free(x, (16, 16, 16)), held(x, (16, 16, 16))
    assert a.min() < 0 and a.max() > 1  # the reference's output is unbounded
    assert torch.equal(b, a.clamp(0, 1)) and b.min() >= 0 and b.max() <= 1
    # straight through: the same gradient as the unbounded output, also where it was clamped (no dead voxels)
    a.sum().backward()
    b.sum().backward()
    assert torch.equal(free.head.bias.grad, held.head.bias.grad) and held.head.bias.grad.item() == 2 * 16 ** 3
    with pytest.raises(ValueError, match=r"reconstruction_range must be \[low, high\] with low < high"):
        TriadDecoder(16, 8, 2, out_range=(1.0, 0.0))


def test_reconstruction_range_reaches_the_decoder_and_the_default_is_the_reference():
    assert _method().student["decoder"].out_range is None
    m = _method(reconstruction_range=[0, 1])
    assert m.student["decoder"].out_range == (0.0, 1.0)
    out = m(_batch(), StepState(step=0))
    assert torch.isfinite(out.loss)
