"""The precision losses compute in: never below float32, whatever autocast handed them."""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["at_least_fp32"]


def at_least_fp32(x: Tensor) -> Tensor:
    """Upcast half/bfloat16 to float32; leave float32/float64 as they are.

    Softmaxes over thousands of prototypes and temperature-scaled similarities lose the differences that
    carry the gradient in 16-bit floats, so a loss upcasts its inputs first.

    Args:
        x: any floating tensor.

    Returns:
        ``x`` in ``promote_types(x.dtype, float32)`` (``x`` itself when it already is).
    """
    return x.to(torch.promote_types(x.dtype, torch.float32))
