"""docs/results.md: each benchmark replaces only the text between its own markers (``write_section``), and every
section on the page regenerates, byte for byte, from the committed run files alone."""
from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.results_page import write_section

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
PAGE = REPO / "docs" / "results.md"
sys.path.insert(0, str(REPO / "benchmarks"))  # the reports import their siblings (claims, runs, ...) by bare name

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


# ---- every section of the page, regenerated from the committed run files ------------------------------------
# Each case copies what its report reads (the committed run files: never a git-ignored pretrain/ folder, which CI
# lacks) from benchmarks/results/<name>/ to the same place under a scratch root, and regenerates its section into
# a copy of docs/results.md there. Nothing is written into the repository.

def _copy(root: Path, name: str, *patterns: str) -> Path:
    """Copy ``benchmarks/results/<name>/<pattern>`` for each pattern to ``<root>/benchmarks/results/<name>/``."""
    src, dst = RESULTS / name, root / "benchmarks" / "results" / name
    for pattern in patterns:
        for f in sorted(src.glob(pattern)):
            (dst / f.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst / f.relative_to(src))
    dst.mkdir(parents=True, exist_ok=True)
    return dst


def _coda(name: str) -> Callable:
    def regenerate(root: Path, docs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        import coda_ablation_report as report

        # the block names its folder relative to the repository root (the command that rewrites it): here the
        # scratch root stands for the repository
        monkeypatch.setattr(report, "REPO", root)
        report.write_block(_copy(root, name, "runs/*.json", "results.json"), docs)
    return regenerate


def _rasd(root: Path, docs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rasd_transfer as bench

    out = _copy(root, "rasd_transfer", "runs/*.json")
    bench.main(["--report", "--out", str(out), "--docs", str(docs)])


def _gpu_throughput(root: Path, docs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gpu_throughput as gt

    # no report-only mode: the section is the markdown of the committed json (what main writes after the run)
    out = _copy(root, "gpu_throughput-cpu-cpu", "gpu_throughput.json")
    report = json.loads((out / "gpu_throughput.json").read_text())
    gt.write_docs(docs, gt.markdown(report), report["command"])


def _triad(design: str, folder: str):
    def regenerate(root: Path, docs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        import benchmarks.triad_3d as tb

        monkeypatch.setattr(tb, "THREADS", 7)  # the report states the runs' torch threads, not this process's
        out = _copy(root, folder, "runs/*.json")
        tb.main(["--design", design, "--report", "--out", str(out), "--docs", str(docs)])
    return regenerate


def _mmkd(root: Path, docs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mmkd_distill as bench

    out = _copy(root, "mmkd_distill", "runs/*-seed*.json", "init/*-seed*.json")
    bench.main(["--report", "--out", str(out), "--docs", str(docs)])


def _panfm(root: Path, docs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import panfm_sgm

    out = _copy(root, "panfm_sgm", "gate.json", "gate-*.json", "trials.json", "overhead.json",
                "runs/*-seed*.json")
    panfm_sgm.main(["--report", "--out", str(out), "--docs", str(docs)])


def _learning(root: Path, docs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import learning

    monkeypatch.setattr(learning, "OUT", _copy(root, "learning", "runs/*.json"))
    monkeypatch.setattr(learning, "DOCS", docs)
    learning.write_report()


CODA = ("coda-ablation-small", "coda-ablation-cpu-1k", "coda-ablation-cpu", "coda-ablation-cpu-256steps",
        "coda-ablation-gpu-short")
SECTIONS = {
    **{name: (f"<!-- {name}:begin -->", f"<!-- {name}:end -->", _coda(name.replace("coda-ablation", "coda_ablation")))
       for name in CODA},
    "rasd": ("<!-- BEGIN rasd -->", "<!-- END rasd -->", _rasd),
    "gpu_throughput": ("<!-- BEGIN gpu_throughput -->", "<!-- END gpu_throughput -->", _gpu_throughput),
    "triad": ("<!-- BEGIN triad -->", "<!-- END triad -->", _triad("v1", "triad_3d")),
    "triad-v2": ("<!-- BEGIN triad-v2 -->", "<!-- END triad-v2 -->", _triad("v2", "triad_3d_v2")),
    "mmkd": ("<!-- BEGIN mmkd -->", "<!-- END mmkd -->", _mmkd),
    "panfm": ("<!-- BEGIN panfm -->", "<!-- END panfm -->", _panfm),
    "learning": ("<!-- learning:begin -->", "<!-- learning:end -->", _learning),
}


def _section(text: str, begin: str, end: str) -> str:
    assert text.count(begin) == 1 and text.count(end) == 1, f"{begin} / {end}: not exactly one pair on the page"
    return text[text.index(begin):text.index(end) + len(end)]


def test_every_marker_on_the_page_has_a_case():
    markers = {line for line in PAGE.read_text(encoding="utf-8").splitlines() if line.startswith("<!--")}
    assert markers == {m for begin, end, _ in SECTIONS.values() for m in (begin, end)}


@pytest.mark.parametrize("name", SECTIONS)
def test_every_section_regenerates_from_its_committed_files(name, tmp_path, monkeypatch):
    begin, end, regenerate = SECTIONS[name]
    committed = PAGE.read_text(encoding="utf-8")
    docs = tmp_path / "docs" / "results.md"
    docs.parent.mkdir()
    docs.write_text(committed, encoding="utf-8")
    regenerate(tmp_path, docs, monkeypatch)
    page = docs.read_text(encoding="utf-8")
    assert _section(page, begin, end) == _section(committed, begin, end)
    assert page == committed  # and nothing outside its markers moved
