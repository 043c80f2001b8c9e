"""``organ_set_vit``: one transformer over the tokens of whatever organs a subject has (Pan-FM, P1).

Each organ has its own tokenizer (a patch embedding of that organ's image or volume); every token gets a
learnable organ-type embedding and a positional embedding; a [CLS] token is prepended and a transformer
runs over [CLS] + the tokens of all organ slots with a key-padding mask, so a missing organ's tokens are
never attended to. Its pixels are replaced by zeros before the tokenizer (NaN * 0 would still be NaN), so
the output is the same whatever a missing organ's input holds: no leakage.

Input: ``(B, O, C, *S)``, or ``(B, O*C, *S)`` (organs stacked on channels, so the generic single-tensor
tools work), plus ``available`` (B, O) bool; without ``available``, an organ whose pixels are all NaN is
missing. The student of Pan-FM passes ``token_mask`` (B, O*n): those tokens become a learnable [MASK].
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from organfm.backbones.weights import load_backbone_weights, resolve_backbone_args

__all__ = ["OrganSetBackbone", "OrganSetViT"]

_DEFAULTS: dict[str, Any] = {"num_organs": 5, "image_size": 32, "patch_size": 8, "spatial_dims": 2, "in_chans": 1,
                             "embed_dim": 64, "depth": 2, "num_heads": 4, "mlp_ratio": 2.0}


class _Attention(nn.Module):
    """Multi-head self-attention with a key-padding mask; fused (``F.scaled_dot_product_attention``) by default.

    Only the [CLS] row of the last layer's attention is ever read (SGM's saliency), so the full (N, N) matrix is
    never materialised on the fused path: ``cls_weights=True`` adds that one row, computed explicitly.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads, self.scale = num_heads, (dim // num_heads) ** -0.5
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, ignore: torch.Tensor, *, cls_weights: bool = False,
                fused: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, N, E), ignore (B, N) bool keys to leave out -> (B, N, E) and, with ``cls_weights``, the [CLS]
        query's attention (B, heads, N) (else None). ``fused=False`` is the explicit reference path."""
        b, n, e = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, e // self.num_heads).permute(2, 0, 3, 1, 4)
        if fused:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=~ignore[:, None, None, :])
            weights = None
            if cls_weights:
                weights = self._weights(q[:, :, :1], k, ignore)[:, :, 0]
        else:
            attn = self._weights(q, k, ignore)
            out, weights = attn @ v, (attn[:, :, 0] if cls_weights else None)
        return self.proj(out.transpose(1, 2).reshape(b, n, e)), weights

    def _weights(self, q: torch.Tensor, k: torch.Tensor, ignore: torch.Tensor) -> torch.Tensor:
        """Softmax attention of queries q (B, H, Q, e) over keys k (B, H, N, e) -> (B, H, Q, N)."""
        logits = (q @ k.transpose(-2, -1)) * self.scale
        return logits.masked_fill(ignore[:, None, None, :], float("-inf")).softmax(dim=-1)


class _Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = _Attention(dim, num_heads)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, ignore: torch.Tensor, *, cls_weights: bool = False,
                fused: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        out, attn = self.attn(self.norm1(x), ignore, cls_weights=cls_weights, fused=fused)
        x = x + out
        return x + self.mlp(self.norm2(x)), attn


