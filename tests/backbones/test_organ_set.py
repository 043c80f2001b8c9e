"""organ_set_vit: no leakage from missing organs (P1), masking, attention, export round trip."""
from __future__ import annotations

import pytest
import torch

from organfm.backbones import create_backbone

SMALL = dict(num_organs=3, image_size=16, patch_size=8, embed_dim=32, depth=2, num_heads=4)


def _sets(b: int = 4, o: int = 3, size: int = 16, dim: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn((b, o, 1) + (size,) * dim, generator=g)
    available = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 0], [1, 1, 0]], dtype=torch.bool)[:b, :o]
    return x, available


def _fill_missing(x: torch.Tensor, available: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    keep = available.view(*available.shape, *([1] * (x.dim() - 2)))
    return torch.where(keep, x, value)


@pytest.mark.parametrize("dim", [2, 3])
def test_missing_organ_pixels_do_not_leak(dim):
    torch.manual_seed(0)
    bb = create_backbone("organ_set_vit", spatial_dims=dim, **SMALL).eval()
    x, available = _sets(dim=dim)
    zeros = _fill_missing(x, available, torch.zeros(()))
    noise = _fill_missing(x, available, 100 * torch.randn_like(x))
    nans = _fill_missing(x, available, torch.full((), float("nan")))
    with torch.no_grad():
        a = bb.forward_features(zeros, available)
        b = bb.forward_features(noise, available)
        c = bb(nans)  # without `available`: all-NaN organs are the missing ones
    assert torch.equal(a["cls"], b["cls"]) and torch.equal(a["tokens"], b["tokens"])
    assert torch.allclose(a["cls"], c, atol=1e-6)
    # ... while an AVAILABLE organ's pixels do change the output (the test can fail)
    changed = x.clone()
    changed[0, 0] += 1.0
    with torch.no_grad():
        assert not torch.allclose(bb(changed, available)[0], bb(x, available)[0])


def test_missing_organs_get_no_attention_and_available_ones_all_of_it():
    bb = create_backbone("organ_set_vit", **SMALL).eval()
    x, available = _sets()
    with torch.no_grad():
        attn = bb.forward_features(x, available)["cls_attention"].view(4, 3, bb.tokens_per_organ)
    assert torch.all(attn[~available] == 0)
    # [CLS] attends to itself too, so token attention sums to < 1, and is > 0 on every available token
    assert torch.all(attn.sum((1, 2)) < 1) and torch.all(attn[available] > 0)


def test_token_mask_replaces_exactly_the_masked_organ():
    torch.manual_seed(0)
    bb = create_backbone("organ_set_vit", **SMALL).eval()
    x, available = _sets()
    n = bb.tokens_per_organ
    token_mask = torch.zeros(4, 3 * n, dtype=torch.bool)
    token_mask[0, :n] = True  # organ 0 of subject 0
    with torch.no_grad():
        masked = bb.forward_features(x, available, token_mask=token_mask)["cls"]
        other = x.clone()
        other[0, 0] = torch.randn_like(other[0, 0])  # the masked organ's pixels no longer matter
        masked_other = bb.forward_features(other, available, token_mask=token_mask)["cls"]
        plain = bb.forward_features(x, available)["cls"]
    assert torch.equal(masked, masked_other)
    assert not torch.allclose(masked[0], plain[0])
    assert torch.equal(masked[1:], plain[1:])  # other subjects untouched


def test_organ_channels_layout_equals_set_layout_and_bad_shapes_are_named():
    bb = create_backbone("organ_set_vit", **SMALL).eval()
    x, _ = _sets()
    with torch.no_grad():
        assert torch.equal(bb(x), bb(x.flatten(1, 2)))
    with pytest.raises(ValueError, match="organ_set_vit expects"):
        bb(torch.randn(2, 4, 1, 16, 16))
    partly = x.clone()
    partly[0, 1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="partly NaN"):
        bb(partly)
    with pytest.raises(NotImplementedError, match="token-set encoder"):
        bb.forward_skips(x)


def test_gradients_reach_tokenizers_of_available_organs_only():
    bb = create_backbone("organ_set_vit", **SMALL)
    x, _ = _sets()
    available = torch.tensor([[1, 0, 1]] * 4, dtype=torch.bool)
    bb(x, available).sum().backward()
    grads = [t.weight.grad for t in bb.model.tokenizers]
    assert grads[0].abs().sum() > 0 and grads[2].abs().sum() > 0
    assert grads[1] is None or torch.all(grads[1] == 0)


def test_export_reloads_and_keeps_the_no_leakage_property(tmp_path):
    from safetensors.torch import save_file
    import json

    torch.manual_seed(1)
    bb = create_backbone("organ_set_vit", **SMALL).eval()
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in bb.model.state_dict().items()}, str(path),
              metadata={"backbone_args": json.dumps(bb.backbone_args), "format": "pt"})
    reloaded = create_backbone("organ_set_vit", in_chans=1, pretrained_file=str(path)).eval()
    assert reloaded.backbone_args == bb.backbone_args
    x, available = _sets()
    with torch.no_grad():
        assert torch.equal(reloaded(x, available), bb(x, available))
        noisy = _fill_missing(x, available, 1e3 * torch.randn_like(x))
        assert torch.equal(reloaded(noisy, available), reloaded(x, available))


