"""docs/results.md: each benchmark replaces only the text between its own markers (``write_section``)."""
from __future__ import annotations

from benchmarks.results_page import write_section

BEGIN, END = "<!-- BEGIN x -->", "<!-- END x -->"


def test_docs_section_is_replaced_between_markers(tmp_path):
    docs = tmp_path / "results.md"
    docs.write_text("# Results\n\nintro\n\n<!-- BEGIN other -->\n## Other\n<!-- END other -->\n")
    write_section(docs, BEGIN, END, "table one")
    write_section(docs, BEGIN, END, "table two")
    text = docs.read_text()
    assert text.count(BEGIN) == 1 and "table two" in text and "table one" not in text and "intro" in text
    assert "<!-- BEGIN other -->\n## Other\n<!-- END other -->" in text  # a neighbour keeps its markers


def test_a_missing_page_is_created(tmp_path):
    write_section(tmp_path / "docs" / "results.md", BEGIN, END, "body\n")
    assert (tmp_path / "docs" / "results.md").read_text() == f"# Results\n\n{BEGIN}\nbody\n{END}\n"
