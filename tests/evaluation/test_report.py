"""The evaluation report names each model's training health beside its results."""
from __future__ import annotations

from organfm.evaluation.html_report import render_html
from organfm.evaluation.report import health_cell, markdown_tables

RESULTS = {"task": {"name": "t"}, "rows": [], "models": {
    "coda": {"spec": "runs/coda", "architecture": "test_convnext", "model_hash": "ab" * 8,
             "health": {"verdict": "not learning yet", "reason": "the exported network is 0.05 % away", "step": 20}},
    "scratch": {"spec": "random:test_convnext", "architecture": "test_convnext", "model_hash": "cd" * 8},
    "old": {"spec": "old/export", "architecture": "test_convnext", "model_hash": "ef" * 8}}}


def test_health_cell_tells_a_verdict_from_random_init_from_an_unmonitored_model():
    m = RESULTS["models"]
    assert health_cell(m["coda"]) == "not learning yet (step 20)"
    assert health_cell(m["scratch"]) == "random init"
    assert health_cell(m["old"]) == "not monitored"


def test_markdown_and_html_show_the_verdict_and_its_reason():
    md = markdown_tables(RESULTS)
    assert "| training health |" in md and "| not learning yet (step 20) |" in md
    page = render_html(RESULTS, {}, {})
    assert "<th>training health</th>" in page and "not learning yet (step 20)" in page
    assert "title='the exported network is 0.05 % away'" in page