class OrganSetViT(nn.Module):
    """The exported network: per-organ tokenizers, organ/position embeddings, [CLS], [MASK], transformer.

    Args:
        num_organs: O organ slots (one tokenizer and one organ-type embedding each).
        image_size: S, side of every organ image.
        patch_size: P; each organ gives n = (S / P)^spatial_dims tokens.
        spatial_dims: 2 or 3.
        in_chans: C.
        embed_dim: E.
        depth: transformer blocks.
        num_heads: attention heads.
        mlp_ratio: MLP width / E.

    Attributes:
        fused_attention: attention through ``F.scaled_dot_product_attention`` (default); False runs the explicit
            softmax(QK^T)V everywhere (the reference the fused path is tested against).
    """

    fused_attention: bool = True

    def __init__(self, num_organs: int, image_size: int, patch_size: int, spatial_dims: int, in_chans: int,
                 embed_dim: int, depth: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1 (the last block's attention feeds SGM), got {depth}")
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.num_organs, self.spatial_dims, self.in_chans = num_organs, spatial_dims, in_chans
        self.image_size = image_size
        self.tokens_per_organ = (image_size // patch_size) ** spatial_dims
        self.tokenizers = nn.ModuleList(conv(in_chans, embed_dim, patch_size, stride=patch_size)
                                        for _ in range(num_organs))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1, self.tokens_per_organ, embed_dim))
        self.organ_embed = nn.Parameter(torch.zeros(1, num_organs, 1, embed_dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.blocks = nn.ModuleList(_Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim)
        for p in (self.pos_embed, self.organ_embed, self.cls_token, self.mask_token):
            nn.init.trunc_normal_(p, std=0.02)

    def forward(self, images: torch.Tensor, available: torch.Tensor,
                token_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Encode organ sets.

        Args:
            images: (B, O, C, *S).
            available: (B, O) bool.
            token_mask: (B, O*n) bool, tokens replaced by [MASK] (the student's input), or None.

        Returns:
            ``cls`` (B, E); ``tokens`` (B, O*n, E), zero for missing organs; ``cls_attention`` (B, O*n),
            the last layer's [CLS]->token attention averaged over heads (0 on missing organs).
        """
        b, o = images.shape[:2]
        keep = available.view(b, o, *([1] * (images.dim() - 2)))
        # torch.where, not a product: NaN pixels of a missing organ must not survive as NaN * 0
        images = torch.where(keep, images, torch.zeros((), dtype=images.dtype, device=images.device))
        tokens = torch.stack([tok(images[:, i]).flatten(2).transpose(1, 2) for i, tok in enumerate(self.tokenizers)],
                             dim=1)  # (B, O, n, E)
        if token_mask is not None:
            m = token_mask.view(b, o, self.tokens_per_organ, 1)
            tokens = torch.where(m, self.mask_token.to(tokens.dtype).view(1, 1, 1, -1), tokens)
        tokens = (tokens + self.pos_embed + self.organ_embed).flatten(1, 2)  # (B, O*n, E)
        x = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1)
        valid = available.repeat_interleave(self.tokens_per_organ, dim=1)  # (B, O*n)
        ignore = torch.cat([valid.new_zeros(b, 1), ~valid], dim=1)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            # only the last layer's [CLS] row is read (SGM), so only it is computed explicitly
            x, attn = block(x, ignore, cls_weights=i == last, fused=self.fused_attention)
        x = self.norm(x)
        out_tokens = torch.where(valid[..., None], x[:, 1:], torch.zeros((), dtype=x.dtype, device=x.device))
        return {"cls": x[:, 0], "tokens": out_tokens, "cls_attention": attn[:, :, 1:].mean(dim=1)}


class OrganSetBackbone(nn.Module):
    """``organ_set_vit`` behind the backbone contract (``forward_skips``: none, it is a token-set encoder).

    Architecture arguments left as ``None`` come from ``pretrained_file``'s metadata (an ``organfm
    export``), else from the CPU-sized defaults (5 organs, 32 px, patch 8, E = 64, depth 2, 4 heads).

    Args:
        num_organs, image_size, patch_size, spatial_dims, in_chans, embed_dim, depth, num_heads, mlp_ratio:
            see :class:`OrganSetViT`.
        pretrained_file: local weights (``.safetensors`` from ``organfm export``).
        drop_path_rate: accepted for the common ``create_backbone`` call; must be 0.

    Attributes:
        num_features: E. organs: O. tokens_per_organ: n. backbone_args: resolved architecture arguments.
    """

    skip_channels: list[int] = []

    def __init__(self, *, num_organs: int | None = None, image_size: int | None = None,
                 patch_size: int | None = None, spatial_dims: int | None = None, in_chans: int | None = None,
                 embed_dim: int | None = None, depth: int | None = None, num_heads: int | None = None,
                 mlp_ratio: float | None = None, pretrained_file: str | None = None,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        if drop_path_rate:
            raise ValueError(f"organ_set_vit has no stochastic depth: drop_path_rate must be 0, got {drop_path_rate}")
        given = dict(num_organs=num_organs, image_size=image_size, patch_size=patch_size, spatial_dims=spatial_dims,
                     in_chans=in_chans, embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio)
        args = resolve_backbone_args(given, _DEFAULTS, pretrained_file)
        self.backbone_args = dict(args)
        self.model = OrganSetViT(**args)
        self.num_features, self.spatial_dims = int(args["embed_dim"]), int(args["spatial_dims"])
        self.num_organs, self.tokens_per_organ = int(args["num_organs"]), self.model.tokens_per_organ
        if pretrained_file is not None:
            load_backbone_weights(self.model, pretrained_file, architecture="organ_set_vit")

    def organ_sets(self, x: torch.Tensor, available: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Check and reshape the input: -> images (B, O, C, *S), available (B, O) bool."""
        o, c, d = self.num_organs, self.model.in_chans, self.spatial_dims
        if x.dim() == 2 + d:
            if x.shape[1] != o * c:
                raise ValueError(f"organ_set_vit: a (B, O*C, *S) input needs {o * c} channels ({o} organs x {c}), "
                                 f"got shape {tuple(x.shape)}")
            x = x.view(x.shape[0], o, c, *x.shape[2:])
        if x.dim() != 3 + d or x.shape[1:3] != (o, c) or tuple(x.shape[3:]) != (self.model.image_size,) * d:
            raise ValueError(f"organ_set_vit expects (B, {o}, {c}, {', '.join([str(self.model.image_size)] * d)}), "
                             f"got {tuple(x.shape)}")
        if available is None:
            flat = torch.isnan(x).flatten(2)
            if (flat.any(-1) & ~flat.all(-1)).any():
                raise ValueError("organ_set_vit: an organ image is partly NaN; mark a missing organ with all-NaN "
                                 "pixels or pass `available`")
            available = ~flat.all(-1)
        if available.shape != x.shape[:2]:
            raise ValueError(f"available must be (B, O) = {tuple(x.shape[:2])}, got {tuple(available.shape)}")
        return x, available.bool()

    def forward_features(self, x: torch.Tensor, available: torch.Tensor | None = None,
                         token_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """-> ``cls`` (B, E), ``tokens`` (B, O*n, E), ``cls_attention`` (B, O*n), ``available`` (B, O)."""
        images, available = self.organ_sets(x, available)
        out = self.model(images, available, token_mask)
        out["available"] = available
        return out

    def forward(self, x: torch.Tensor, available: torch.Tensor | None = None) -> torch.Tensor:
        """(B, O, C, *S) or (B, O*C, *S) -> the [CLS] embedding (B, E)."""
        return self.forward_features(x, available)["cls"]

    def forward_skips(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError("organ_set_vit is a token-set encoder over organs: it has no spatial feature maps "
                                  "for a U-Net decoder")

    def organ_pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per-organ mean of token features: (B, O*n, E) -> (B, O, E) (used by per-organ diagnostics)."""
        return tokens.view(tokens.shape[0], self.num_organs, self.tokens_per_organ, -1).mean(2)

