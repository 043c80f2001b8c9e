"""The GPU-throughput benchmark: its FLOP counter against hand counts, its peak table, one tiny real case."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import gpu_throughput as gt  # noqa: E402


def test_linear_flops_equal_the_hand_count():
    lin, x = nn.Linear(16, 8), torch.randn(4, 16, requires_grad=True)
    assert gt.count_flops(lambda: lin(x)) == 2 * 4 * 16 * 8  # one multiply-add per (row, in, out)
    # backward: grad wrt the input (4x8 @ 8x16) and wrt the weight (8x4 @ 4x16), each the forward's cost
    assert gt.count_flops(lambda: lin(x).sum().backward()) == 3 * 2 * 4 * 16 * 8


def test_conv_flops_equal_the_hand_count():
    conv, x = nn.Conv2d(1, 4, 3, bias=False), torch.randn(2, 1, 8, 8)
    # 2 images x 4 output channels x 6 x 6 positions x (1 x 3 x 3) multiply-adds x 2
    assert gt.count_flops(lambda: conv(x)) == 2 * 4 * 6 * 6 * 9 * 2


def test_peak_table_and_override():
    assert gt.peak_tflops(torch.device("cpu"), None) is None
    assert gt.peak_tflops(torch.device("cpu"), 123.0) == 123.0


def test_a_tiny_case_reports_every_part_and_the_counted_flops(tmp_path):
    s = dict(backbone="test_convnext", batch=4, image_size=40, global_size=32, local_size=32, num_local=2,
             out_dim=64, hidden_dim=32, warmup=0, steps=1, workers=0, images=8)
    cache = gt.build_cache(s, tmp_path / "shards")
    views = {}
    for path in ("device", "per_sample"):
        r = gt.run_case("coda", path, s, cache, torch.device("cpu"))
        views[path] = r["step_breakdown_s"]["device_views"]
        assert set(r["step_breakdown_s"]) == set(gt.PARTS)
        assert r["step_s"] == pytest.approx(sum(r["step_breakdown_s"].values()))
        assert r["images_per_s"] == pytest.approx(4 / r["step_s"])
        assert r["flop_per_step"] > 0 and r["mfu"] is None and 0 <= r["data_wait_share"] < 1
    assert views["device"] > 10 * views["per_sample"]  # only the device path makes views after the loader


def test_docs_section_is_appended_then_replaced(tmp_path):
    docs = tmp_path / "results.md"
    docs.write_text("# Results\n\nother text\n")
    gt.write_docs(docs, "first\n", "cmd")
    gt.write_docs(docs, "second\n", "cmd")
    text = docs.read_text()
    assert text.count(gt.BEGIN) == 1 and "second" in text and "first" not in text and "other text" in text