def _peaked(depth: int = 3, **kw) -> torch.nn.Module:
    """A backbone whose attention is far from uniform and differs between layers and heads (a fresh init is
    near uniform everywhere, where taking the wrong layer or head would go unnoticed)."""
    torch.manual_seed(0)
    bb = create_backbone("organ_set_vit", **{**SMALL, "depth": depth, **kw}).eval()
    with torch.no_grad():
        for p in bb.model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return bb


@pytest.mark.parametrize("dim", [2, 3])
def test_fused_attention_gives_the_outputs_of_the_explicit_one(dim):
    bb = _peaked(spatial_dims=dim)
    x, available = _sets(dim=dim)
    token_mask = torch.zeros(4, 3 * bb.tokens_per_organ, dtype=torch.bool)
    token_mask[:, :bb.tokens_per_organ] = True
    with torch.no_grad():
        fused = bb.forward_features(x, available, token_mask=token_mask)
        bb.model.fused_attention = False
        explicit = bb.forward_features(x, available, token_mask=token_mask)
    for key in ("cls", "tokens", "cls_attention"):
        assert torch.allclose(fused[key], explicit[key], atol=1e-5), key


def test_fused_attention_gradients_match_the_explicit_ones():
    bb = _peaked()
    x, available = _sets()
    grads = []
    for fused in (True, False):
        bb.model.fused_attention = fused
        bb.zero_grad()
        out = bb.forward_features(x, available)
        (out["cls"].pow(2).sum() + out["cls_attention"].sum()).backward()
        grads.append(bb.model.blocks[0].attn.qkv.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-4)


def test_cls_attention_is_the_last_layers_cls_row_averaged_over_heads():
    """Recomputed by hand from the input of the last block: fails if the first layer's or one head's is taken."""
    bb = _peaked(depth=3)
    x, available = _sets()
    seen = {}
    blocks = bb.model.blocks
    hooks = [blocks[i].register_forward_pre_hook(lambda m, args, i=i: seen.__setitem__(i, args)) for i in (0, 2)]
    with torch.no_grad():
        got = bb.forward_features(x, available)["cls_attention"]
    for h in hooks:
        h.remove()

    def cls_rows(block, inputs):  # (B, heads, N-1): the [CLS] query's softmax over keys, token keys only
        hidden, ignore = inputs
        attn = block.attn
        b, n, e = hidden.shape
        q, k, _ = attn.qkv(block.norm1(hidden)).view(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
        logits = (q[:, :, 0:1] @ k.transpose(-2, -1))[:, :, 0] * attn.scale
        return logits.masked_fill(ignore[:, None], float("-inf")).softmax(-1)[:, :, 1:]

    with torch.no_grad():
        last, first = cls_rows(blocks[2], seen[2]), cls_rows(blocks[0], seen[0])
    assert torch.allclose(got, last.mean(1), atol=1e-6)
    # the reference tells the alternatives apart on this network
    assert (last.mean(1) - first.mean(1)).abs().max() > 1e-3
    assert (last.mean(1) - last[:, 0]).abs().max() > 1e-3


def test_size_arguments_set_width_depth_heads_and_patch():
    bb = create_backbone("organ_set_vit", num_organs=2, image_size=32, patch_size=16, embed_dim=48, depth=3,
                         num_heads=6)
    assert bb.num_features == 48 and len(bb.model.blocks) == 3 and bb.model.blocks[0].attn.num_heads == 6
    assert bb.tokens_per_organ == 4 and bb.backbone_args["embed_dim"] == 48
    with pytest.raises(ValueError, match="divisible"):
        create_backbone("organ_set_vit", embed_dim=48, num_heads=5)
    with pytest.raises(ValueError, match="depth"):
        create_backbone("organ_set_vit", depth=0)
