"""What a sample is: the keys every dataset returns and every view recipe reads.

A dataset item is a dict:
    image: float32 tensor (C, H, W) or (C, D, H, W), channel-first, intensities in [0, 1]
    organ: int, index into the dataset's ``organs`` list (-1 when unknown)
    index: int, position of the item in its dataset
"""
from __future__ import annotations

from typing import TypedDict

import torch

__all__ = ["Sample", "IMAGE", "ORGAN", "INDEX", "UNKNOWN_ORGAN"]

IMAGE = "image"
ORGAN = "organ"
INDEX = "index"
UNKNOWN_ORGAN = -1


class Sample(TypedDict):
    image: torch.Tensor
    organ: int
    index: int
