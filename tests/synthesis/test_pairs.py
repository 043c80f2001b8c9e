"""RaSDPairs, the endless stream of RaSD pairs: item n a pure function of (seed, stream, n), a non-finite draw
drawn again by the next attempt, the first attempt the one the buffer and the export both read."""
from __future__ import annotations

import pytest
import torch

from organfm.synthesis import LABEL_MAP, NonFiniteSampleError, RaSDPairs


@pytest.mark.parametrize("shape", [(16, 16), (16, 16, 16)])
def test_pairs_are_pure_functions_of_seed_and_index(shape):
    pairs = RaSDPairs(shape, num_labels=3, seed=5)
    a, b = pairs[7], RaSDPairs(shape, num_labels=3, seed=5)[7]
    assert a["image"].shape == a[LABEL_MAP].shape == (1, *shape)
    assert a["image"].dtype == torch.float32 and a[LABEL_MAP].dtype == torch.int64
    assert 0 <= a["image"].min() and a["image"].max() <= 1 and a[LABEL_MAP].max() < 3
    assert torch.equal(a["image"], b["image"]) and torch.equal(a[LABEL_MAP], b[LABEL_MAP])
    torch.manual_seed(123)  # the global RNG plays no part
    assert torch.equal(RaSDPairs(shape, num_labels=3, seed=5)[7]["image"], a["image"])
    assert not torch.equal(pairs[8]["image"], a["image"])
    assert not torch.equal(RaSDPairs(shape, num_labels=3, seed=6)[7]["image"], a["image"])
    assert not torch.equal(RaSDPairs(shape, num_labels=3, seed=5, stream="other")[7]["image"], a["image"])


def test_default_num_labels_scale_with_size():
    assert RaSDPairs((64, 64)).num_labels == 2 and RaSDPairs((512, 512)).num_labels == 16
    assert RaSDPairs((128,) * 3).num_labels == 8
    with pytest.raises(ValueError, match="num_labels"):
        RaSDPairs((16, 16), num_labels=1)


class FlakyPairs(RaSDPairs):
    """Renders NaN on its first ``bad`` draws."""

    def __init__(self, *args, bad: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.bad, self.calls = bad, 0

    def render(self, label_map, generator):
        image = super().render(label_map, generator)
        self.calls += 1
        if self.calls <= self.bad:
            image[0, 0, 0] = float("nan")
        return image


def test_non_finite_samples_are_drawn_again_deterministically():
    flaky = FlakyPairs((16, 16), num_labels=3, seed=0, bad=1)
    item = flaky[4]
    assert torch.isfinite(item["image"]).all()
    clean = RaSDPairs((16, 16), num_labels=3, seed=0)[4]
    assert not torch.equal(item[LABEL_MAP], clean[LABEL_MAP])  # the second attempt, not the first
    assert torch.equal(FlakyPairs((16, 16), num_labels=3, seed=0, bad=1)[4]["image"], item["image"])
    with pytest.raises(NonFiniteSampleError, match="sample 4"):
        FlakyPairs((16, 16), num_labels=3, seed=0, bad=3, max_attempts=3)[4]


def test_an_item_is_the_first_attempt_of_its_seeded_generator():
    # the stream's documented rule, which export_pairs and the online buffer share: item n draws its label map and
    # then its image from one generator seeded by (seed, "<stream>/<attempt>", n)
    from organfm.synthesis.appearance import labels_to_image
    from organfm.synthesis.fields import draw_label_map
    from organfm.synthesis.organs import _seeded_generator

    item = RaSDPairs((16, 16), num_labels=3, seed=9, stream="rank1")[5]
    g = _seeded_generator(9, "rank1/0", 5)
    label_map = draw_label_map((16, 16), 3, g)
    assert torch.equal(item[LABEL_MAP], label_map) and torch.equal(item["image"], labels_to_image(label_map, 3, g))
    assert item["index"] == 5


def test_bad_shapes_and_indices_are_refused_and_the_length_is_nominal():
    with pytest.raises(ValueError, match="shape must be 2 or 3 sizes >= 2"):
        RaSDPairs((16,))
    with pytest.raises(ValueError, match="shape must be 2 or 3 sizes >= 2"):
        RaSDPairs((16, 1))
    pairs = RaSDPairs((8, 8), num_labels=2, length=4)
    assert len(pairs) == 4 and len(RaSDPairs((8, 8))) == 2**62
    with pytest.raises(IndexError, match=r"index 4 out of range \[0, 4\)"):
        pairs[4]
    with pytest.raises(IndexError):
        pairs[-1]  # an endless stream has no end to count back from
    with pytest.raises(TypeError):
        pairs[1.0]
    assert pairs.summary() == {"source": "rasd", "procedural": True, "shape": [8, 8], "dim": 2, "num_labels": 2, "seed": 0,
                               "stream": "rasd"}
