"""The HTML report in a real headless browser (Debian's chromium): renders, no console errors, hover works."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--enable-logging=stderr", "--v=0"]


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install -y chromium) for this test")
    return subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def _console_messages(stderr: str) -> list[str]:
    # chromium prints every page console message (and uncaught exceptions) as ":INFO:CONSOLE(...)" lines
    return [line for line in stderr.splitlines() if "CONSOLE" in line]


def test_report_renders_without_console_errors_and_hover_shows_the_thumbnail(pneumonia_report: Path,
                                                                               tmp_path: Path):
    report = pneumonia_report / "report.html"
    html = report.read_text()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html  # offline
    run = _chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", f"{report.as_uri()}#selftest")
    assert run.returncode == 0, run.stderr[-2000:]
    dom = run.stdout
    assert _console_messages(run.stderr) == []
    assert 'data-js-error="' not in dom
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-selftest="ok"' in body  # the page hovered its first point: tooltip with a thumbnail
    points = int(re.search(r'data-scatter-points="(\d+)"', body).group(1))
    assert points > 50 and dom.count("<circle") == points
    assert dom.count("<table class=\"results\"") == 2 and "balanced_accuracy" in dom
    assert dom.count("data:image/png;base64,") >= 3  # two plots + the hovered thumbnail
    shot = tmp_path / "report.png"
    run = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,900", report.as_uri())
    assert run.returncode == 0 and shot.is_file() and shot.stat().st_size > 20_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_console_errors_are_detected(tmp_path: Path):
    # the check above is only meaningful if a broken page is caught the same way
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>throw new Error('boom');</script></body></html>")
    run = _chromium(tmp_path, "--dump-dom", page.as_uri())
    assert any("boom" in line for line in _console_messages(run.stderr))


def test_report_carries_no_patient_identifiers(tmp_path: Path):
    import torch

    from organfm.data.records import Record
    from organfm.evaluation.html_report import render_html
    from organfm.evaluation.task_data import SplitData, public_metadata

    records = [Record(path=f"/pacs/DOE^JOHN/{i}.dcm", reader="dicom", key=f"DOE^JOHN/{i}.dcm", organ="liver",
                      patient_id="MRN-123456", meta={"patient_name": "DOE^JOHN", "site": "A", "StudyDate": "2020"})
               for i in range(4)]
    split = SplitData(images=torch.rand(4, 1, 8, 8), labels=torch.tensor([0, 1, 0, 1]), records=records,
                      identity="x", name="test")
    meta = [public_metadata(r, int(y), ["a", "b"], "test") for r, y in zip(records, split.labels)]
    html = render_html({"task": {"name": "t"}, "rows": []}, {},
                       {"split": split, "index": [0, 1, 2, 3], "meta": meta, "models": {"m": [[0, 0]] * 4}})
    assert meta[0] == {"class": "a", "organ": "liver", "split": "test", "site": "A"}
    for secret in ("MRN-123456", "DOE^JOHN", "/pacs/", "2020"):
        assert secret not in html
