"""devcluster fidelity regressions found by the team, each pinned to Nomad's documented behaviour:

- a task that fails for good makes its allocation unhealthy at once (DeploymentStatus.Healthy
  false, the deployment's UnhealthyAllocs counts it); progress_deadline = 0 fails the deployment
  on it, progress_deadline > 0 keeps the deployment running until the deadline (Nomad's watcher);
- a count-only change (scale) updates the running allocation in place into the new deployment,
  which re-proves its health (Nomad's generic scheduler resets DeploymentStatus on in-place
  updates that change DeploymentID) and then counts it healthy;
- `POST /v1/job/:id/plan` with Diff annotates each group's `Updates` from DesiredTGUpdates
  (scheduler.Annotate): a count change reads "create" + "in-place update";
- after `DELETE /v1/job/:id?purge=true` a job registered again under the same ID starts clean:
  `/v1/job/:id/{allocations,deployments,deployment}` show only the new instance (the old one
  only with `?all=true`, as Nomad's AllocsByJob/DeploymentsByJobID filter on the create index).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from .conftest import Devcluster, wait_until
from .devcluster_jobs import web_job

pytestmark = pytest.mark.e2e


def failing_job(job_id: str, progress_deadline: str) -> str:
    """raw_exec `sh -c 'exit 1'`, no restarts: the alloc fails right after it starts."""
    return f'''
job "{job_id}" {{
  datacenters = ["dc1"]
  type = "service"
  group "g" {{
    restart {{
      attempts = 0
      mode     = "fail"
    }}
    update {{
      max_parallel      = 1
      min_healthy_time  = "1s"
      healthy_deadline  = "30s"
      progress_deadline = "{progress_deadline}"
    }}
    task "t" {{
      driver = "raw_exec"
      config {{
        command = "sh"
        args    = ["-c", "exit 1"]
      }}
      resources {{
        cpu    = 20
        memory = 16
      }}
    }}
  }}
}}
'''


def marker_dir(tmp_path: Path) -> str:
    d = tmp_path / f"www-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    (d / "index.html").write_text("ok")
    return str(d)


def settled_deployment(n: Any, job_id: str, timeout: float = 60) -> dict[str, Any]:
    return wait_until(lambda: (d := n.job.get_deployment(job_id)) and d["Status"] in ("successful", "failed")
                      and d, timeout, f"the deployment of {job_id} to finish", interval=0.2)


def test_failed_task_is_unhealthy_and_fails_or_holds_the_deployment(devcluster: Devcluster) -> None:
    n = devcluster.nomad()
    n.jobs.register_job({"Job": n.jobs.parse(failing_job("fail-now", "0"))})
    n.jobs.register_job({"Job": n.jobs.parse(failing_job("fail-later", "40s"))})

    dep = wait_until(lambda: (d := n.job.get_deployment("fail-now")) and d["Status"] == "failed" and d,
                     15, "progress_deadline=0 deployment to fail on the unhealthy alloc")
    assert dep["StatusDescription"] == "Failed due to unhealthy allocations"
    assert dep["TaskGroups"]["g"]["UnhealthyAllocs"] == 1 and dep["TaskGroups"]["g"]["HealthyAllocs"] == 0
    (alloc,) = n.job.get_allocations("fail-now")
    assert alloc["ClientStatus"] == "failed" and alloc["DeploymentStatus"]["Healthy"] is False

    # progress_deadline > 0: the unhealthy alloc is counted quickly, the deployment keeps running
    dep = wait_until(lambda: (d := n.job.get_deployment("fail-later"))
                     and d["TaskGroups"]["g"]["UnhealthyAllocs"] >= 1 and d, 15, "UnhealthyAllocs > 0")
    assert dep["Status"] == "running", dep["StatusDescription"]
    failed = [a for a in n.job.get_allocations("fail-later") if a["ClientStatus"] == "failed"]
    assert failed and all(a["DeploymentStatus"]["Healthy"] is False for a in failed)
    full = n.allocation.get_allocation(failed[0]["ID"])
    assert full["DesiredTransition"]["Reschedule"] is True  # released for replacement by the watcher


def test_scale_updates_in_place_and_plan_diff_has_group_updates(devcluster: Devcluster, tmp_path: Path) -> None:
    n = devcluster.nomad()
    marker = marker_dir(tmp_path)
    n.jobs.register_job({"Job": n.jobs.parse(web_job("sc", marker, count=1, min_healthy="1s"))})
    first = settled_deployment(n, "sc")
    assert first["Status"] == "successful"
    (orig,) = n.job.get_allocations("sc")

    plan = n.job.plan_job("sc", {"Job": n.jobs.parse(web_job("sc", marker, count=3, min_healthy="1s")),
                                 "Diff": True})
    assert plan["Annotations"]["DesiredTGUpdates"]["web"]["Place"] == 2
    (group,) = plan["Diff"]["TaskGroups"]
    assert group["Updates"] == {"create": 2, "in-place update": 1}
    count = next(f for f in group["Fields"] if f["Name"] == "Count")
    assert count["Annotations"] == ["forces create"]

    with devcluster.http() as http:
        r = http.post("/v1/job/sc/scale", json={"Count": 2, "Target": {"Group": "web"}})
        assert r.status_code == 200, r.text
    dep = wait_until(lambda: (d := n.job.get_deployment("sc")) and d["JobVersion"] == 1
                     and d["Status"] in ("successful", "failed") and d, 60, "the scale deployment to finish")
    assert dep["Status"] == "successful", dep["StatusDescription"]
    assert dep["TaskGroups"]["web"]["DesiredTotal"] == 2
    assert dep["TaskGroups"]["web"]["HealthyAllocs"] == 2 and dep["TaskGroups"]["web"]["PlacedAllocs"] == 2
    kept = n.allocation.get_allocation(orig["ID"])
    assert kept["DesiredStatus"] == "run" and kept["ClientStatus"] == "running"
    assert kept["Job"]["Version"] == 1 and kept["DeploymentID"] == dep["ID"]
    assert kept["DeploymentStatus"]["Healthy"] is True


def test_purge_then_register_again_starts_clean(devcluster: Devcluster, tmp_path: Path) -> None:
    n = devcluster.nomad()
    marker = marker_dir(tmp_path)
    job = n.jobs.parse(web_job("again", marker, count=1, min_healthy="1s"))
    n.jobs.register_job({"Job": job})
    old_dep = settled_deployment(n, "again")
    assert old_dep["Status"] == "successful" and old_dep["JobVersion"] == 0
    (old_alloc,) = n.job.get_allocations("again")
    n.job.deregister_job("again", purge=True)
    wait_until(lambda: n.allocation.get_allocation(old_alloc["ID"])["ClientStatus"] == "complete", 30,
               "the purged job's alloc to stop")

    n.jobs.register_job({"Job": job})  # same ID, same spec: version 0 again
    with devcluster.http() as http:
        latest = http.get("/v1/job/again/deployment").json()
        assert latest is None or latest["ID"] != old_dep["ID"]  # never the purged instance's
    created = n.job.get_job("again")["CreateIndex"]
    dep = settled_deployment(n, "again")
    assert dep["ID"] != old_dep["ID"] and dep["JobCreateIndex"] == created
    assert dep["Status"] == "successful", dep["StatusDescription"]
    assert [d["ID"] for d in n.job.get_deployments("again")] == [dep["ID"]]
    allocs = n.job.get_allocations("again")
    assert old_alloc["ID"] not in {a["ID"] for a in allocs} and len(allocs) == 1
    with devcluster.http() as http:
        everything = http.get("/v1/job/again/allocations", params={"all": "true"}).json()
        assert {old_alloc["ID"], allocs[0]["ID"]} == {a["ID"] for a in everything}
        deps = http.get("/v1/job/again/deployments", params={"all": "true"}).json()
        assert http.get("/v1/job/again/deployment", params={"all": "true"}).json()["ID"] == dep["ID"]
        assert {old_dep["ID"], dep["ID"]} == {d["ID"] for d in deps}
        summary = http.get("/v1/job/again/summary").json()["Summary"]["web"]
        assert summary["Running"] == 1 and summary["Complete"] == 0
