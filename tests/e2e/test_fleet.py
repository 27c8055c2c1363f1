"""`fleet deploy|plan|status` end to end on devcluster with real PyTriton (CPU).

A 3-stage fleet (PyTriton, PyTriton, a tiny HTTP job) rolls out and passes every gate; then the
same fleet with a bad model in stage 2 stops there, leaves stage 3 untouched and exits 1, or with
--rollback-on-failure exits 3 with stage 2 back on its stable version, running healthy. Ctrl-C
leaves the registered jobs rolling out in Nomad and says so.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from nomad_triton.nomad.client import NomadClient
from tests.e2e.cli_helpers import (
    MODELS,
    http_spec,
    kill_cli,
    run_cli,
    sleep_spec,
    start_cli,
    stop_cli,
    triton_spec,
    wait_for_text,
)
from tests.e2e.conftest import Devcluster

pytestmark = pytest.mark.e2e

GOOD = """
name = "e2e"
timeout = "150s"

[[stages]]
name = "one"
specs = ["fl-a.toml"]
verify = true

[[stages]]
name = "two"
specs = [{stage_two}]
verify = true
soak = "2s"
soak_interval = "1s"
max_error_ratio = 0.0

[[stages]]
name = "three"
specs = ["fl-c.toml"]
"""


def bad_stage_two(bad_repo: Path, release: str) -> str:
    """Stage 2's spec with a model that cannot load; Nomad's auto-revert off so the fleet decides."""
    sets = [f"model_repository.path={bad_repo}", "rollout.auto_revert=false", f"env.RELEASE={release}",
            'rollout.healthy_deadline="20s"', 'rollout.progress_deadline="30s"']
    return "{ spec = \"fl-b.toml\", set = " + json.dumps(sets) + " }"


def events(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def facade(dc: Devcluster) -> NomadClient:
    return NomadClient.from_env(address=dc.addr, token=dc.token)


def healthy_allocs(client: NomadClient, job: str, version: int) -> list[dict[str, Any]]:
    return [a for a in client.job_allocations(job) if a["ClientStatus"] == "running"
            and a.get("JobVersion") == version and (a.get("DeploymentStatus") or {}).get("Healthy")]


def test_fleet_stops_at_a_bad_stage_and_rolls_it_back(devcluster: Devcluster, tmp_path: Path) -> None:
    triton_spec(tmp_path, "fl-a")
    triton_spec(tmp_path, "fl-b")
    http_spec(tmp_path, "fl-c")
    bad_repo = tmp_path / "bad-models"
    (bad_repo / "relu_onnx").mkdir(parents=True)
    shutil.copy(MODELS / "relu_onnx" / "model.toml", bad_repo / "relu_onnx" / "model.toml")
    (bad_repo / "relu_onnx" / "model.onnx").write_bytes(b"this is not an onnx model")
    good = tmp_path / "fleet.toml"
    good.write_text(GOOD.format(stage_two='"fl-b.toml"'))
    client = facade(devcluster)

    # 1. Every stage passes: deployed healthy, verified by inference, soaked.
    res = run_cli(["fleet", "deploy", str(good), "--json"], devcluster.addr, timeout=420)
    assert res.code == 0, res.text
    evs = events(res.out)
    kinds = [(e["event"], e["stage"]) for e in evs if e["event"].startswith("stage_")]
    assert kinds == [("stage_started", "one"), ("stage_passed", "one"), ("stage_started", "two"),
                     ("stage_passed", "two"), ("stage_started", "three"), ("stage_passed", "three")], kinds
    verified = [e for e in evs if e["event"] == "verified"]
    assert {e["job"] for e in verified} == {"fl-a", "fl-b"}
    assert all("inference on 'relu_onnx' returned y" in e["message"] for e in verified), verified
    assert any(e["event"] == "soak_finished" and e["ok"] and e["rounds"] >= 2 for e in evs), evs
    summary = evs[-1]
    assert summary["event"] == "summary" and summary["exit_code"] == 0 and summary["requests"] > 0
    for job in ("fl-a", "fl-b", "fl-c"):
        got = client.job(job)
        assert got["Version"] == 0 and got["Stable"] is True, got
        assert len(healthy_allocs(client, job, 0)) == 1

    # 2. Nothing to change: plan exits 0 like `plan`; the cluster table shows every job ready.
    plan = run_cli(["fleet", "plan", str(good)], devcluster.addr)
    assert plan.code == 0, plan.text
    assert plan.out.count("): no change\n") == 3 and "3 job(s); 0 with changes" in plan.out, plan.out
    status = run_cli(["status", "--json"], devcluster.addr)
    assert status.code == 0, status.text
    rows = {r["job"]: r for r in status.json()["jobs"]}
    assert set(rows) == {"fl-a", "fl-b", "fl-c"}
    for job in ("fl-a", "fl-b"):
        r = rows[job]
        assert (r["desired"], r["running"], r["healthy"], r["deployment"], r["models_ready"]) == (
            1, 1, 1, "successful", "1/1"), r
    fleet_status = run_cli(["fleet", "status", str(good)], devcluster.addr)
    assert fleet_status.code == 0 and "fl-b" in fleet_status.out and "GPUs per node pool" in fleet_status.out
    untouched = client.job("fl-c")["JobModifyIndex"]

    # 3. A bad model in stage 2 with --rollback-on-failure: exit 3, fl-b back on its stable version.
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.format(stage_two=bad_stage_two(bad_repo, "bad-1")))
    res = run_cli(["fleet", "deploy", str(bad), "--rollback-on-failure"], devcluster.addr, timeout=420)
    assert res.code == 3, res.text
    failed = [line for line in res.out.splitlines() if "stage failed" in line]
    assert failed and "job fl-b allocation " in failed[0] and "model.onnx" in failed[0], res.out
    assert "[three] stage skipped: not touched" in res.out, res.out
    assert "reverted version 1 to version 0: successful" in res.out, res.out
    assert "the stage was rolled back to its stable versions" in res.err, res.err
    back = client.job("fl-b")
    assert back["Version"] == 2 and back["Stable"] is True, back
    assert "RELEASE" not in (back["TaskGroups"][0]["Tasks"][0].get("Env") or {})
    assert len(healthy_allocs(client, "fl-b", 2)) == 1
    assert client.job("fl-c")["JobModifyIndex"] == untouched

    # 4. The same failure without --rollback-on-failure: exit 1, stage 3 still untouched.
    bad.write_text(GOOD.format(stage_two=bad_stage_two(bad_repo, "bad-2")))
    res = run_cli(["fleet", "deploy", str(bad), "--json"], devcluster.addr, timeout=300)
    assert res.code == 1, res.text
    evs = events(res.out)
    [stage_failed] = [e for e in evs if e["event"] == "stage_failed"]
    assert stage_failed["stage"] == "two" and stage_failed["job"] == "fl-b" and stage_failed["alloc"], stage_failed
    assert any(e["event"] == "stage_skipped" and e["stage"] == "three" for e in evs)
    assert not [e for e in evs if e.get("job") == "fl-c"], "stage 3 must not be touched"
    assert evs[-1]["exit_code"] == 1 and evs[-1]["stages"][2]["state"] == "untouched"
    assert client.job("fl-c")["JobModifyIndex"] == untouched
    assert client.job("fl-b")["Stable"] is False


def test_ctrl_c_says_what_is_half_done(devcluster: Devcluster, tmp_path: Path) -> None:
    sleep_spec(tmp_path, "fl-slow")  # placed and running, never healthy: its deployment goes on
    http_spec(tmp_path, "fl-later")
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('[[stages]]\nname = "first"\nspecs = ["fl-slow.toml"]\n'
                     '[[stages]]\nname = "second"\nspecs = ["fl-later.toml"]\n')
    log = tmp_path / "fleet.log"
    proc = start_cli(["fleet", "deploy", str(fleet), "--json"], devcluster.addr, log)
    try:
        wait_for_text(log, '"job_registered"', timeout=60)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        assert stop_cli(proc, timeout=20) == 1
    finally:
        kill_cli(proc)
    evs = events(log.read_text())
    [interrupted] = [e for e in evs if e["event"] == "interrupted"]
    assert "fl-slow (registered; its deployment goes on in Nomad)" in interrupted["message"], interrupted
    assert "untouched stages: second" in interrupted["message"], interrupted
    assert evs[-1]["event"] == "summary" and evs[-1]["interrupted"] is True
    client = facade(devcluster)
    assert client.job("fl-slow")["Version"] == 0
    assert not [j for j in client.api.jobs.get_jobs() if j["ID"] == "fl-later"]


def test_status_watch_redraws_when_the_cluster_changes(devcluster: Devcluster, tmp_path: Path) -> None:
    spec = http_spec(tmp_path, "fl-watched", extra="[scaling]\nenabled = true\nmin = 1\nmax = 2\n")
    assert run_cli(["deploy", str(spec), "--timeout", "90s"], devcluster.addr).code == 0
    log = tmp_path / "watch.log"
    proc = start_cli(["status", "--watch", "--json"], devcluster.addr, log)
    try:
        wait_for_text(log, '"fl-watched"', timeout=60)
        first = events(log.read_text())[0]
        [row] = [r for r in first["jobs"] if r["job"] == "fl-watched"]
        assert (row["desired"], row["running"], row["healthy"]) == (1, 1, 1), row
        scaled = run_cli(["scale", "fl-watched", "2", "--message", "e2e: watch me", "--timeout", "60s"],
                         devcluster.addr)
        assert scaled.code == 0, scaled.text

        def two_running() -> dict[str, Any] | None:
            for snap in events(log.read_text()):
                for r in snap["jobs"]:
                    if r["job"] == "fl-watched" and r["running"] == 2 and "e2e: watch me" in r["last_scaling"]:
                        return r
            return None

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and two_running() is None:
            time.sleep(0.2)
        row = two_running()
        assert row is not None and row["desired"] == 2, log.read_text()[-2000:]
        proc.send_signal(signal.SIGINT)
        assert stop_cli(proc, timeout=20) == 0
    finally:
        kill_cli(proc)


def test_fleet_plan_lists_failing_placements_first(devcluster: Devcluster, tmp_path: Path) -> None:
    http_spec(tmp_path, "fl-fits")
    sleep_spec(tmp_path, "fl-gpu", gpus=1)  # this devcluster has no GPU: placement must fail
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('[[stages]]\nname = "first"\nspecs = ["fl-fits.toml"]\n'
                     '[[stages]]\nname = "second"\nspecs = ["fl-gpu.toml"]\n')
    res = run_cli(["fleet", "plan", str(fleet)], devcluster.addr)
    assert res.code == 1, res.text  # changes (two new jobs), as `plan`
    heads = [line for line in res.out.splitlines() if line.startswith("=== ")]
    assert heads == ["=== fl-gpu (stage second, pool default): PLACEMENT FAILS",
                     "=== fl-fits (stage first, pool default): changes"], res.out
    assert "Placement failures:" in res.out and "nvidia/gpu" in res.out, res.out
    assert "placement would fail for: fl-gpu" in res.out
    data = run_cli(["fleet", "plan", str(fleet), "--json"], devcluster.addr).json()
    assert [j["job"] for j in data["jobs"]] == ["fl-gpu", "fl-fits"]
    assert data["jobs"][0]["placement_failures"] and not data["jobs"][1]["placement_failures"]
    # Nothing was registered by planning.
    assert not [j for j in facade(devcluster).api.jobs.get_jobs() if j["ID"].startswith("fl-")]
