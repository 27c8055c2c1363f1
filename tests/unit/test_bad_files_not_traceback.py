"""Non-UTF-8 or mistyped input files are one line naming the file and field, never a traceback.

Why: UnicodeDecodeError is a ValueError, not an OSError, so `except OSError` around read_text let
it escape from `dev up --config` and `autoscale simulate --trace`; a trace with `"duration_s":
"abc"` crashed in float(). Nothing is contacted (files only), so these are unit tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nomad_triton.cli import usage
from nomad_triton.cli.main import app


def _one_json_error(capsys: pytest.CaptureFixture[str]) -> str:
    cap = capsys.readouterr()
    lines = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in cap.err + cap.out, cap
    return str(json.loads(lines[0])["error"])


def test_non_utf8_devcluster_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "dc.toml"
    cfg.write_bytes(b'name = "x\xff"\n')
    code = usage.run(app, ["dev", "up", "--config", str(cfg), "--state-dir", str(tmp_path / "s"), "--json"])
    assert code == 2
    assert _one_json_error(capsys).startswith(f"{cfg}: cannot read: not UTF-8 text")


@pytest.mark.parametrize("name", ["t.json", "t.jsonl"])
def test_non_utf8_trace(tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / name
    trace.write_bytes(b"\xff\xfe{}\n")
    assert usage.run(app, ["autoscale", "simulate", "--trace", str(trace), "--json"]) == 2
    assert _one_json_error(capsys).startswith(f"{trace}: cannot read trace:")


def test_trace_field_of_wrong_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.json"
    trace.write_text(json.dumps({"name": "x", "duration_s": "abc", "arrivals": [[0, 1]], "service_rate": 1,
                                 "startup_s": 1, "initial_replicas": 1}))
    assert usage.run(app, ["autoscale", "simulate", "--trace", str(trace), "--json"]) == 2
    assert _one_json_error(capsys) == f"{trace}: field 'duration_s' must be a number > 0"
