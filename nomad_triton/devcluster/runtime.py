"""devcluster's servers and clients: eval broker, plan apply, alloc runners, deployment watcher.

Why one object: Nomad splits these across server and client agents, but devcluster runs all of
them on one asyncio loop over one store. The Runtime owns the eval loop (pending evaluations ->
`scheduler.compute_plan` -> store writes), one `AllocRunner` per placed allocation (real
raw_exec processes, services, checks, health), and the `DeploymentWatcher`.

Contract with the HTTP layer (engineer B's handlers):
- handlers write jobs, job_versions and *pending* evaluations; the runtime notices them through
  `store.subscribe` (or `notify_eval`) and processes them in CreateIndex order;
- server RPCs are methods: `plan(job)`, `promote_deployment(id, groups)`, `fail_deployment(id)`,
  `stop_alloc(id)` (each returns the evaluation dict it created, plan returns Nomad's plan
  fields), `alloc_log_path(id, task, stream)` and `alloc_checks(id)`;
- config: any object with `state_dir: Path` and either `region`/`datacenter` attributes or a
  `server` with them (DevclusterConfig). Optional `runtime` dict: `port_seed` (int).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import socket
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from nomad_triton.devcluster import scheduler as sched
from nomad_triton.devcluster import task_handles as th
from nomad_triton.devcluster.alloc_runner import AllocRunner, rfc3339
from nomad_triton.devcluster.deployments import (
    ACTIVE,
    DESC_NEWER_JOB,
    DESC_STOPPED_JOB,
    DeploymentWatcher,
    new_deployment,
)
from nomad_triton.devcluster.driver_raw_exec import killpg_quiet, wait_event
from nomad_triton.devcluster.errors import ApiError
from nomad_triton.devcluster.feasibility import alloc_is_terminal
from nomad_triton.devcluster.reconcile import ALLOC_RESCHEDULED
from nomad_triton.devcluster.store import Store

log = logging.getLogger(__name__)
NS = 1_000_000_000
SERVER_FIELDS = ("Status", "StatusDescription", "Stable", "Version", "SubmitTime", "CreateIndex",
                 "ModifyIndex", "JobModifyIndex")


def client_status(states: dict[str, Any]) -> tuple[str, str]:
    """Nomad client's getClientStatus: failed > running > pending > complete."""
    kinds = [(s.get("State"), bool(s.get("Failed"))) for s in states.values()]
    if any(st == "dead" and f for st, f in kinds):
        return "failed", "Failed tasks"
    if any(st == "running" for st, _ in kinds):
        return "running", "Tasks are running"
    if any(st == "pending" for st, _ in kinds):
        return "pending", "No tasks have started"
    return "complete", "All tasks have completed"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _parse_time(value: Any) -> float | None:
    if not value or not isinstance(value, str) or value.startswith("0001"):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


