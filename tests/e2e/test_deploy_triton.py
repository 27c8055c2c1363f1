"""`deploy` end to end on devcluster with real PyTriton: happy path, canary + auto-promote, auto-revert.

Each test drives the real CLI process against a real devcluster whose raw_exec tasks run
`nomad-triton serve` (tritonserver on CPU); health comes from devcluster's real HTTP checks.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nomad_triton.nomad.client import NomadClient
from nomad_triton.nomad.errors import NotFound
from tests.e2e.cli_helpers import run_cli, triton_spec
from tests.e2e.conftest import Devcluster

pytestmark = pytest.mark.e2e


def facade(dc: Devcluster) -> NomadClient:
    return NomadClient.from_env(address=dc.addr, token=dc.token)


def test_deploy_happy_path_then_status_scale_stop(devcluster: Devcluster, tmp_path: Path) -> None:
    spec = triton_spec(tmp_path, "tri-happy")
    res = run_cli(["deploy", str(spec), "--timeout", "150s", "--json"], devcluster.addr)
    assert res.code == 0, res.text
    out = res.json()
    assert out["outcome"] == "successful" and out["exit_code"] == 0
    group = out["deployment"]["groups"]["triton"]
    assert group["healthy"] == 1 and group["desired"] == 1
    # While waiting the CLI follows the event stream: a handful of requests, not a polling loop.
    assert out["requests_while_waiting"] <= max(10, out["elapsed_s"]), out

    status = run_cli(["status", "tri-happy", "--json"], devcluster.addr)
    assert status.code == 0, status.text
    data = status.json()
    assert data["deployment"]["status"] == "successful"
    [alloc] = data["allocations"]
    assert alloc["healthy"] is True and alloc["client_status"] == "running"
    assert alloc["models_ready"] == {"relu_onnx": True}
    assert alloc["http"].startswith("127.0.0.1:")

    watched = run_cli(["watch", "tri-happy", "--timeout", "1500ms", "--json"], devcluster.addr)
    assert watched.code == 0, watched.text
    first = json.loads(watched.out.splitlines()[0])
    assert [a["client_status"] for a in first["allocations"]] == ["running"] and first["index"] > 0
    assert watched.elapsed < 15

    refused = run_cli(["scale", "tri-happy", "5"], devcluster.addr)
    assert refused.code == 2 and "outside group 'triton' scaling bounds [1, 2]" in refused.err, refused.text
    # --force skips only our pre-check: Nomad enforces the job's scaling block itself (bad input, exit 2).
    forced = run_cli(["scale", "tri-happy", "5", "--force"], devcluster.addr)
    assert forced.code == 2 and "scaling policy maximum" in forced.err, forced.text
    # Like `nomad job scale`, scale follows the rollout it starts: exit 0 means both are healthy.
    grown = run_cli(["scale", "tri-happy", "+1", "--timeout", "120s", "--json"], devcluster.addr)
    assert grown.code == 0, grown.text
    assert grown.json()["count"] == 2 and grown.json()["outcome"] == "successful", grown.text
    healthy = [a for a in facade(devcluster).job_allocations("tri-happy")
               if a["ClientStatus"] == "running" and (a.get("DeploymentStatus") or {}).get("Healthy")]
    assert len(healthy) == 2, healthy
    scaled = run_cli(["scale", "tri-happy", "triton", "-1", "--message", "e2e: back to one", "--json"],
                     devcluster.addr)
    assert scaled.code == 0, scaled.text
    assert scaled.json()["count"] == 1
    events = facade(devcluster).scale_status("tri-happy")["TaskGroups"]["triton"]["Events"]
    assert any(e.get("Message") == "e2e: back to one" for e in events), events

    stopped = run_cli(["stop", "tri-happy", "--purge"], devcluster.addr)
    assert stopped.code == 0, stopped.text
    with pytest.raises(NotFound):
        facade(devcluster).job("tri-happy")


def test_canary_verified_by_inference_then_promoted(devcluster: Devcluster, tmp_path: Path) -> None:
    spec = triton_spec(tmp_path, "tri-canary")
    first = run_cli(["deploy", str(spec), "--timeout", "150s"], devcluster.addr)
    assert first.code == 0, first.text
    res = run_cli(["deploy", str(spec), "--set", "rollout.canary=1", "--set", "env.RELEASE=v2", "--auto-promote",
                   "--timeout", "150s", "--json"], devcluster.addr)
    assert res.code == 0, res.text
    out = res.json()
    [check] = out["canary_checks"]
    assert check["ok"] and "inference on 'relu_onnx' returned y" in check["detail"], check
    group = out["deployment"]["groups"]["triton"]
    assert out["outcome"] == "successful" and group["promoted"] and group["desired_canaries"] == 1
    job = facade(devcluster).job("tri-canary")
    assert job["Version"] == 1 and job["Stable"] is True

    # rollback goes to the last stable version before the current one (version 0) via /revert.
    back = run_cli(["rollback", "tri-canary", "--json"], devcluster.addr)
    assert back.code == 0, back.text
    assert back.json()["from_version"] == 1 and back.json()["to_version"] == 0
    # like deploy, rollback exits 0 only once the version it brought back runs healthy
    assert back.json()["outcome"] == "successful" and back.json()["running"]["ok"] is True, back.text
    assert back.json()["running"]["groups"]["triton"]["versions"]["2"]["healthy"] == 1, back.text
    reverted = facade(devcluster).job("tri-canary")
    assert reverted["Version"] == 2
    assert "RELEASE" not in (reverted["TaskGroups"][0]["Tasks"][0].get("Env") or {})


def test_broken_command_reports_failure_and_rolls_back(devcluster: Devcluster, tmp_path: Path) -> None:
    spec = triton_spec(tmp_path, "tri-broken")
    good = run_cli(["deploy", str(spec), "--timeout", "150s"], devcluster.addr)
    assert good.code == 0, good.text
    # Short deadlines bound the test even where the failed task is only noticed at the progress deadline.
    bad = run_cli(["deploy", str(spec), "--set", 'driver.args=["serve", "--no-such-flag"]',
                   "--set", "rollout.healthy_deadline=15s", "--set", "rollout.progress_deadline=20s",
                   "--timeout", "150s"], devcluster.addr)
    assert bad.code == 3, bad.text
    assert "rolled the job back to version 0" in bad.out, bad.text
    # The failure report: the failed allocation, its task events and the last lines of its stderr.
    assert "Allocation " in bad.out and "event  server: Terminated" in bad.out, bad.out
    assert "no-such-flag" in bad.out, bad.out
    job = facade(devcluster).job("tri-broken")
    assert job["Version"] == 2  # the revert registered version 0's spec again as version 2
    assert "--no-such-flag" not in str(job["TaskGroups"][0]["Tasks"][0]["Config"])
