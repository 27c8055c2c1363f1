"""devcluster runtime end to end: real raw_exec processes, real http checks, real deployments,
scaling, stop/purge, restart-then-reschedule and GPU infeasibility, driven through python-nomad."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from .conftest import Devcluster, StartFn, wait_until
from .devcluster_jobs import PY, pids_with, sleep_job, web_job

pytestmark = pytest.mark.e2e


def marker_dir(tmp_path: Path) -> str:
    d = tmp_path / f"www-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    (d / "index.html").write_text("ok")
    return str(d)


def running_allocs(n: Any, job_id: str) -> list[dict[str, Any]]:
    return [a for a in n.job.get_allocations(job_id)
            if a["ClientStatus"] == "running" and a["DesiredStatus"] == "run"]


def healthy_deployment(n: Any, job_id: str, timeout: float = 90) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        dep = n.job.get_deployment(job_id)
        if dep and dep["Status"] == "failed":
            raise AssertionError(f"deployment failed: {dep['StatusDescription']}")
        return dep if dep and dep["Status"] == "successful" else None

    return wait_until(check, timeout, f"a successful deployment of {job_id}", interval=0.25)


class EventCollector:
    """Reads /v1/event/stream in a thread (raw, to see exact lines) until stopped."""

    def __init__(self, dc: Devcluster, topics: list[str]) -> None:
        self.frames: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(dc, topics), daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "event stream did not connect"

    def _run(self, dc: Devcluster, topics: list[str]) -> None:
        with dc.http(timeout=60) as http, http.stream("GET", "/v1/event/stream",
                                                      params={"topic": topics}) as resp:
            self._ready.set()
            for line in resp.iter_lines():
                if line.strip() and line.strip() != "{}":
                    self.frames.append(json.loads(line))
                if self._stop.is_set():
                    return

    def events(self) -> list[dict[str, Any]]:
        return [e for f in list(self.frames) for e in f["Events"]]

    def stop(self) -> None:
        self._stop.set()


def test_http_check_job_places_and_deploys_healthy(devcluster: Devcluster, tmp_path: Path) -> None:
    n = devcluster.nomad()
    collector = EventCollector(devcluster, ["Deployment:web1", "Allocation:web1"])
    marker = marker_dir(tmp_path)
    job = n.jobs.parse(web_job("web1", marker, count=2))
    n.jobs.register_job({"Job": job})
    dep = healthy_deployment(n, "web1")
    assert dep["TaskGroups"]["web"]["HealthyAllocs"] == 2
    allocs = running_allocs(n, "web1")
    assert len(allocs) == 2 and all(a["DeploymentStatus"]["Healthy"] is True for a in allocs)
    assert len(pids_with(marker)) == 2
    devcluster.remember_groups()
    with devcluster.http() as http:
        regs = http.get("/v1/service/web1-http").json()
        assert len(regs) == 2 and {r["Address"] for r in regs} == {"127.0.0.1"}
        for reg in regs:  # the registered ports really serve
            assert http.get(f"http://127.0.0.1:{reg['Port']}/index.html").text == "ok"
        logs = http.get(f"/v1/client/fs/logs/{allocs[0]['ID']}",
                        params={"task": "server", "type": "stderr", "plain": "true"})
        assert logs.status_code == 200 and "GET /" in logs.text  # http.server logs the checks
    wait_until(lambda: any(e["Topic"] == "Deployment" for e in collector.events())
               and any(e["Topic"] == "Allocation" for e in collector.events()), 10, "deployment+alloc events")
    collector.stop()
    evs = collector.events()
    assert all(e["Topic"] in ("Deployment", "Allocation") for e in evs)
    assert {e["Payload"]["Allocation"]["JobID"] for e in evs if e["Topic"] == "Allocation"} == {"web1"}
    assert any(e["Payload"]["Deployment"]["Status"] == "successful" for e in evs if e["Topic"] == "Deployment")


def test_scale_up_and_down_changes_process_count(devcluster: Devcluster, tmp_path: Path) -> None:
    n = devcluster.nomad()
    marker = marker_dir(tmp_path)
    n.jobs.register_job({"Job": n.jobs.parse(web_job("web2", marker, count=1, min_healthy="3s"))})
    healthy_deployment(n, "web2")
    assert len(pids_with(marker)) == 1
    with devcluster.http() as http:
        r = http.post("/v1/job/web2/scale", json={"Count": 3, "Target": {"Group": "web"}, "Message": "up"})
        assert r.status_code == 200, r.text
        wait_until(lambda: (d := n.job.get_deployment("web2")) and d["JobVersion"] == 1
                   and d["Status"] == "running", 30, "the scale-up deployment to start")
        blocked = http.post("/v1/job/web2/scale", json={"Count": 1, "Target": {"Group": "web"}})
        assert (blocked.status_code, blocked.text) == (400, "job scaling blocked due to active deployment")
        wait_until(lambda: len(pids_with(marker)) == 3, 60, "3 server processes")
        healthy_deployment(n, "web2")
        devcluster.remember_groups()
        r = http.post("/v1/job/web2/scale", json={"Count": 1, "Target": {"Group": "web"}, "Message": "down"})
        assert r.status_code == 200, r.text
        wait_until(lambda: len(pids_with(marker)) == 1, 60, "back to 1 server process")
        status = http.get("/v1/job/web2/scale").json()
        group = status["TaskGroups"]["web"]
        assert group["Desired"] == 1 and [e["Message"] for e in group["Events"]][:2] == ["down", "up"]
    wait_until(lambda: len(running_allocs(n, "web2")) == 1, 30, "one running alloc")


def test_stop_and_purge_really_stop_processes(devcluster: Devcluster, tmp_path: Path) -> None:
    n = devcluster.nomad()
    marker = marker_dir(tmp_path)
    n.jobs.register_job({"Job": n.jobs.parse(web_job("web3", marker, count=2))})
    healthy_deployment(n, "web3")
    devcluster.remember_groups()
    n.job.deregister_job("web3")
    wait_until(lambda: not pids_with(marker), 30, "processes gone after stop")
    job = wait_until(lambda: (j := n.job.get_job("web3"))["Status"] == "dead" and j, 30, "job dead")
    assert job["Stop"] is True
    assert all(a["DesiredStatus"] == "stop" for a in n.job.get_allocations("web3"))
    n.job.deregister_job("web3", purge=True)
    assert [j["ID"] for j in n.jobs.get_jobs()] == []
    with devcluster.http() as http:
        assert http.get("/v1/job/web3").status_code == 404
        wait_until(lambda: http.get("/v1/service/web3-http").json() == [], 10, "service deregistered")


CRASH_JOB = """
job "crash" {
  datacenters = ["dc1"]
  type = "service"
  group "g" {
    restart {
      attempts = 1
      delay    = "1s"
      interval = "1m"
      mode     = "fail"
    }
    reschedule {
      attempts       = 1
      interval       = "1h"
      delay          = "1s"
      delay_function = "constant"
      unlimited      = false
    }
    task "boom" {
      driver = "raw_exec"
      config {
        command = "PYTHON"
        args    = ["-c", "import sys, time; print('crash-marker', flush=True); time.sleep(0.5); sys.exit(3)"]
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
""".replace("PYTHON", PY)


def test_crashing_task_is_restarted_then_rescheduled(devcluster: Devcluster) -> None:
    n = devcluster.nomad()
    n.jobs.register_job({"Job": n.jobs.parse(CRASH_JOB)})

    def rescheduled() -> list[dict[str, Any]] | None:
        allocs = n.job.get_allocations("crash")
        return allocs if any(a.get("PreviousAllocation") for a in allocs) else None

    allocs = wait_until(rescheduled, 60, "a replacement allocation")
    first = next(a for a in allocs if not a.get("PreviousAllocation"))
    second = next(a for a in allocs if a.get("PreviousAllocation") == first["ID"])
    full = wait_until(lambda: (a := n.allocation.get_allocation(first["ID"]))["ClientStatus"] == "failed" and a,
                      30, "first alloc failed")
    state = full["TaskStates"]["boom"]
    types = [e["Type"] for e in state["Events"]]
    assert state["Restarts"] >= 1 and "Restarting" in types and "Not Restarting" in types
    assert second["RescheduleTracker"]["Events"][0]["PrevAllocID"] == first["ID"]
    with devcluster.http() as http:
        out = http.get(f"/v1/client/fs/logs/{first['ID']}", params={"task": "boom", "type": "stdout", "plain": "true"})
        assert out.text.count("crash-marker") >= 2  # the original run and its restart


GPU_CONFIG = """
[[node_pools]]
name = "gpu"

[[nodes]]
name = "cpu-1"

[[nodes]]
name = "gpu-1"
node_pool = "gpu"
[[nodes.devices]]
vendor = "nvidia"
type = "gpu"
name = "A100"
count = 1
memory = "40 GiB"
"""


def test_infeasible_gpu_count_is_reported_in_failed_tg_allocs(devcluster_factory: StartFn) -> None:
    dc = devcluster_factory(GPU_CONFIG)
    n = dc.nomad()
    ok = n.jobs.parse(sleep_job("gpu-ok", count=1, node_pool="gpu", extra_task='device "nvidia/gpu" { count = 1 }'))
    n.jobs.register_job({"Job": ok})
    wait_until(lambda: len(running_allocs(n, "gpu-ok")) == 1, 30, "GPU job running")
    alloc = n.allocation.get_allocation(running_allocs(n, "gpu-ok")[0]["ID"])
    assert n.node.get_node(alloc["NodeID"])["Name"] == "gpu-1"
    granted = alloc["AllocatedResources"]["Tasks"]["sleep"]["Devices"]
    assert [(d["Vendor"], d["Type"], d["Name"], len(d["DeviceIDs"])) for d in granted] == [
        ("nvidia", "gpu", "A100", 1)]
    too_many = n.jobs.parse(sleep_job("gpu-big", count=1, node_pool="gpu",
                                      extra_task='device "nvidia/gpu" { count = 2 }'))
    plan = n.job.plan_job("gpu-big", {"Job": too_many}, diff=True)
    failed = plan["FailedTGAllocs"]["main"]
    reasons = json.dumps(failed)
    assert failed["NodesEvaluated"] >= 1 and "missing devices" in reasons, reasons
    # Each evaluated node is counted once, under one reason (Nomad's AllocMetric).
    assert sum((failed["ConstraintFiltered"] or {}).values()) == failed["NodesFiltered"], reasons
    assert (failed["NodesFiltered"] + failed["NodesExhausted"] == failed["NodesEvaluated"]
            == sum((failed["ConstraintFiltered"] or {}).values()) + sum((failed["DimensionExhausted"] or {}).values())), reasons
    out = n.jobs.register_job({"Job": too_many})
    ev = wait_until(lambda: (e := n.evaluation.get_evaluation(out["EvalID"]))["Status"] != "pending" and e,
                    30, "eval processed")
    assert "main" in (ev.get("FailedTGAllocs") or {}), ev
    assert running_allocs(n, "gpu-big") == []