class Runtime:
    """Everything in devcluster that acts rather than answers."""

    def __init__(self, store: Store, config: Any) -> None:
        self.store = store
        self.config = config
        server = getattr(config, "server", None)
        self.region: str = getattr(config, "region", None) or getattr(server, "region", "global")
        self.datacenter: str = getattr(config, "datacenter", None) or getattr(server, "datacenter", "dc1")
        state_dir = getattr(config, "state_dir", None)
        if state_dir is None:
            raise ValueError("devcluster runtime needs config.state_dir")
        self.state_dir = Path(state_dir)
        opts = getattr(config, "runtime", None) or {}
        self._rng = random.Random(opts.get("port_seed"))
        self.runners: dict[str, AllocRunner] = {}
        self.watcher = DeploymentWatcher(self)
        self.http: httpx.AsyncClient | None = None
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._unsub: Any = None
        self._seen_nodes_index = 0
        self._seen_evals_index = 0
        self._capacity_freed = False
        self._processing = False
        self.closing = False  # shutdown() began: task kills are not cluster decisions

    # ---- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "allocs").mkdir(exist_ok=True)
        self.http = httpx.AsyncClient(verify=True, follow_redirects=False)
        self._wake = asyncio.Event()
        self._seen_nodes_index = self.store.table_index.get("nodes", 0)
        self._unsub = self.store.subscribe(self._on_change)
        self._restore()
        self._tasks = [asyncio.ensure_future(self._broker_loop()),
                       asyncio.ensure_future(self._deadline_loop())]
        self._wake.set()

    def _restore(self) -> None:
        """Take over from an earlier devcluster process of this state dir (see "Crash recovery"
        in docs/devcluster-runtime.md): re-attach to the tasks of every allocation that is not
        client-terminal, stop every executor nobody will re-attach to, and drop services of
        allocations that no longer run. A fresh state dir has nothing to do here."""
        live = {a["ID"]: a for a in self.store.list("allocs") if a.get("ClientStatus") in ("pending", "running")}
        for pid, (started, exit_file) in th.executors_of(self.state_dir).items():
            path = Path(exit_file)
            alloc_id, task = path.parent.parent.name, path.name.removesuffix(".exit.json")
            handle = th.load_handle(path.with_name(f"{task}.json"))
            alloc = live.get(alloc_id)
            state = ((alloc or {}).get("TaskStates") or {}).get(task) or {}
            wanted = alloc is not None and state.get("State") != "dead" and handle is not None \
                and (handle.executor_pid, handle.executor_start) == (pid, started)
            if not wanted:
                log.warning("devcluster: stopping task %s of alloc %s (pid %d): nothing to re-attach it to",
                            task, alloc_id, pid)
                th.kill_group(pid, started)
        for svc in list(self.store.list("services")):
            if svc.get("AllocID") not in live or live[svc["AllocID"]].get("DesiredStatus") != "run":
                self.deregister_services(svc["AllocID"])
        for aid, alloc in live.items():
            runner = AllocRunner(self, aid, restore=True)
            self.runners[aid] = runner
            runner.start()
            if alloc.get("DesiredStatus") != "run":
                runner.stop()
        if live:
            log.warning("devcluster: resumed %d allocation(s) of the previous run", len(live))
        self._capacity_freed = True

    async def shutdown(self) -> None:
        """Stop every task (kill signal, then SIGKILL) and wait: nothing is left running.

        The state file is detached first: stopping tasks because devcluster goes down is not a
        cluster decision, so the next start finds the allocations as they were and restarts
        them by the crash-recovery rules (as a Nomad client does after a reboot)."""
        self.closing = True
        self.store.detach()
        if self._unsub:
            self._unsub()
            self._unsub = None
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        self._tasks = []
        runners = list(self.runners.values())
        for r in runners:
            r.stop()
        mains = [r.main for r in runners if r.main is not None]
        if mains:
            await asyncio.wait(mains, timeout=30)
        for r in runners:
            r.close()
        for r in runners:  # belt and braces: no process group survives shutdown
            for t in r.tasks:
                if t.proc is not None and t.proc.pgid:
                    killpg_quiet(t.proc.pgid, 9)
        if self.http is not None:
            await self.http.aclose()
            self.http = None

    def _on_change(self) -> None:
        """Store write hook: wake the broker only for new evaluations or changed node capacity
        (alloc writes are frequent; the runtime wakes itself when one frees capacity)."""
        nodes_idx = self.store.table_index.get("nodes", 0)
        evals_idx = self.store.table_index.get("evals", 0)
        if nodes_idx != self._seen_nodes_index:
            self._seen_nodes_index = nodes_idx
            self._capacity_freed = True
        elif evals_idx == self._seen_evals_index:
            return
        self._seen_evals_index = evals_idx
        if self._wake is not None and not self._processing:
            self._wake.set()

    def notify_eval(self, ev: dict[str, Any]) -> None:
        """Called by the API after writing a pending evaluation (a hint; subscribe also wakes us)."""
        if self._wake is not None:
            self._wake.set()

    # ---- eval broker ---------------------------------------------------------------------------
    async def _broker_loop(self) -> None:
        assert self._wake is not None
        while True:
            await wait_event(self._wake, self._next_wait_until())
            self._wake.clear()
            try:
                self.run_pending()
            except Exception:  # noqa: BLE001 - one bad eval must not kill the cluster
                import logging

                logging.getLogger(__name__).exception("devcluster: evaluation failed")

    def _next_wait_until(self) -> float:
        now, best = time.time(), 1.0
        for ev in self.store.list("evals"):
            if ev.get("Status") == "pending":
                when = _parse_time(ev.get("WaitUntil"))
                if when is not None:
                    best = min(best, max(0.01, when - now))
        return best

    def run_pending(self) -> int:
        """Process every due pending evaluation (and blocked ones after capacity freed)."""
        done = 0
        self._processing = True
        try:
            for _ in range(100):
                now = time.time()
                due = [e for e in self.store.list("evals") if e.get("Status") == "pending"
                       and (_parse_time(e.get("WaitUntil")) or 0) <= now]
                if self._capacity_freed:
                    self._capacity_freed = False
                    due += [e for e in self.store.list("evals") if e.get("Status") == "blocked"]
                if not due:
                    break
                for ev in sorted(due, key=lambda e: e.get("CreateIndex", 0)):
                    current = self.store.get("evals", ev["ID"])
                    if current is not None and current.get("Status") in ("pending", "blocked"):
                        with self.store.batch():  # a plan applies atomically, as one raft entry
                            self.process_eval(copy.deepcopy(current))
                        done += 1
        finally:
            self._processing = False
        return done

    def _nodes(self) -> list[dict[str, Any]]:
        return self.store.list("nodes")

    def process_eval(self, ev: dict[str, Any]) -> None:
        """Run the scheduler for one evaluation and apply its plan (Nomad's worker + plan applier)."""
        ns, job_id = ev.get("Namespace", "default"), ev["JobID"]
        job = self.store.get("jobs", (ns, job_id))
        was_blocked = ev.get("Status") == "blocked"
        if not was_blocked:
            for other in self.store.list("evals"):
                if other.get("JobID") == job_id and other.get("Namespace", "default") == ns \
                        and other.get("Status") == "blocked" and other["ID"] != ev["ID"]:
                    other = copy.deepcopy(other)
                    other["Status"], other["StatusDescription"] = "canceled", "superseded by a newer evaluation"
                    self._write_eval(other)
        dep = self.watcher.latest_for_job(ns, job_id)
        if dep is not None and dep.get("Status") in ACTIVE:
            if job is None or job.get("Stop"):
                self.watcher.cancel(dep, DESC_STOPPED_JOB)
                dep = self.store.get("deployments", dep["ID"])
            elif dep.get("JobVersion") != job.get("Version") \
                    or not sched.same_registration(dep.get("JobCreateIndex"), job):
                self.watcher.cancel(dep, DESC_NEWER_JOB)
                dep = self.store.get("deployments", dep["ID"])
        plan = sched.compute_plan(job, self._nodes(), self.store.list("allocs"), dep, job_id=job_id,
                                  namespace=ns, rng=self._rng, port_ok=_port_free)
        if job is not None and plan.create_deployment:
            dep = new_deployment(job, plan.desired_canaries, time.time())
            self.watcher.write(dep)
        cur_dep = dep if dep is not None and job is not None and dep.get("JobVersion") == job.get("Version") \
            and sched.same_registration(dep.get("JobCreateIndex"), job) and dep.get("Status") in ACTIVE else None
        self._apply(ev, job, plan, cur_dep)
        # the evaluation's outcome
        ev = copy.deepcopy(self.store.get("evals", ev["ID"]) or ev)
        ev["FailedTGAllocs"] = plan.failed_tg_allocs or None
        ev["QueuedAllocations"] = plan.queued
        ev["DeploymentID"] = ev.get("DeploymentID") or (cur_dep or {}).get("ID", "")
        ev["ModifyTime"] = time.time_ns()
        if plan.failed_tg_allocs and job is not None and not job.get("Stop"):
            if was_blocked:
                ev["Status"] = "blocked"
            else:
                blocked = self._new_eval(job, "queued-allocs", status="blocked", previous=ev["ID"])
                blocked["FailedTGAllocs"] = plan.failed_tg_allocs
                blocked["StatusDescription"] = "created to place remaining allocations"
                self._write_eval(blocked)
                ev["BlockedEval"] = blocked["ID"]
                ev["Status"] = "complete"
        else:
            ev["Status"] = "complete"
        self._write_eval(ev)
        if cur_dep is not None:
            fresh = self.store.get("deployments", cur_dep["ID"])
            if fresh is not None and not self.watcher.try_complete(fresh):
                self.watcher.write(self.watcher.recount(fresh))
        self.update_job_status(ns, job_id)

    def _apply(self, ev: dict[str, Any], job: dict[str, Any] | None, plan: sched.SchedulePlan,
               dep: dict[str, Any] | None) -> None:
        now_ns = time.time_ns()
        new_ids: dict[str, str] = {}
        for p in plan.placed:
            new_ids[p.request.previous_alloc or f"new:{id(p)}"] = str(uuid.uuid4())
        for stop in plan.stops:
            alloc = self.store.get("allocs", stop.alloc_id)
            if alloc is None:
                continue

            def mark(a: dict[str, Any], stop: sched.Stop = stop) -> None:
                a["DesiredStatus"] = "stop"
                a["DesiredDescription"] = stop.description
                if stop.description == ALLOC_RESCHEDULED and stop.alloc_id in new_ids:
                    a["NextAllocation"] = new_ids[stop.alloc_id]
                elif stop.alloc_id in new_ids:
                    a["NextAllocation"] = new_ids[stop.alloc_id]

            self.patch_alloc(stop.alloc_id, mark, event_type="AllocationUpdateDesiredStatus")
            runner = self.runners.get(stop.alloc_id)
            if runner is not None:
                runner.stop()
        assert job is not None or not plan.placed
        for aid in plan.inplace:

            def inplace(a: dict[str, Any]) -> None:
                a["Job"] = copy.deepcopy(job)
                if dep is not None and a.get("DeploymentID") != dep["ID"]:
                    a["DeploymentID"] = dep["ID"]
                    a["DeploymentStatus"] = None

            self.patch_alloc(aid, inplace)
            runner = self.runners.get(aid)
            if runner is not None:
                runner.restart_health()
        for p in plan.placed:
            assert job is not None
            aid = new_ids[p.request.previous_alloc or f"new:{id(p)}"]
            alloc = self._new_alloc(aid, ev, job, p, dep, now_ns)
            self.store.upsert("allocs", aid, alloc, event_type="AllocationUpdated", namespace=alloc["Namespace"],
                              payload_name="Allocation", filter_keys=(alloc["JobID"], alloc["DeploymentID"]))
            runner = AllocRunner(self, aid)
            self.runners[aid] = runner
            runner.start()
        for aid, when in plan.reschedule_later:
            alloc = self.store.get("allocs", aid)
            if alloc is None or alloc.get("FollowupEvalID") or job is None:
                continue
            follow = self._new_eval(job, "alloc-failure", status="pending", previous=ev["ID"])
            follow["WaitUntil"] = rfc3339(when)
            follow["StatusDescription"] = "created for delayed rescheduling"
            self._write_eval(follow)
            self.patch_alloc(aid, lambda a, fid=follow["ID"]: a.__setitem__("FollowupEvalID", fid))

    def _new_alloc(self, aid: str, ev: dict[str, Any], job: dict[str, Any], p: sched.PlacedAlloc,
                   dep: dict[str, Any] | None, now_ns: int) -> dict[str, Any]:
        req = p.request
        tracker = {"Events": req.reschedule_events} if req.reschedule_events else None
        return {
            "ID": aid,
            "Namespace": job.get("Namespace", "default"),
            "EvalID": ev["ID"],
            "Name": req.name,
            "NodeID": p.node["ID"],
            "NodeName": p.node.get("Name", ""),
            "JobID": job["ID"],
            "Job": copy.deepcopy(job),
            "TaskGroup": req.task_group,
            "AllocatedResources": {
                "Tasks": p.offer.tasks,
                "TaskLifecycles": {t: None for t in p.offer.tasks},
                "Shared": {"Ports": p.offer.ports, "Networks": [{
                    "Mode": "host", "Device": "lo", "IP": "127.0.0.1", "MBits": 0,
                    "DynamicPorts": [{"Label": x["Label"], "Value": x["Value"], "To": x["To"],
                                      "HostNetwork": "default"} for x in p.offer.ports],
                    "ReservedPorts": None}] if p.offer.ports else None,
                    "DiskMB": 0},
            },
            "DesiredStatus": "run",
            "DesiredDescription": "",
            "DesiredTransition": {"Migrate": None, "Reschedule": None, "ForceReschedule": None},
            "ClientStatus": "pending",
            "ClientDescription": "No tasks have started",
            "TaskStates": None,
            "DeploymentID": dep["ID"] if dep is not None else "",
            "DeploymentStatus": {"Healthy": None, "Timestamp": "0001-01-01T00:00:00Z", "Canary": True,
                                 "ModifyIndex": 0} if req.canary else None,
            "RescheduleTracker": tracker,
            "PreviousAllocation": req.previous_alloc or "",
            "NextAllocation": "",
            "FollowupEvalID": "",
            "NetworkStatus": None,
            "PreemptedAllocations": None,
            "PreemptedByAllocation": "",
            "CreateIndex": 0,
            "ModifyIndex": 0,
            "AllocModifyIndex": 0,
            "CreateTime": now_ns,
            "ModifyTime": now_ns,
        }

    # ---- evaluations -----------------------------------------------------------------------------
    def _new_eval(self, job: dict[str, Any], triggered_by: str, *, status: str = "pending",
                  previous: str = "", deployment_id: str = "") -> dict[str, Any]:
        ts = time.time_ns()
        return {
            "ID": str(uuid.uuid4()), "Namespace": job.get("Namespace", "default"),
            "Priority": job.get("Priority", 50), "Type": job.get("Type", "service"),
            "TriggeredBy": triggered_by, "JobID": job["ID"], "JobModifyIndex": job.get("JobModifyIndex", 0),
            "DeploymentID": deployment_id, "NodeID": "", "NodeModifyIndex": 0, "Status": status,
            "StatusDescription": "", "Wait": 0, "WaitUntil": "0001-01-01T00:00:00Z", "NextEval": "", "PreviousEval": previous,
            "BlockedEval": "", "FailedTGAllocs": None, "ClassEligibility": None, "QueuedAllocations": None,
            "SnapshotIndex": self.store.index, "CreateIndex": 0, "ModifyIndex": 0, "CreateTime": ts,
            "ModifyTime": ts,
        }

    def _write_eval(self, ev: dict[str, Any]) -> None:
        self.store.upsert("evals", ev["ID"], ev, event_type="EvaluationUpdated", namespace=ev["Namespace"],
                          payload_name="Evaluation",
                          filter_keys=(ev["JobID"],) + ((ev["DeploymentID"],) if ev.get("DeploymentID") else ()))

    def create_eval(self, job: dict[str, Any], triggered_by: str, *, deployment_id: str = "") -> dict[str, Any]:
        """Write a pending evaluation for the broker (used by the deployment watcher and RPCs)."""
        ev = self._new_eval(job, triggered_by, deployment_id=deployment_id)
        self._write_eval(ev)
        return ev

    # ---- allocation writes -----------------------------------------------------------------------
    def patch_alloc(self, alloc_id: str, fn: Any, *, event_type: str = "AllocationUpdated") -> dict[str, Any] | None:
        """Copy, mutate with `fn`, derive ClientStatus from TaskStates, write; react to transitions."""
        old = self.store.get("allocs", alloc_id)
        if old is None:
            return None
        new = copy.deepcopy(old)
        fn(new)
        if new.get("TaskStates"):
            new["ClientStatus"], new["ClientDescription"] = client_status(new["TaskStates"])
        new["ModifyTime"] = time.time_ns()
        self.store.upsert("allocs", alloc_id, new, event_type=event_type, namespace=new.get("Namespace", "default"),
                          payload_name="Allocation", filter_keys=(new.get("JobID", ""), new.get("DeploymentID", "")))
        runner = self.runners.get(alloc_id)
        if runner is not None:
            runner.notify()
        if alloc_is_terminal(new) and not alloc_is_terminal(old):
            self._capacity_freed = True
            if self._wake is not None:
                self._wake.set()
        if new.get("ClientStatus") != old.get("ClientStatus"):
            if new.get("ClientStatus") == "failed" and new.get("DesiredStatus") == "run":
                job = self.store.get("jobs", (new.get("Namespace", "default"), new["JobID"]))
                if job is not None:
                    self.create_eval(job, "alloc-failure")
            self.update_job_status(new.get("Namespace", "default"), new["JobID"])
        return new

    def set_alloc_health(self, alloc_id: str, dep_id: str, healthy: bool) -> None:
        """Record the client's health verdict (DeploymentStatus) and tell the deployment watcher."""

        def fn(a: dict[str, Any]) -> None:
            ds = dict(a.get("DeploymentStatus") or {})
            ds.update({"Healthy": healthy, "Timestamp": rfc3339(), "Canary": bool(ds.get("Canary")),
                       "ModifyIndex": self.store.index + 1})
            a["DeploymentStatus"] = ds

        with self.store.batch():
            self.patch_alloc(alloc_id, fn)
            self.watcher.on_alloc_health(dep_id, alloc_id, healthy)

    def on_runner_done(self, alloc_id: str) -> None:
        self.runners.pop(alloc_id, None)
        self._capacity_freed = True
        if self._wake is not None:
            self._wake.set()

    # ---- services --------------------------------------------------------------------------------
    def register_services(self, alloc_id: str, regs: list[tuple[dict[str, Any], str, int]]) -> None:
        alloc = self.store.get("allocs", alloc_id)
        if alloc is None or alloc_is_terminal(alloc):
            return
        node = self.store.get("nodes", alloc["NodeID"]) or {}
        for svc, task, port in regs:
            kind = f"task-{task}" if task else "group-" + alloc["TaskGroup"]
            sid = f"_nomad-task-{alloc_id}-{kind}-{svc.get('Name')}-{svc.get('PortLabel') or ''}"
            obj = {
                "ID": sid, "ServiceName": svc.get("Name", ""), "Namespace": alloc.get("Namespace", "default"),
                "NodeID": alloc["NodeID"], "Datacenter": node.get("Datacenter", self.datacenter),
                "JobID": alloc["JobID"], "AllocID": alloc_id, "Tags": list(svc.get("Tags") or []),
                "Address": "127.0.0.1", "Port": port, "CreateIndex": 0, "ModifyIndex": 0,
            }
            self.store.upsert("services", sid, obj, event_type="ServiceRegistration",
                              namespace=obj["Namespace"], payload_name="Service", event_key=obj["ServiceName"])

    def deregister_services(self, alloc_id: str) -> None:
        for svc in list(self.store.list("services")):
            if svc.get("AllocID") == alloc_id:
                self.store.delete("services", svc["ID"], event_type="ServiceDeregistration",
                                  namespace=svc.get("Namespace", "default"), payload_name="Service",
                                  event_key=svc.get("ServiceName"))

    # ---- jobs ------------------------------------------------------------------------------------
    def update_job_status(self, ns: str, job_id: str) -> None:
        """Nomad's job status: running with a non-terminal alloc, pending with open evals, else dead."""
        job = self.store.get("jobs", (ns, job_id))
        if job is None:
            return
        allocs = [a for a in self.store.list("allocs") if a.get("JobID") == job_id
                  and a.get("Namespace", "default") == ns]
        if any(not alloc_is_terminal(a) for a in allocs):
            status = "running"
        elif any(e.get("JobID") == job_id and e.get("Namespace", "default") == ns
                 and e.get("Status") in ("pending", "blocked") for e in self.store.list("evals")):
            status = "pending"
        else:
            status = "dead"
        if job.get("Status") != status:
            job = copy.deepcopy(job)
            job["Status"] = status
            self.store.upsert("jobs", (ns, job_id), job, event_type="JobRegistered", namespace=ns,
                              payload_name="Job", event_key=job_id)

    def mark_job_stable(self, ns: str, job_id: str, version: int) -> None:
        for key in (("jobs", (ns, job_id)), ("job_versions", (ns, job_id, version))):
            obj = self.store.get(*key)
            if obj is None or obj.get("Version") != version or obj.get("Stable"):
                continue
            obj = copy.deepcopy(obj)
            obj["Stable"] = True
            if key[0] == "jobs":
                self.store.upsert("jobs", key[1], obj, event_type="JobRegistered", namespace=ns,
                                  payload_name="Job", event_key=job_id)
            else:
                self.store.upsert("job_versions", key[1], obj)

    def stable_revert_target(self, ns: str, job_id: str, failed_version: int) -> tuple[dict[str, Any] | None, int | None]:
        """Latest stable version older than `failed_version`: (job, None), (None, v) if same spec, (None, None)."""
        current = self.store.get("jobs", (ns, job_id))
        versions = sorted((v for k, v in self.store.tables["job_versions"].items()
                           if k[:2] == (ns, job_id) and v.get("Stable") and v.get("Version", 0) < failed_version),
                          key=lambda v: -v.get("Version", 0))
        if not versions or current is None:
            return None, None
        target = versions[0]
        spec = {k: v for k, v in target.items() if k not in SERVER_FIELDS}
        if spec == {k: v for k, v in current.items() if k not in SERVER_FIELDS}:
            return None, target.get("Version")
        return target, None

    def revert_job(self, target: dict[str, Any]) -> dict[str, Any]:
        """Re-register an older version as a new version (Nomad's Job.Revert) with its evaluation."""
        ns, job_id = target.get("Namespace", "default"), target["ID"]
        current = self.store.get("jobs", (ns, job_id)) or target
        idx = self.store.next_index()
        new = copy.deepcopy(target)
        new["Version"] = int(current.get("Version", 0)) + 1
        new["JobModifyIndex"] = idx
        new["CreateIndex"] = current.get("CreateIndex", idx)
        new["Stable"] = False
        new["SubmitTime"] = time.time_ns()
        new["Status"] = current.get("Status", "running")
        new["Stop"] = False
        self.store.upsert("jobs", (ns, job_id), new, event_type="JobRegistered", namespace=ns,
                          payload_name="Job", index=idx, event_key=job_id)
        self.store.upsert("job_versions", (ns, job_id, new["Version"]), copy.deepcopy(new), index=idx)
        return self.create_eval(new, "job-register")

    # ---- RPCs for the HTTP layer -------------------------------------------------------------------
    def plan(self, job: dict[str, Any]) -> dict[str, Any]:
        """Dry-run the scheduler for a submitted job: Annotations.DesiredTGUpdates, FailedTGAllocs."""
        ns = job.get("Namespace", "default")
        existing = self.store.get("jobs", (ns, job["ID"]))
        job = copy.deepcopy(job)
        if existing is None:
            job["Version"] = 0
        else:
            job["CreateIndex"] = existing.get("CreateIndex", 0)
            job.setdefault("Stop", False)  # the register handler defaults it; not a change
            same = {k: v for k, v in existing.items() if k not in SERVER_FIELDS} == \
                {k: v for k, v in job.items() if k not in SERVER_FIELDS}
            job["Version"] = existing.get("Version", 0) + (0 if same else 1)
        dep = self.watcher.latest_for_job(ns, job["ID"])
        plan = sched.compute_plan(job, self._nodes(), self.store.list("allocs"), dep,
                                  rng=random.Random(0), port_ok=lambda p: True)
        return {
            "Annotations": {"DesiredTGUpdates": plan.desired_tg_updates, "PreemptedAllocs": None},
            "FailedTGAllocs": plan.failed_tg_allocs or None,
            "CreatedEvals": None,
            "NextPeriodicLaunch": "0001-01-01T00:00:00Z",
        }

    def promote_deployment(self, dep_id: str, groups: list[str] | None = None) -> dict[str, Any]:
        return self.watcher.promote(dep_id, groups)

    def fail_deployment(self, dep_id: str) -> dict[str, Any]:
        return self.watcher.fail_by_user(dep_id)

    def stop_alloc(self, alloc_id: str) -> dict[str, Any]:
        """`nomad alloc stop`: migrate the alloc (stop it, place a replacement) via an evaluation."""
        alloc = self.store.get("allocs", alloc_id)
        if alloc is None:
            raise ApiError(404, "alloc not found")
        self.patch_alloc(alloc_id, lambda a: a.__setitem__(
            "DesiredTransition", {**(a.get("DesiredTransition") or {}), "Migrate": True}))
        job = self.store.get("jobs", (alloc.get("Namespace", "default"), alloc["JobID"])) or alloc.get("Job") or {
            "ID": alloc["JobID"], "Namespace": alloc.get("Namespace", "default")}
        return self.create_eval(job, "alloc-stop")

    def alloc_log_path(self, alloc_id: str, task: str, stream: str) -> Path:
        alloc = self.store.get("allocs", alloc_id)
        if alloc is None:
            raise ApiError(404, f'Unknown allocation "{alloc_id}"')
        tasks = {t["Name"] for tg in (alloc.get("Job") or {}).get("TaskGroups") or []
                 if tg["Name"] == alloc.get("TaskGroup") for t in tg.get("Tasks") or []}
        if task not in tasks:
            raise ApiError(400, f'unknown task name "{task}"')
        if stream not in ("stdout", "stderr"):
            raise ApiError(400, f'unknown log type "{stream}"')
        return self.state_dir / "allocs" / alloc_id / "alloc" / "logs" / f"{task}.{stream}.0"

    def alloc_checks(self, alloc_id: str) -> dict[str, Any]:
        """`/v1/client/allocation/:id/checks` body: latest result per check of a running alloc."""
        runner = self.runners.get(alloc_id)
        return runner.check_results() if runner is not None else {}

    # ---- clocks ----------------------------------------------------------------------------------
    async def _deadline_loop(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            try:
                with self.store.batch():
                    self.watcher.check_deadlines()
            except Exception:  # noqa: BLE001
                import logging

                logging.getLogger(__name__).exception("devcluster: deadline check failed")
