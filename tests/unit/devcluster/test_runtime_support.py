"""Builders shared by the scheduler and runtime tests: Nomad API-shaped nodes and jobs.

Why hand-built JSON rather than HCL: these tests pin the scheduler/runtime to the documented
API shapes (what `canonicalize_job` produces), independent of the HCL parser.
"""

from __future__ import annotations

import asyncio
import copy
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from nomad_triton.devcluster.runtime import Runtime
from nomad_triton.devcluster.store import Store

S = 1_000_000_000


def node(name: str, *, cpu: int = 4000, mem: int = 4096, dc: str = "dc1", pool: str = "default",
         drivers: tuple[str, ...] = ("raw_exec",), gpus: int = 0, gpu_name: str = "A100",
         gpu_memory: str = "40 GiB", attrs: dict[str, str] | None = None, meta: dict[str, str] | None = None,
         node_class: str = "") -> dict[str, Any]:
    devices = []
    if gpus:
        devices.append({"Vendor": "nvidia", "Type": "gpu", "Name": gpu_name,
                        "Attributes": {"memory": gpu_memory},
                        "Instances": [{"ID": f"GPU-{name}-{i}", "Healthy": True} for i in range(gpus)]})
    return {
        "ID": f"id-{name}", "Name": name, "Datacenter": dc, "NodePool": pool, "NodeClass": node_class,
        "Status": "ready", "SchedulingEligibility": "eligible",
        "Drivers": {d: {"Detected": True, "Healthy": True} for d in drivers},
        "Attributes": {"kernel.name": "linux", "cpu.arch": "amd64", "nomad.version": "1.9.3",
                       **(attrs or {})},
        "Meta": meta or {},
        "NodeResources": {"Cpu": {"CpuShares": cpu}, "Memory": {"MemoryMB": mem}, "Devices": devices},
    }


def http_task(name: str = "web", *, cpu: int = 100, mem: int = 64, command: str | None = None,
              args: list[str] | None = None, gpus: int = 0, env: dict[str, str] | None = None) -> dict[str, Any]:
    res: dict[str, Any] = {"CPU": cpu, "MemoryMB": mem}
    if gpus:
        res["Devices"] = [{"Name": "nvidia/gpu", "Count": gpus}]
    return {
        "Name": name, "Driver": "raw_exec",
        "Config": {"command": command or sys.executable,
                   "args": args if args is not None else
                   ["-m", "http.server", "${NOMAD_PORT_http}", "--bind", "127.0.0.1",
                    "--directory", "${NOMAD_TASK_DIR}"]},
        "Env": env or {"GREETING": "hi-${NOMAD_ALLOC_INDEX}"},
        "Resources": res,
        "KillTimeout": int(2 * S),
        "Services": None,
    }


def job(job_id: str = "web", *, count: int = 1, tasks: list[dict[str, Any]] | None = None,
        update: dict[str, Any] | None = None, checks: bool = True, restart: dict[str, Any] | None = None,
        reschedule: dict[str, Any] | None = None, constraints: list[dict[str, Any]] | None = None,
        datacenters: list[str] | None = None, pool: str = "default", version: int = 0) -> dict[str, Any]:
    svc_checks = [{"Name": "alive", "Type": "http", "Path": "/", "Interval": int(0.1 * S),
                   "Timeout": int(1 * S), "PortLabel": ""}] if checks else None
    tg = {
        "Name": "g", "Count": count,
        "Tasks": tasks or [http_task()],
        "Networks": [{"Mode": "host", "DynamicPorts": [{"Label": "http", "Value": 0, "To": 0}],
                      "ReservedPorts": None}],
        "Services": [{"Name": f"{job_id}-svc", "PortLabel": "http", "Provider": "nomad", "Tags": ["t1"],
                      "Checks": svc_checks}],
        "RestartPolicy": restart or {"Attempts": 2, "Interval": int(60 * S), "Delay": int(0.1 * S),
                                     "Mode": "fail"},
        "ReschedulePolicy": reschedule or {"Attempts": 0, "Interval": 0, "Delay": int(0.1 * S),
                                           "DelayFunction": "constant", "MaxDelay": 0, "Unlimited": False},
        "Update": update,
        "Constraints": constraints,
    }
    return {
        "ID": job_id, "Name": job_id, "Namespace": "default", "Type": "service", "Priority": 50,
        "Region": "global", "Datacenters": datacenters or ["*"], "NodePool": pool, "TaskGroups": [tg],
        "Constraints": None, "Meta": None, "Stop": False, "Status": "pending", "Version": version,
        "Stable": False,
    }


