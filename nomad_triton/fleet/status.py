"""The one-table view of every toolkit job: pool, version, counts, deployment, models, GPUs, scaling.

Why four list queries and not a poll per job: the whole table comes from /v1/jobs, /v1/allocations
(with resources), /v1/deployments and /v1/nodes (with resources), each a blocking query that
`--watch` re-issues with the index it last saw, so an idle cluster costs four parked requests and
a change anywhere arrives at once. A job's full definition (models, GPUs per allocation) and its
scaling events are read only when its JobModifyIndex / ModifyIndex moves, so 100 unchanged jobs
cost nothing per refresh. Model readiness is asked of Triton itself (/v2/models/<m>/ready), in
parallel, with a short timeout: a hung allocation costs one timeout, never the table.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from nomad_triton.nomad import errors
from nomad_triton.nomad.client import NomadClient
from nomad_triton.probe.discovery import alloc_ports

LISTS: dict[str, tuple[str, dict[str, str]]] = {
    "jobs": ("jobs", {}),
    "allocs": ("allocations", {"resources": "true", "task_states": "false"}),
    "deployments": ("deployments", {}),
    "nodes": ("nodes", {"resources": "true"}),
}
MODELS_ENV = "NOMAD_TRITON_MODELS"  # set by the renderer in every toolkit job's task env
LIVE = ("pending", "running")


@dataclass
class JobRow:
    job: str
    pool: str
    version: int
    status: str
    desired: int
    running: int
    healthy: int
    deployment: str
    models: int
    models_ready: str
    gpus: int
    last_scaling: str


@dataclass
class PoolRow:
    pool: str
    gpus_total: int
    gpus_used: int

    @property
    def gpus_free(self) -> int:
        return self.gpus_total - self.gpus_used


def job_models(job: dict[str, Any]) -> list[str]:
    """Models of a toolkit job (from the env the renderer sets); [] means not a toolkit job."""
    for tg in job.get("TaskGroups") or []:
        for task in tg.get("Tasks") or []:
            value = (task.get("Env") or {}).get(MODELS_ENV)
            if value:
                return [m for m in value.split(",") if m]
    return []


def gpus_per_alloc(job: dict[str, Any]) -> int:
    total = 0
    for tg in job.get("TaskGroups") or []:
        for task in tg.get("Tasks") or []:
            for dev in (task.get("Resources") or {}).get("Devices") or []:
                if "gpu" in str(dev.get("Name", "")):
                    total += int(dev.get("Count") or 0)
    return total


def last_scaling_event(scale: dict[str, Any] | None) -> str:
    """`2 (14:02:11): reason` of the newest scaling event over the job's groups ("-" if none)."""
    events = [e for g in ((scale or {}).get("TaskGroups") or {}).values() for e in (g.get("Events") or [])]
    if not events:
        return "-"
    ev = max(events, key=lambda e: int(e.get("Time") or 0))
    when = time.strftime("%H:%M:%S", time.localtime(int(ev.get("Time") or 0) / 1e9))
    count = ev.get("Count")
    what = ev.get("Message") or ""
    if ev.get("Error"):
        what = f"error: {what}"
    return f"{when} {what}".strip() + (f" (count {count})" if count is not None else "")


def model_ready(addr: str, models: list[str], timeout_s: float) -> int | None:
    """How many of `models` Triton says are ready at addr (None: no answer in time)."""
    n = 0
    try:
        with httpx.Client(timeout=timeout_s) as http:
            for m in models:
                n += http.get(f"http://{addr}/v2/models/{m}/ready").status_code == 200
    except httpx.HTTPError:
        return None
    return n


