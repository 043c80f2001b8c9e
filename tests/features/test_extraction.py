"""Feature extraction and the disk cache: a second call with the same model and data never runs the model."""
from __future__ import annotations

import torch
from torch import nn

from organfm.features.extraction import FeatureCache, extract_features, normalize_images


class CountingBackbone(nn.Module):
    """A linear "backbone" that counts its forward calls."""

    num_features = 4

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(16, 4)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.proj(x.flatten(1))


def test_extract_features_batches_normalises_and_restores_mode():
    backbone = CountingBackbone().train()
    images = torch.rand(10, 1, 4, 4)
    feats = extract_features(backbone, images, batch_size=4, mean=0.5, std=0.25)
    assert feats.shape == (10, 4) and backbone.calls == 3 and backbone.training
    with torch.no_grad():
        expected = backbone.proj(((images - 0.5) / 0.25).flatten(1))
    assert torch.allclose(feats, expected, atol=1e-6)


def test_extract_features_from_a_dataset_equals_from_a_tensor():
    images = torch.rand(6, 1, 4, 4)
    dataset = [{"image": im} for im in images]
    backbone = CountingBackbone()
    assert torch.allclose(extract_features(backbone, dataset, batch_size=4), extract_features(backbone, images))


def test_cache_hit_does_not_run_the_model(tmp_path):
    backbone = CountingBackbone()
    images = torch.rand(8, 1, 4, 4)
    cache = FeatureCache(tmp_path / "cache")
    key = FeatureCache.key(model="hash-a", data="split-test", mean=[0.5], std=[0.5])
    first = cache.get_or_extract(key, lambda: extract_features(backbone, images))
    calls = backbone.calls
    second = FeatureCache(tmp_path / "cache").get_or_extract(key, lambda: extract_features(backbone, images))
    assert backbone.calls == calls and torch.equal(first, second)
    # another model hash, data identity or normalisation is another key: extracted again
    for other in (dict(model="hash-b", data="split-test", mean=[0.5], std=[0.5]),
                  dict(model="hash-a", data="split-val", mean=[0.5], std=[0.5]),
                  dict(model="hash-a", data="split-test", mean=[0.4], std=[0.5])):
        assert FeatureCache.key(**other) != key
    cache.get_or_extract(FeatureCache.key(model="hash-b", data="split-test", mean=[0.5], std=[0.5]),
                         lambda: extract_features(backbone, images))
    assert backbone.calls == calls + 1


def test_damaged_cache_file_is_replaced(tmp_path):
    cache = FeatureCache(tmp_path)
    key = FeatureCache.key(model="m")
    cache.path(key).write_bytes(b"not a tensor")
    out = cache.get_or_extract(key, lambda: torch.ones(2, 3))
    assert torch.equal(out, torch.ones(2, 3)) and cache.misses == 1
    assert torch.equal(FeatureCache(tmp_path).get_or_extract(key, lambda: torch.zeros(1)), torch.ones(2, 3))


def test_normalize_images_per_channel():
    x = torch.ones(2, 3, 2, 2)
    out = normalize_images(x, [0.0, 0.5, 1.0], [1.0, 0.5, 2.0])
    assert out[:, 0].eq(1).all() and out[:, 1].eq(1).all() and out[:, 2].eq(0).all()
