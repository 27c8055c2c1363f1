"""Job bookkeeping shared by register, scale, revert and deregister (no HTTP here).

Why separate from the routes: register, scale and revert must all version a job, stamp it and
create its evaluation in one raft-like index exactly the same way, as Nomad's Job.Register does;
one function keeps them from drifting apart.
"""

from __future__ import annotations

import copy
from typing import Any

from ..errors import ApiError
from ..scheduler import same_registration
from ..store import Store
from .common import Ctx, now_ns

# Fields the server manages; changing them is not a spec change (Nomad's Job.SpecChanged).
SERVER_FIELDS = (
    "Status",
    "StatusDescription",
    "Stable",
    "Version",
    "SubmitTime",
    "CreateIndex",
    "ModifyIndex",
    "JobModifyIndex",
)

STUB_ALLOC_KEYS = (
    "ID", "EvalID", "Name", "Namespace", "NodeID", "NodeName", "JobID", "JobType", "JobVersion",
    "TaskGroup", "AllocatedResources", "DesiredStatus", "DesiredDescription", "ClientStatus",
    "ClientDescription", "DesiredTransition", "TaskStates", "DeploymentStatus", "FollowupEvalID",
    "NextAllocation", "PreviousAllocation", "RescheduleTracker", "NetworkStatus", "PreemptedAllocations",
    "PreemptedByAllocation", "CreateIndex", "ModifyIndex", "CreateTime", "ModifyTime",
)


def multi_error(errors: list[str]) -> str:
    """hashicorp/go-multierror's text, which Nomad uses for validation failures."""
    n = len(errors)
    head = "1 error occurred:" if n == 1 else f"{n} errors occurred:"
    return head + "\n" + "".join(f"\t* {e}\n" for e in errors) + "\n"


def spec_of(job: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in job.items() if k not in SERVER_FIELDS}


def get_job(store: Store, ns: str, job_id: str) -> dict[str, Any]:
    job = store.get("jobs", (ns, job_id))
    if job is None:
        raise ApiError(404, "job not found")
    return job


def alloc_stub(alloc: dict[str, Any], *, resources: bool = False, task_states: bool = True) -> dict[str, Any]:
    """Nomad's Allocation.Stub(fields): AllocatedResources only when asked for (`?resources=true`
    on /v1/allocations; never on job/deployment allocation lists), TaskStates unless
    `?task_states=false`. A client reading ports from a stub works nowhere but here otherwise."""
    stub = {k: alloc.get(k) for k in STUB_ALLOC_KEYS if k in alloc}
    if not resources:
        stub.pop("AllocatedResources", None)
    if not task_states:
        stub["TaskStates"] = None
    job = alloc.get("Job") or {}
    stub.setdefault("JobType", job.get("Type"))
    stub.setdefault("JobVersion", job.get("Version"))
    return stub


def job_allocs(store: Store, ns: str, job_id: str, *, any_create_index: bool = False) -> list[dict[str, Any]]:
    """Allocations of the job's current registration, as Nomad's AllocsByJob: after a purge and
    re-register under the same ID, allocs whose Job.CreateIndex differs belong to the old instance
    and only show with `?all=true` (`any_create_index`)."""
    job = store.get("jobs", (ns, job_id))
    return [
        a for a in store.list("allocs") if a.get("JobID") == job_id and a.get("Namespace", "default") == ns
        and (any_create_index or job is None or same_registration((a.get("Job") or {}).get("CreateIndex"), job))
    ]


def job_deployments(store: Store, ns: str, job_id: str, *, any_create_index: bool = False) -> list[dict[str, Any]]:
    """Deployments of the job's current registration (Nomad's DeploymentsByJobID filters on
    JobCreateIndex unless `all`), so a re-registered job does not inherit a purged one's."""
    job = store.get("jobs", (ns, job_id))
    return [
        d for d in store.list("deployments") if d.get("JobID") == job_id and d.get("Namespace", "default") == ns
        and (any_create_index or job is None or same_registration(d.get("JobCreateIndex"), job))
    ]


def job_summary(store: Store, job: dict[str, Any]) -> dict[str, Any]:
    """JobSummary computed from allocations (Nomad keeps it incrementally; the result is the same)."""
    groups = {tg["Name"]: dict.fromkeys(
        ("Queued", "Complete", "Failed", "Running", "Starting", "Lost", "Unknown"), 0)
        for tg in job.get("TaskGroups") or []}
    status_key = {"pending": "Starting", "running": "Running", "complete": "Complete",
                  "failed": "Failed", "lost": "Lost", "unknown": "Unknown"}
    for alloc in job_allocs(store, job.get("Namespace", "default"), job["ID"]):
        tg = groups.setdefault(alloc.get("TaskGroup", ""), dict.fromkeys(
            ("Queued", "Complete", "Failed", "Running", "Starting", "Lost", "Unknown"), 0))
        key = status_key.get(alloc.get("ClientStatus", ""), None)
        if key:
            tg[key] += 1
    # Queued = placements the latest evaluation could not make (its QueuedAllocations).
    evals = [e for e in store.list("evals") if e.get("JobID") == job["ID"]
             and e.get("Namespace", "default") == job.get("Namespace", "default")]
    if evals:
        latest = max(evals, key=lambda e: e.get("CreateIndex", 0))
        for name, queued in (latest.get("QueuedAllocations") or {}).items():
            if name in groups:
                groups[name]["Queued"] = queued
    return {
        "JobID": job["ID"],
        "Namespace": job.get("Namespace", "default"),
        "Summary": groups,
        "Children": {"Pending": 0, "Running": 0, "Dead": 0},
        "CreateIndex": job.get("CreateIndex", 0),
        "ModifyIndex": job.get("ModifyIndex", 0),
    }