class ClusterView:
    """Cluster state from four blocking list queries; `rows()` builds the table from it."""

    def __init__(
        self, client: NomadClient, only: set[str] | None = None, probe: bool = True, probe_timeout_s: float = 1.0
    ) -> None:
        self.client = client
        self.only = only
        self.probe = probe
        self.probe_timeout_s = probe_timeout_s
        self.lists: dict[str, list[dict[str, Any]]] = {k: [] for k in LISTS}
        self.index: dict[str, int] = dict.fromkeys(LISTS, 0)
        self._full: dict[str, tuple[int, dict[str, Any]]] = {}  # job -> (JobModifyIndex, job)
        self._scale: dict[str, tuple[int, dict[str, Any]]] = {}  # job -> (ModifyIndex, scale status)
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=16)
        self._changed = threading.Event()
        self._error: errors.NomadError | None = None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -------------------------------------------------------------- fetching

    def _fetch(self, key: str, wait_s: float) -> bool:
        path, params = LISTS[key]
        body, index = self.client.blocking_get(path, self.index[key] if wait_s else 0, wait_s, params=params)
        with self._lock:
            changed = index != self.index[key] or not self.index[key]
            self.lists[key], self.index[key] = list(body or []), index
        return changed

    def refresh(self) -> None:
        """Read the four lists now (in parallel), then whatever per-job detail changed."""
        list(self._pool.map(lambda k: self._fetch(k, 0.0), LISTS))
        self._details()
        self._changed.clear()

    def watch(self, wait_s: float = 30.0) -> None:
        """Start one daemon thread per list that keeps a blocking query parked on it.

        Why threads that outlive each redraw: a query parked for `wait_s` must not be abandoned
        and re-issued at every redraw (that would be polling), and daemon threads never hold the
        process up on Ctrl-C.
        """
        for key in LISTS:
            threading.Thread(target=self._watch_loop, args=(key, wait_s), daemon=True).start()

    def _watch_loop(self, key: str, wait_s: float) -> None:
        while True:
            try:
                if self._fetch(key, wait_s):
                    self._changed.set()
            except errors.NomadError as exc:
                self._error = exc
                self._changed.set()
                time.sleep(1.0)

    def wait_change(self, timeout_s: float) -> None:
        """Block until a watched list moves (or timeout_s passes), then refresh per-job details."""
        self._changed.wait(timeout_s)
        self._changed.clear()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        self._details()

    def _details(self) -> None:
        wanted = []
        for stub in self.lists["jobs"]:
            jid = stub.get("ID", "")
            if self.only is not None and jid not in self.only:
                continue
            if stub.get("Type") not in (None, "service"):
                continue
            wanted.append(stub)

        def full(stub: dict[str, Any]) -> None:
            jid, jmi, mi = stub["ID"], int(stub.get("JobModifyIndex") or 0), int(stub.get("ModifyIndex") or 0)
            try:
                if self._full.get(jid, (-1,))[0] != jmi:
                    self._full[jid] = (jmi, self.client.job(jid))
                if job_models(self._full[jid][1]) and self._scale.get(jid, (-1,))[0] != mi:
                    self._scale[jid] = (mi, self.client.scale_status(jid))
            except errors.NotFound:
                self._full.pop(jid, None)

        list(self._pool.map(full, wanted))

    # -------------------------------------------------------------- the table

    def rows(self) -> tuple[list[JobRow], list[PoolRow]]:
        with self._lock:
            jobs, allocs = list(self.lists["jobs"]), list(self.lists["allocs"])
            deps, nodes = list(self.lists["deployments"]), list(self.lists["nodes"])
        latest: dict[str, dict[str, Any]] = {}
        for d in deps:
            if int(d.get("CreateIndex") or 0) >= int(latest.get(d.get("JobID", ""), {}).get("CreateIndex") or -1):
                latest[d.get("JobID", "")] = d
        by_job: dict[str, list[dict[str, Any]]] = {}
        for a in allocs:
            by_job.setdefault(a.get("JobID", ""), []).append(a)
        toolkit = []
        for stub in jobs:
            full = self._full.get(stub.get("ID", ""), (0, {}))[1]
            if full and job_models(full):
                toolkit.append((stub, full))
        ready = self._probe(toolkit, by_job) if self.probe else {}
        rows = []
        for stub, full in toolkit:
            jid = stub["ID"]
            models = job_models(full)
            live = [a for a in by_job.get(jid, []) if a.get("DesiredStatus") == "run" and a.get("ClientStatus") in LIVE]
            healthy = sum(1 for a in live if (a.get("DeploymentStatus") or {}).get("Healthy") is True)
            dep = latest.get(jid)
            counts = [r for r in ready.get(jid, []) if r is not None]
            running = [a for a in live if a.get("ClientStatus") == "running"]
            if not self.probe:
                models_ready = "-"
            elif not running:
                models_ready = f"0/{len(models)}"
            else:
                models_ready = f"{min(counts) if len(counts) == len(running) else 0}/{len(models)}"
                if len(counts) < len(running):
                    models_ready += f" ({len(running) - len(counts)} alloc no answer)"
            rows.append(JobRow(
                job=jid,
                pool=full.get("NodePool") or stub.get("NodePool") or "default",
                version=int(full.get("Version") or 0),
                status=stub.get("Status", ""),
                desired=sum(int(tg.get("Count") or 0) for tg in full.get("TaskGroups") or []),
                running=len(running),
                healthy=healthy,
                deployment=(dep.get("Status", "") if dep else "-"),
                models=len(models),
                models_ready=models_ready,
                gpus=gpus_per_alloc(full) * len(live),
                last_scaling=last_scaling_event(self._scale.get(jid, (0, None))[1]),
            ))
        return rows, self._pools(nodes, allocs)

    def _probe(self, toolkit: list[tuple[dict[str, Any], dict[str, Any]]],
               by_job: dict[str, list[dict[str, Any]]]) -> dict[str, list[int | None]]:
        tasks = []
        for stub, full in toolkit:
            models = job_models(full)
            for a in by_job.get(stub["ID"], []):
                if a.get("ClientStatus") == "running" and a.get("DesiredStatus") == "run":
                    addr = alloc_ports(a).get("http")
                    tasks.append((stub["ID"], addr, models))
        results = list(self._pool.map(
            lambda t: model_ready(t[1], t[2], self.probe_timeout_s) if t[1] else None, tasks))
        out: dict[str, list[int | None]] = {}
        for (jid, _, _), r in zip(tasks, results, strict=True):
            out.setdefault(jid, []).append(r)
        return out

    @staticmethod
    def _pools(nodes: list[dict[str, Any]], allocs: list[dict[str, Any]]) -> list[PoolRow]:
        pool_of = {n.get("ID"): n.get("NodePool") or "default" for n in nodes}
        total: dict[str, int] = {}
        for n in nodes:
            devs = ((n.get("NodeResources") or {}).get("Devices")) or []
            total[pool_of[n.get("ID")]] = total.get(pool_of[n.get("ID")], 0) + sum(
                len(d.get("Instances") or []) for d in devs if d.get("Type") == "gpu")
        used: dict[str, int] = {}
        for a in allocs:
            if a.get("DesiredStatus") != "run" or a.get("ClientStatus") not in LIVE:
                continue
            for res in ((a.get("AllocatedResources") or {}).get("Tasks") or {}).values():
                for d in res.get("Devices") or []:
                    if d.get("Type") == "gpu":
                        pool = pool_of.get(a.get("NodeID"), "default")
                        used[pool] = used.get(pool, 0) + len(d.get("DeviceIDs") or [])
        names = sorted(set(total) | set(used))
        return [PoolRow(p, total.get(p, 0), used.get(p, 0)) for p in names]

    def snapshot(self) -> dict[str, Any]:
        rows, pools = self.rows()
        return {
            "jobs": [asdict(r) for r in rows],
            "pools": [{**asdict(p), "gpus_free": p.gpus_free} for p in pools],
            "indexes": dict(self.index),
        }
