"""The sample contract: the key constants every dataset and view recipe uses are exactly the TypedDict's fields."""
from __future__ import annotations

import typing

import torch

from organfm.data.sample import IMAGE, INDEX, ORGAN, Sample


def test_the_key_constants_name_the_typed_fields():
    # a renamed constant or field would let datasets and recipes disagree on a key silently
    assert typing.get_type_hints(Sample) == {IMAGE: torch.Tensor, ORGAN: int, INDEX: int}
