"""Regressions from exploratory testing of the real CLI against a real devcluster (engineer J).

Each test pins a defect a user hit: the wrong exit code, output that was not JSON under --json,
or a command that "succeeded" on a job that does not exist.
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.cli_helpers import run_cli
from tests.e2e.conftest import Devcluster

pytestmark = pytest.mark.e2e


def _one_json_line(text: str) -> dict:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    return json.loads(lines[0])


def test_missing_job_fails_with_json_for_watch_and_probe(devcluster: Devcluster) -> None:
    """Nomad lists [] allocations for an unknown job; `watch` used to report that as success (exit 0)
    and `probe --json` printed a plain-text error."""
    watch = run_cli(["watch", "no-such-job", "--timeout", "2s", "--json"], devcluster.addr, timeout=60)
    assert watch.code == 1, watch.text
    assert watch.out == ""
    assert _one_json_line(watch.err)["error"] == "GET /v1/job/no-such-job: job not found"
    probe = run_cli(["probe", "no-such-job", "--json"], devcluster.addr, timeout=60)
    assert probe.code == 1, probe.text
    assert _one_json_line(probe.err)["error"] == "probe no-such-job: GET /v1/job/no-such-job: job not found"
