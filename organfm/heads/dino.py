"""DINO projection head: MLP, L2-normalised bottleneck, weight-normalised prototype layer.

Reference:
    [0] Caron et al., "Emerging Properties in Self-Supervised Vision Transformers" (DINO),
        ICCV 2021. https://arxiv.org/abs/2104.14294 (``DINOHead`` in facebookresearch/dino).
"""

from __future__ import annotations

from typing import Literal, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DINOHead"]


class _WeightNormLinear(nn.Module):
    """Bias-free linear layer with weight normalisation ``W = g * v / ||v||`` (row-wise).

    We implement the reparametrisation ourselves instead of using
    ``torch.nn.utils.parametrizations.weight_norm``: the torch version breaks
    ``copy.deepcopy`` (needed to build the EMA teacher) and its parameter names
    change between the old hook and the new parametrisation API.

    Args:
        in_features: Input size (the bottleneck size).
        out_features: Output size K (number of prototypes).
        fix_norm: If ``True``, ``weight_g`` is frozen (``requires_grad=False``), so every row of
            ``W`` has unit norm and, for unit-norm inputs, the outputs are cosines in ``[-1, 1]``.

    Attributes:
        weight_v: Direction parameter, shape ``(K, in_features)``.
        weight_g: Magnitude parameter, shape ``(K, 1)``, initialised to 1.
    """

    def __init__(self, in_features: int, out_features: int, *, fix_norm: bool) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight_v = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.trunc_normal_(self.weight_v, std=0.02)
        # DINO fills g with 1 regardless of norm_last_layer; freezing it keeps the rows on
        # the unit sphere, which the paper found to stabilise training.
        self.weight_g = nn.Parameter(torch.ones(out_features, 1), requires_grad=not fix_norm)

    @property
    def weight(self) -> Tensor:
        """The effective weight ``g * v / ||v||``, shape ``(K, in_features)``."""
        return self.weight_g * F.normalize(self.weight_v, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the weight-normalised projection.

        Args:
            x: Input of shape ``(B, in_features)``.

        Returns:
            Output of shape ``(B, K)``.
        """
        return F.linear(x, self.weight)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"fix_norm={not self.weight_g.requires_grad}"
        )


class DINOHead(nn.Module):
    """DINO head: MLP to a bottleneck, L2-normalise, then a weight-normalised prototype layer [0].

    The MLP is ``in -> hidden -> ... -> hidden -> bottleneck`` with GELU between layers (and
    optional batch norm after each hidden linear layer). The bottleneck is L2-normalised and
    fed to ``last_layer``, a bias-free weight-normalised ``Linear(bottleneck -> out)``. With
    ``norm_last_layer=True`` the prototype rows have unit norm, so the logits are cosines in
    ``[-1, 1]``.

    The prototype layer is exposed as ``head.last_layer`` so that the training engine can
    freeze it during the first epoch (DINO's ``freeze_last_layer``).

    Args:
        in_dim: Backbone feature size E.
        out_dim: Number of prototypes K.
        hidden_dim: Hidden size of the MLP.
        bottleneck_dim: Size of the L2-normalised bottleneck.
        num_layers: Number of linear layers in the MLP (>= 1).
        use_bn: If ``True``, batch norm follows every hidden linear layer.
        norm_last_layer: If ``True``, freeze the weight-norm magnitude ``g`` at 1.

    Examples:
        >>> head = DINOHead(32, out_dim=64, hidden_dim=16, bottleneck_dim=8)
        >>> head(torch.randn(4, 32)).shape
        torch.Size([4, 64])
    """

    def __init__(
        self,
        in_dim: int,
        *,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        use_bn: bool = False,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.mlp = _build_mlp(in_dim, hidden_dim, bottleneck_dim, num_layers, use_bn)
        self.apply(_init_linear)
        self.last_layer = _WeightNormLinear(bottleneck_dim, out_dim, fix_norm=norm_last_layer)

    @overload
    def forward(self, x: Tensor, return_bottleneck: Literal[False] = ...) -> Tensor: ...

    @overload
    def forward(self, x: Tensor, return_bottleneck: Literal[True]) -> tuple[Tensor, Tensor]: ...

    def forward(self, x: Tensor, return_bottleneck: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Project features to prototype logits.

        Args:
            x: Features of shape ``(B, in_dim)``.
            return_bottleneck: If ``True``, also return the L2-normalised bottleneck.

        Returns:
            Logits of shape ``(B, K)``; with ``return_bottleneck`` a tuple
            ``(logits (B, K), bottleneck (B, bottleneck_dim))`` where every bottleneck row has
            unit L2 norm.
        """
        bottleneck = F.normalize(self.mlp(x), dim=-1)
        logits = self.last_layer(bottleneck)
        if return_bottleneck:
            return logits, bottleneck
        return logits


def _build_mlp(
    in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, use_bn: bool
) -> nn.Sequential:
    """``num_layers`` linear layers ``in -> hidden -> ... -> out`` with [BN] + GELU in between."""
    if num_layers == 1:
        return nn.Sequential(nn.Linear(in_dim, out_dim))
    layers: list[nn.Module] = []
    dims = [in_dim] + [hidden_dim] * (num_layers - 1)
    for d_in, d_out in zip(dims[:-1], dims[1:], strict=True):
        layers.append(nn.Linear(d_in, d_out))
        if use_bn:
            layers.append(nn.BatchNorm1d(d_out))
        layers.append(nn.GELU())
    layers.append(nn.Linear(hidden_dim, out_dim))
    return nn.Sequential(*layers)


def _init_linear(module: nn.Module) -> None:
    """DINO init: trunc_normal(std=0.02) weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
