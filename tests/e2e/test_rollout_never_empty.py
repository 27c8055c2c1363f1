"""A rollout that goes wrong never ends with nothing running, and `deploy` says what really runs.

The operator's scenarios from the field, driven through the real CLI against a devcluster
subprocess with the real CPU example (jobs/cpu-example.toml: `nomad-triton serve` + tritonserver):
1. a broken version fails its deployment; Nomad's auto-revert registers the stable version again,
   which must get its own deployment and run healthy; only then does `deploy` exit 3;
2. a good version deployed while a broken rollout is in flight replaces the failed allocation and
   runs healthy (it used to be "no deployment was needed", exit 0, with nothing running);
3. when the reverted stable version cannot run either, `deploy` exits 1 and says what runs.
Every claim of the CLI is checked against what Nomad itself reports (python-nomad).

`restart.attempts=0` makes the broken task fail at once, so the failed allocation is waiting for
its delayed reschedule when the next version arrives: the situation that used to leave nothing
running, reached deterministically instead of by a race with the restart delay.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cli_helpers import kill_cli, run_cli, start_cli, stop_cli, triton_spec, wait_for_text
from tests.e2e.conftest import Devcluster, wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CPU_EXAMPLE = str(ROOT / "jobs" / "cpu-example.toml")
JOB = "triton-cpu"
# The example as an operator runs it, with this venv's server (independent of devcluster's PATH)
# and quicker checks so the test spends its time on the rollout, not on waiting for intervals.
BASE = ["--set", f"driver.command={Path(sys.executable).parent / 'nomad-triton'}",
        "--set", 'health.interval="1s"', "--set", 'health.timeout="1s"',
        "--set", 'rollout.min_healthy_time="1s"']
BROKEN = ["--set", "driver.command=/bin/false", "--set", "restart.attempts=0"]


def running_healthy(dc: Devcluster, job_id: str, version: int) -> list[dict[str, Any]]:
    """What Nomad reports: allocations of `version` that run and passed their health checks."""
    return [a for a in dc.nomad().job.get_allocations(job_id)
            if a["JobVersion"] == version and a["DesiredStatus"] == "run" and a["ClientStatus"] == "running"
            and (a.get("DeploymentStatus") or {}).get("Healthy") is True]


def deploy_good(dc: Devcluster, *extra: str) -> None:
    res = run_cli(["deploy", CPU_EXAMPLE, *BASE, *extra, "--timeout", "240s"], dc.addr, timeout=300)
    assert res.code == 0, res.text
    dc.remember_groups()


def test_failed_rollout_reverts_and_exit_3_only_once_the_stable_version_runs_again(
    devcluster: Devcluster,
) -> None:
    deploy_good(devcluster)
    bad = run_cli(["deploy", CPU_EXAMPLE, *BASE, *BROKEN, "--set", "rollout.healthy_deadline=15s",
                   "--set", "rollout.progress_deadline=30s", "--timeout", "240s", "--json"],
                  devcluster.addr, timeout=300)
    devcluster.remember_groups()
    assert bad.code == 3, bad.text
    out = bad.json()
    assert out["outcome"] == "rolled_back" and out["rollback_version"] == 0 and out["exit_code"] == 3, out
    assert "rolled the job back to version 0 (registered again as version 2), which runs healthy again" \
        in out["message"], out["message"]
    assert out["running"]["ok"] is True and out["running"]["version"] == 2, out["running"]
    assert out["running"]["groups"]["triton"]["versions"]["2"]["healthy"] == 1, out["running"]

    # Nomad's own view agrees: version 2 (version 0's spec) runs healthy in a deployment of its own,
    n = devcluster.nomad()
    job = n.job.get_job(JOB)
    assert job["Version"] == 2 and job["TaskGroups"][0]["Tasks"][0]["Config"]["command"] != "/bin/false"
    assert len(running_healthy(devcluster, JOB, 2)) == 1
    deps = {d["JobVersion"]: d for d in n.job.get_deployments(JOB)}
    assert deps[1]["Status"] == "failed" and deps[2]["Status"] == "successful", deps
    # and the broken version's failed allocation was replaced, not left to a delayed reschedule
    broken = [a for a in n.job.get_allocations(JOB) if a["JobVersion"] == 1]
    # (a replacement of the broken version rescheduled before the deadline may have been stopped while
    # starting: complete rather than failed)
    assert broken and all(a["DesiredStatus"] == "stop" and a["ClientStatus"] in ("failed", "complete")
                          for a in broken), [(a["ClientStatus"], a["DesiredStatus"]) for a in broken]
    ids = {a["ID"] for a in broken}
    [last] = [a for a in broken if a["NextAllocation"] not in ids]
    replacement = n.allocation.get_allocation(last["NextAllocation"])
    assert replacement["Job"]["Version"] == 2 and replacement["ClientStatus"] == "running", replacement


def test_good_version_deployed_during_a_broken_rollout_replaces_it_and_runs(
    devcluster: Devcluster, tmp_path: Path,
) -> None:
    deploy_good(devcluster)
    log = tmp_path / "broken-deploy.log"
    broken = start_cli(["deploy", CPU_EXAMPLE, *BASE, *BROKEN, "--set", "rollout.healthy_deadline=60s",
                        "--set", "rollout.progress_deadline=120s", "--timeout", "240s"], devcluster.addr, log)
    try:
        wait_for_text(log, "following the deployment", 60)
        n = devcluster.nomad()
        # the broken version's allocation failed and waits for its delayed reschedule: nothing runs
        wait_until(lambda: [a for a in n.job.get_allocations(JOB)
                            if a["JobVersion"] == 1 and a["ClientStatus"] == "failed"], 60,
                   "the broken version's allocation to fail")
        assert not [a for a in n.job.get_allocations(JOB)
                    if a["DesiredStatus"] == "run" and a["ClientStatus"] in ("pending", "running")]
        fixed = run_cli(["deploy", CPU_EXAMPLE, *BASE, "--set", "env.RELEASE=fixed", "--timeout", "240s",
                         "--json"], devcluster.addr, timeout=300)
        devcluster.remember_groups()
        assert fixed.code == 0, fixed.text
        out = fixed.json()
        assert out["outcome"] == "successful" and out["deployment"]["job_version"] == 2, out
        assert out["running"]["ok"] is True and out["running"]["groups"]["triton"]["versions"]["2"]["healthy"] == 1
        # the in-flight broken deploy learns its deployment was superseded: exit 1, saying so
        assert stop_cli(broken, 60) == 1
        assert "Cancelled due to newer version of job" in log.read_text()
    finally:
        kill_cli(broken)
    assert len(running_healthy(devcluster, JOB, 2)) == 1
    deps = {d["JobVersion"]: d["Status"] for d in devcluster.nomad().job.get_deployments(JOB)}
    assert deps == {0: "successful", 1: "cancelled", 2: "successful"}, deps


def test_revert_that_cannot_run_either_exits_1_saying_what_runs(devcluster: Devcluster, tmp_path: Path) -> None:
    """The stable version was fine when deployed, but cannot start any more (its model repository is
    gone): Nomad's auto-revert cannot bring it back, and `deploy` must not claim it did."""
    spec = triton_spec(tmp_path, "tri-revert")
    fast_fail = ["--set", "rollout.healthy_deadline=60s", "--set", "rollout.progress_deadline=0s"]
    good = run_cli(["deploy", str(spec), *fast_fail, "--timeout", "150s"], devcluster.addr)
    assert good.code == 0, good.text
    devcluster.remember_groups()
    repo = tmp_path / "models"
    repo.rename(tmp_path / "models-moved-away")  # the running allocation already loaded its models
    bad = run_cli(["deploy", str(spec), *fast_fail, "--set", "driver.command=/bin/false", "--timeout", "120s",
                   "--json"], devcluster.addr, timeout=180)
    assert bad.code == 1, bad.text
    out = bad.json()
    assert out["outcome"] == "revert_not_running" and out["rollback_version"] == 0, out
    assert "Nomad rolled the job back to version 0 (registered again as version 2), but it is not running " \
        "healthy" in out["message"], out["message"]
    assert "triton: 0/1 healthy of version 2; now nothing running" in out["message"], out["message"]
    assert out["running"]["ok"] is False and out["running"]["job_version"] == 2, out["running"]
    # Nomad agrees: nothing of the job is meant to run any more (the old alloc may still be draining)
    assert not [a for a in devcluster.nomad().job.get_allocations("tri-revert")
                if a["DesiredStatus"] == "run" and a["ClientStatus"] in ("pending", "running")]
