"""Bad input to `sd` and `autoscale simulate --report`: one line naming the flag, exit 2, nothing
contacted or written; and the report page's pure parts (spans, offline page, tables)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nomad_triton.autoscale.report import report_html, trace_count, violation_spans
from nomad_triton.autoscale.simulate import SimResult, Tick
from nomad_triton.cli import usage
from nomad_triton.cli.main import app

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["sd", "--listen", "nonsense"], "--listen: 'nonsense' is not host:port"),
        (["sd", "--listen", "127.0.0.1:99999"], "--listen: '127.0.0.1:99999' is not host:port"),
        (["sd", "--wait", "900"], "--wait: 900 is not between 0 and 600 seconds"),
        (["sd", "--print-config", "consul"], "--print-config: 'consul' is not one of nomad, http"),
        (["autoscale", "simulate", "--trace", str(ROOT / "bench/traces/step.json"), "--report", "x.png"],
         "--report: 'x.png' is not an .html file"),
    ],
)
def test_bad_flags_are_one_line_exit_2(args: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert usage.run(app, args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {fragment}"), err


def test_report_needs_a_load_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = tmp_path / "rec.jsonl"
    rec.write_text('{"ts": 1, "alloc_id": "a", "address": "x", "state": "reachable"}\n')
    page = tmp_path / "r.html"
    assert usage.run(app, ["autoscale", "simulate", "--trace", str(rec), "--report", str(page)]) == 2
    assert "--report: plots need a load trace" in capsys.readouterr().err and not page.exists()


def test_print_config_is_the_generator_for_this_address(capsys: pytest.CaptureFixture[str]) -> None:
    assert usage.run(app, ["sd", "--print-config", "http", "--listen", "127.0.0.1:9999", "-address",
                           "http://10.0.0.1:4646"]) == 0
    out = capsys.readouterr().out
    assert "url: http://127.0.0.1:9999/v1/targets" in out and "http_sd_configs" in out


def _tick(t: float, bad: bool) -> Tick:
    return Tick(t, 10, 10, 1, 500 if bad else 10, bad)


def test_violation_spans_are_contiguous_runs() -> None:
    ticks = [_tick(t, t in (2, 3, 4, 7)) for t in range(1, 9)]
    assert violation_spans(ticks) == [(1, 5), (6, 8)]
    assert violation_spans([_tick(1, True), _tick(2, True)]) == [(1, 2)]
    assert violation_spans([_tick(1, False)]) == []


def test_report_is_self_contained_with_numbers_and_reasons() -> None:
    r = SimResult(policy="ours", replica_seconds=12.0, actions=[(2.0, 2, "up", "load 1.6x <target>")],
                  timeline=[_tick(t, t == 3) for t in range(1, 6)])
    page = report_html([r], "t")
    assert "<script src" not in page and "plotly" in page.lower()
    assert "load 1.6x &lt;target&gt;" in page  # reasons are escaped text, never markup
    assert "<td>12.0</td>" in page and trace_count([r]) == 4
    with pytest.raises(ValueError, match="nothing to plot"):
        report_html([SimResult(policy="ours")], "t")
