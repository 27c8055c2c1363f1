"""`autoscale simulate` CLI: side-by-side output, JSON, recorded-trace replay, bad input -> exit 2."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from nomad_triton.autoscale.trace import append_observations
from nomad_triton.cli.main import app
from nomad_triton.probe.observations import ModelRates, Observation, ProbeState

TRACES = Path(__file__).parents[3] / "bench" / "traces"


def test_simulate_both_json() -> None:
    r = CliRunner().invoke(app, ["autoscale", "simulate", "--trace", str(TRACES / "oscillating.json"), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    ours, base = data["results"]
    assert (ours["policy"], base["policy"]) == ("ours", "baseline")
    assert ours["reversals"] == 0 and ours["actions"] and all(a["direction"] == "up" for a in ours["actions"])


def test_simulate_table_prints_ratio() -> None:
    r = CliRunner().invoke(app, ["autoscale", "simulate", "--trace", str(TRACES / "step.json"), "--policy", "both"])
    assert r.exit_code == 0 and "replica-seconds ours/baseline:" in r.stdout


def test_replay_recorded_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    with path.open("w") as fh:
        for k in range(10):
            m = ModelRates(ready=True, success_per_s=50, compute_infer_us_per_s=1e6, queue_us_per_s=0,
                           request_us_per_s=1e6, pending=0)
            append_observations(fh, [Observation(ts=float(k), alloc_id="a", address="a", state=ProbeState.REACHABLE,
                                                 live=True, ready=True, models={"m": m}, metrics_ok=True)])
    r = CliRunner().invoke(app, ["autoscale", "simulate", "--trace", str(path), "--max", "4", "--json"])
    assert r.exit_code == 0, r.output
    decisions = json.loads(r.stdout)["decisions"]
    assert decisions[0]["direction"] == "up" and decisions[0]["count"] == 2


def test_bad_trace_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x"}')
    r = CliRunner().invoke(app, ["autoscale", "simulate", "--trace", str(bad)])
    assert r.exit_code == 2
    assert "bad.json: field 'duration_s' is required" in r.output and "Traceback" not in r.output


def test_agent_bad_flags_are_one_line_exit_2() -> None:
    # Rejected before anything is contacted (the address is never dialled).
    for args, words in ((["--listen", "9464"], "--listen: expected HOST:PORT"),
                        (["--listen", "127.0.0.1:99999"], "--listen: expected HOST:PORT"),
                        (["--lock-ttl", "5"], "--lock-ttl: must be >= 10"),
                        (["--probe-timeout", "0"], "--probe-timeout must be > 0")):
        r = CliRunner().invoke(app, ["autoscale", "agent", "--address", "http://127.0.0.1:9", *args])
        assert r.exit_code == 2, (args, r.output)
        assert words in r.output and "Traceback" not in r.output, (args, r.output)