def job_stub(store: Store, job: dict[str, Any]) -> dict[str, Any]:
    return {
        "ID": job["ID"],
        "ParentID": job.get("ParentID", ""),
        "Name": job.get("Name", job["ID"]),
        "Namespace": job.get("Namespace", "default"),
        "Datacenters": job.get("Datacenters"),
        "NodePool": job.get("NodePool", "default"),
        "Multiregion": job.get("Multiregion"),
        "Type": job.get("Type", "service"),
        "Priority": job.get("Priority", 50),
        "Periodic": bool(job.get("Periodic")),
        "ParameterizedJob": bool(job.get("ParameterizedJob")),
        "Stop": bool(job.get("Stop")),
        "Status": job.get("Status", "pending"),
        "StatusDescription": job.get("StatusDescription", ""),
        "JobSummary": job_summary(store, job),
        "CreateIndex": job.get("CreateIndex", 0),
        "ModifyIndex": job.get("ModifyIndex", 0),
        "JobModifyIndex": job.get("JobModifyIndex", 0),
        "SubmitTime": job.get("SubmitTime", 0),
        "Meta": job.get("Meta"),
    }


def active_deployment(store: Store, ns: str, job_id: str) -> dict[str, Any] | None:
    for dep in job_deployments(store, ns, job_id):
        if dep.get("Status") in ("running", "pending", "paused", "initializing", "blocked"):
            return dep
    return None


def latest_deployment(store: Store, ns: str, job_id: str, *, any_create_index: bool = False) -> dict[str, Any] | None:
    deps = job_deployments(store, ns, job_id, any_create_index=any_create_index)
    return max(deps, key=lambda d: d.get("CreateIndex", 0)) if deps else None


def upsert_job_version(
    ctx: Ctx, job: dict[str, Any], triggered_by: str, *, create_eval: bool = True
) -> tuple[dict[str, Any], dict[str, Any] | None, int]:
    """Store a submitted job (bumping Version when the spec changed) and its evaluation.

    Returns (stored job, eval or None, raft index). Job, job version and eval share one index,
    so EvalCreateIndex == JobModifyIndex as in a Nomad register.
    """
    store = ctx.store
    ns = job.get("Namespace") or "default"
    job["Namespace"] = ns
    existing = store.get("jobs", (ns, job["ID"]))
    idx = store.next_index()
    new = copy.deepcopy(job)
    if existing is None:
        new["Version"] = 0
        new["JobModifyIndex"] = idx
        new["CreateIndex"] = idx
        new["Status"] = "pending"
        new["StatusDescription"] = ""
    else:
        new["CreateIndex"] = existing.get("CreateIndex", idx)
        if spec_of(existing) != spec_of(new):
            new["Version"] = existing.get("Version", 0) + 1
            new["JobModifyIndex"] = idx
        else:
            new["Version"] = existing.get("Version", 0)
            new["JobModifyIndex"] = existing.get("JobModifyIndex", idx)
        status = existing.get("Status", "pending")
        new["Status"] = "pending" if status == "dead" and not new.get("Stop") else status
        new["StatusDescription"] = existing.get("StatusDescription", "")
    new["Stable"] = False if existing is None or new["Version"] != existing.get("Version") else \
        existing.get("Stable", False)
    new["SubmitTime"] = now_ns()
    new.setdefault("Stop", False)
    store.upsert("jobs", (ns, new["ID"]), new, event_type="JobRegistered", namespace=ns,
                 payload_name="Job", index=idx, event_key=new["ID"])
    store.upsert("job_versions", (ns, new["ID"], new["Version"]), copy.deepcopy(new), index=idx)
    ev = ctx.create_eval(new, triggered_by, index=idx) if create_eval and not _no_eval(new) else None
    return new, ev, idx


def _no_eval(job: dict[str, Any]) -> bool:
    """Periodic and parameterized parents get no evaluation on register (Nomad)."""
    return bool(job.get("Periodic")) or bool(job.get("ParameterizedJob"))


def register_reply(job: dict[str, Any], ev: dict[str, Any] | None, idx: int, warnings: str = "") -> dict:
    return {
        "EvalID": ev["ID"] if ev else "",
        "EvalCreateIndex": idx if ev else 0,
        "JobModifyIndex": job.get("JobModifyIndex", idx),
        "Warnings": warnings,
        "Index": idx,
        "LastContact": 0,
        "KnownLeader": True,
    }


def enforce_index(existing: dict[str, Any] | None, want: int) -> None:
    """Nomad's check-and-set on JobModifyIndex; errors are 500s whose text clients match on."""
    if existing is None:
        if want != 0:
            raise ApiError(500, f"Enforcing job modify index {want}: job does not exist")
        return
    if want == 0:
        raise ApiError(500, f"Enforcing job modify index {want}: job already exists")
    current = existing.get("JobModifyIndex", 0)
    if want != current:
        raise ApiError(
            500, f"Enforcing job modify index {want}: job exists with conflicting job modify index: {current}"
        )
