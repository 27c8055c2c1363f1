"""`autoscale simulate --report` opened in a REAL headless browser (Debian's chromium).

The page must work offline (plotly.js inlined, no external script), run without a JavaScript error,
and draw every trace: load, and per policy capacity, replicas and the scaling-action markers.
A deliberately broken page proves the error check can fail.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from nomad_triton.autoscale.report import trace_count, violation_spans
from nomad_triton.autoscale.simulate import run_both
from nomad_triton.autoscale.trace import load_trace
from tests.e2e.cli_helpers import ROOT, run_cli

pytestmark = pytest.mark.e2e
STEP = ROOT / "bench" / "traces" / "step.json"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def open_in_chromium(page: Path, tmp: Path) -> tuple[str, str]:
    """(DOM after scripts ran, browser log); chromium runs headless with a throwaway profile."""
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={tmp / 'profile'}",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=20000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, proc.stderr


def js_errors(log: str) -> list[str]:
    return [line for line in log.splitlines() if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)]


def test_report_page_opens_offline_without_errors_and_draws_every_trace(tmp_path: Path) -> None:
    page = tmp_path / "step.html"
    r = run_cli(["autoscale", "simulate", "--trace", str(STEP),
                 "--report", str(page)], "http://127.0.0.1:9", timeout=120)
    assert r.code == 0, r.text
    html = page.read_text()
    assert not re.search(r"<script[^>]+src=", html), "the page must not load scripts from anywhere"
    assert "replica-seconds" in html and "<h2>Scaling actions</h2>" in html
    dom, log = open_in_chromium(page, tmp_path)
    assert js_errors(log) == []
    traces = re.findall(r'<g class="trace scatter[^"]*"', dom)
    assert len(traces) == trace_count([None, None])  # type: ignore[list-item]  # ours + baseline: 7
    # Every line trace drew a path, every action a marker point.
    assert len(re.findall(r'class="js-line" d="M', dom)) >= 5
    as_json = run_cli(["autoscale", "simulate", "--trace", str(STEP), "--json"],
                      "http://127.0.0.1:9", timeout=120).json()
    actions = sum(len(res["actions"]) for res in as_json["results"])
    assert actions > 0 and len(re.findall(r'class="point"', dom)) >= actions
    # SLO-violation spans are shaded (step.json violates the SLO for both policies).
    spans = sum(len(violation_spans(res.timeline)) for res in run_both(load_trace(STEP)))
    assert spans > 0 and len(re.findall(r'<g class="shape-group"', dom)) >= spans, "SLO-violation spans not shaded"

    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><script>throw new Error("report check works")</script></body></html>')
    assert any("report check works" in e for e in js_errors(open_in_chromium(bad, tmp_path)[1]))