def fast_update(**kw: Any) -> dict[str, Any]:
    upd = {"MaxParallel": 1, "HealthCheck": "checks", "MinHealthyTime": int(0.3 * S),
           "HealthyDeadline": int(10 * S), "ProgressDeadline": 0, "AutoRevert": False,
           "AutoPromote": False, "Canary": 0, "Stagger": int(1 * S)}
    upd.update(kw)
    return upd


class Cluster:
    """A real Store + Runtime with nodes; `register` mimics the API's register handler."""

    def __init__(self, tmp: Path, nodes: list[dict[str, Any]]) -> None:
        self.store = Store()
        for n in nodes:
            self.store.upsert("nodes", n["ID"], n, event_type="NodeRegistration", payload_name="Node")
        self.rt = Runtime(self.store, SimpleNamespace(state_dir=tmp / "state", region="global",
                                                      datacenter="dc1", runtime={"port_seed": 7}))

    def register(self, j: dict[str, Any]) -> dict[str, Any]:
        """Store a job version (bumping Version when it exists) and a pending evaluation."""
        j = copy.deepcopy(j)
        ns = j["Namespace"]
        existing = self.store.get("jobs", (ns, j["ID"]))
        idx = self.store.next_index()
        j["Version"] = 0 if existing is None else existing["Version"] + 1
        j["JobModifyIndex"] = idx
        j["CreateIndex"] = existing["CreateIndex"] if existing else idx
        j["Stable"] = False
        self.store.upsert("jobs", (ns, j["ID"]), j, index=idx, event_type="JobRegistered", payload_name="Job")
        self.store.upsert("job_versions", (ns, j["ID"], j["Version"]), copy.deepcopy(j), index=idx)
        return self.rt.create_eval(j, "job-register")

    def job(self, job_id: str = "web") -> dict[str, Any]:
        return self.store.get("jobs", ("default", job_id))

    def allocs(self, job_id: str = "web") -> list[dict[str, Any]]:
        return sorted((a for a in self.store.list("allocs") if a["JobID"] == job_id),
                      key=lambda a: a["CreateIndex"])

    def live(self, job_id: str = "web") -> list[dict[str, Any]]:
        return [a for a in self.allocs(job_id) if a["DesiredStatus"] == "run"
                and a["ClientStatus"] in ("pending", "running")]

    def deployments(self, job_id: str = "web") -> list[dict[str, Any]]:
        return sorted((d for d in self.store.list("deployments") if d["JobID"] == job_id),
                      key=lambda d: d["CreateIndex"])

    def evals(self, job_id: str = "web") -> list[dict[str, Any]]:
        return sorted((e for e in self.store.list("evals") if e["JobID"] == job_id),
                      key=lambda e: e["CreateIndex"])


def run_bounded(coro: Any, timeout: float = 90.0) -> None:
    """Run a test body on a fresh loop with a hard deadline; a swallowed timeout still fails."""
    finished: list[bool] = []

    async def body() -> None:
        await coro
        finished.append(True)

    asyncio.run(asyncio.wait_for(body(), timeout))
    assert finished, f"test body did not finish within {timeout}s"


async def until(pred: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll `pred` every 20 ms until truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
