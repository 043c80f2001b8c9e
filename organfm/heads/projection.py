"""MLP projector for contrastive learning (SimCLR / SupCon style).

References:
    [0] Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020. https://arxiv.org/abs/2004.11362
    [1] Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations"
        (SimCLR), ICML 2020. https://arxiv.org/abs/2002.05709
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["ProjectionHead"]


class ProjectionHead(nn.Module):
    """MLP projector ``in -> hidden -> ... -> out`` with [BN] + ReLU between layers [0, 1].

    The output is NOT L2-normalised: contrastive losses such as
    :class:`organfm.losses.SupConLoss` normalise their inputs themselves, and an unnormalised
    output keeps the head reusable for losses that need the raw vector.

    Args:
        in_dim: Backbone feature size E.
        hidden_dim: Hidden size.
        out_dim: Output (projection) size.
        num_layers: Number of linear layers (>= 1). ``1`` is a single linear map.
        use_bn: If ``True``, batch norm follows every hidden linear layer (whose bias is then
            dropped, because batch norm would cancel it).

    Examples:
        >>> import torch
        >>> ProjectionHead(32, hidden_dim=16, out_dim=8)(torch.randn(4, 32)).shape
        torch.Size([4, 8])
    """

    def __init__(
        self,
        in_dim: int,
        *,
        hidden_dim: int = 2048,
        out_dim: int = 128,
        num_layers: int = 2,
        use_bn: bool = True,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        for d_in, d_out in zip(dims[:-1], dims[1:], strict=True):
            layers.append(nn.Linear(d_in, d_out, bias=not use_bn))
            if use_bn:
                layers.append(nn.BatchNorm1d(d_out))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Linear(dims[-1], out_dim))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Project features.

        Args:
            x: Features of shape ``(B, in_dim)``.

        Returns:
            Projections of shape ``(B, out_dim)`` (not normalised).
        """
        return self.mlp(x)
