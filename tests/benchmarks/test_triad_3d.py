"""benchmarks/triad_3d.py: the docs section (markers, n beside every claim, Holm named) from fake results."""
from __future__ import annotations

from benchmarks.triad_3d import BEGIN, END, parse_args, summarise, write_docs


def _fake():
    args = parse_args(["--seeds", "0", "1", "2", "--seg-iterations", "0"])
    runs = {arm: {s: {"step_s": 0.1, "seconds": 30.0} for s in (0, 1, 2)} for arm in ("triad_notext", "triad_text")}
    auc = {"scratch": [0.60, 0.62, 0.61], "triad_notext": [0.65, 0.66, 0.64], "triad_text": [0.70, 0.69, 0.72]}
    results = {arm: {s: {"cls": {"auc": v, "seconds": 5.0}} for s, v in enumerate(vals)} for arm, vals in auc.items()}
    return args, runs, results


def test_summary_states_n_and_holm_and_the_claims():
    report = summarise(*_fake())
    md = report["markdown"]
    assert md.startswith(BEGIN) and md.rstrip().endswith(END)
    assert "Holm" in md and "scratch" in md and "text" in md
    claim_rows = [line for line in md.splitlines() if line.startswith("| auc |")]
    assert len(claim_rows) == 3 and all("n = 3 pretraining runs" in line for line in claim_rows)
    by_claim = {c["claim"]: c for c in report["claims"]}
    # text beats scratch by +0.093 on average over 3 paired seeds
    assert abs(by_claim["triad_text > scratch"]["delta"] - 0.0933) < 1e-3
    assert "| scratch | 0.610 ± 0.010 |" in md
    assert "3.0 min together" in md  # 6 runs x 30 s, from the runs themselves
    assert "unknown acquisition" in md  # what the text term can and cannot separate here


def test_docs_section_is_appended_then_replaced(tmp_path):
    docs = tmp_path / "results.md"
    docs.write_text("# Results\n\nother section\n")
    write_docs(docs, f"{BEGIN}\nfirst\n{END}\n")
    write_docs(docs, f"{BEGIN}\nsecond\n{END}\n")
    text = docs.read_text()
    assert text.count(BEGIN) == 1 and "second" in text and "first" not in text and "other section" in text


def test_report_only_rewrites_from_results_json(tmp_path):
    import json

    from benchmarks.triad_3d import main

    args, runs, results = _fake()
    saved = summarise(args, runs, results)
    (tmp_path / "results.json").write_text(json.dumps(saved, default=str))
    docs = tmp_path / "docs.md"
    again = main(["--out", str(tmp_path), "--report-only", "--docs", str(docs)])
    assert again["markdown"] == saved["markdown"] and BEGIN in docs.read_text()
