"""Losses compute in at least float32: half precisions are upcast, float32/float64 kept as they are."""
from __future__ import annotations

import pytest
import torch

from organfm.losses.precision import at_least_fp32


@pytest.mark.parametrize(("dtype", "expected"), [(torch.float16, torch.float32), (torch.bfloat16, torch.float32),
                                                 (torch.float32, torch.float32), (torch.float64, torch.float64)])
def test_dtype_is_never_below_float32(dtype, expected):
    x = torch.tensor([1.0, -2.5, 3.25], dtype=dtype)  # exactly representable in every dtype
    out = at_least_fp32(x)
    assert out.dtype == expected and out.tolist() == [1.0, -2.5, 3.25]


def test_float32_and_float64_are_returned_as_they_are_not_copied():
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(3, dtype=dtype)
        assert at_least_fp32(x) is x


def test_a_temperature_softmax_after_the_upcast_matches_float64_where_bfloat16_does_not():
    # bfloat16 logits, as autocast hands them; dividing by a small temperature in bfloat16 rounds the
    # scaled logits to steps of 0.5, which moves the softmax by percent
    logits = torch.tensor([1.0, 1.0078125, 0.9921875], dtype=torch.bfloat16)  # exact bfloat16 values
    reference = torch.softmax(logits.double() / 0.01, dim=0)
    upcast = torch.softmax(at_least_fp32(logits) / 0.01, dim=0)
    in_bf16 = torch.softmax(logits / 0.01, dim=0)
    assert upcast.dtype == torch.float32
    torch.testing.assert_close(upcast.double(), reference, rtol=1e-5, atol=1e-7)
    assert (in_bf16.double() - reference).abs().max() > 1e-2
