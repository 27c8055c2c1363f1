"""devcluster driven by the official Go client: tests/conformance, run by tools/conformance.py.

Why here too (besides `make conformance`): so `make test` holds devcluster to Nomad's API as the
Go client decodes it, with this suite's teardown check that nothing devcluster started is left
running. Needs the Go toolchain (CI has it; without it this fails with the tool's one-line
reason, it does not skip).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import StartFn

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
# Every check the issue asks for; a check that silently disappears from the program fails here.
EXPECTED = (
    "status", "agent-self", "acl-token-self", "parse-validate", "plan", "register-enforce-index",
    "deployment-successful", "job-blocking-query", "allocations-ports", "scale-events", "versions-summary",
    "evaluations", "nodes", "node-pools", "services", "alloc-stop", "event-stream", "variables",
    "variable-locks", "alloc-logs", "scaling-policies", "revert", "canary-promote", "failed-task", "infeasible-gpu-plan",
    "deregister-purge",
)


# What `make conformance` runs on: ACLs on, a CPU node and a GPU node (class "gpu"), so the
# infeasible GPU plan filters two differently shaped nodes, each counted once.
CONFORMANCE_CONFIG = ROOT / "tests" / "conformance" / "devcluster.toml"


@pytest.mark.parametrize("acl", [False, True], ids=["acl-off-one-node", "acl-on-cpu-and-gpu-node"])
def test_official_go_client_conformance(devcluster_factory: StartFn, acl: bool) -> None:
    # With ACLs on, every call carries the management token (X-Nomad-Token) as NOMAD_TOKEN.
    dc = devcluster_factory(CONFORMANCE_CONFIG.read_text() if acl else None)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}
    if acl:
        assert dc.token, "an ACL devcluster has a management token"
        env["NOMAD_TOKEN"] = dc.token
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "conformance.py"), "--addr", dc.addr],
        capture_output=True, text=True, timeout=900, check=False, cwd=ROOT, env=env,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    status = {line.split()[1]: line.split()[0] for line in proc.stdout.splitlines()
              if line.startswith(("ok ", "FAIL "))}
    assert {name: status.get(name) for name in EXPECTED} == dict.fromkeys(EXPECTED, "ok"), out
    assert f"{len(EXPECTED)} passed, 0 failed" in proc.stdout, out
    assert ("ACLs on" if acl else "ACLs off: 400 ACL support disabled") in proc.stdout, out
    assert f"not placed: {2 if acl else 1} node(s) evaluated" in status_line(proc.stdout, "infeasible-gpu-plan"), out


def status_line(stdout: str, check: str) -> str:
    return next(line for line in stdout.splitlines() if line.split()[1:2] == [check])
