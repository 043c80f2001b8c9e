"""The MMKD feature store's peak memory does not grow with the number of images (benchmarks.mmkd_memory)."""
from __future__ import annotations

from benchmarks.mmkd_memory import compare


def test_peak_memory_of_the_feature_store_is_flat_in_the_number_of_images():
    small, large = compare((1500, 15000), dim=256, teachers=2, chunk=256)
    assert large["dense_features_mb"] - small["dense_features_mb"] > 25  # a dense store would grow ~26 MB
    assert large["peak_rss_mb"] - small["peak_rss_mb"] < 8, (small, large)
    assert large["checksum"] is not None
