"""GET/POST /v1/job/:id/scale: Nomad's scaling API and scaling events (policies: scaling_policies.py).

Why it matters: the autoscaler (ours or the Nomad Autoscaler) drives clusters only through this
API, so its refusals must match Nomad's: no scaling during an active deployment, counts outside
the group's `scaling` min/max rejected, Count=null recording an event without changing the job.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import ApiError
from .common import Ctx, blocking_reply, now_ns, read_json, reply
from .jobs_logic import active_deployment, get_job, job_allocs, register_reply, upsert_job_version

MAX_EVENTS_PER_GROUP = 20  # Nomad's JobTrackedScalingEvents


def _ctx(request: Request) -> Ctx:
    return request.app.state.ctx


def scale_status(ctx: Ctx, job: dict[str, Any]) -> dict[str, Any]:
    ns = job.get("Namespace", "default")
    events = ctx.store.get("scaling_events", (ns, job["ID"])) or {}
    allocs = [a for a in job_allocs(ctx.store, ns, job["ID"]) if a.get("DesiredStatus") == "run"
              and a.get("ClientStatus") in ("pending", "running")]
    groups: dict[str, Any] = {}
    for tg in job.get("TaskGroups") or []:
        mine = [a for a in allocs if a.get("TaskGroup") == tg["Name"]]
        health = [(a.get("DeploymentStatus") or {}).get("Healthy") for a in mine]
        groups[tg["Name"]] = {
            "Desired": tg.get("Count", 1),
            "Placed": len(mine),
            "Running": sum(1 for a in mine if a.get("ClientStatus") == "running"),
            "Healthy": sum(1 for h in health if h is True),
            "Unhealthy": sum(1 for h in health if h is False),
            "Events": events.get(tg["Name"], []),
        }
    return {
        "JobID": job["ID"],
        "Namespace": ns,
        "JobCreateIndex": job.get("CreateIndex", 0),
        "JobModifyIndex": job.get("JobModifyIndex", 0),
        "JobStopped": bool(job.get("Stop")),
        "TaskGroups": groups,
    }


def _check_bounds(tg: dict[str, Any], count: int) -> None:
    scaling = tg.get("Scaling") or {}
    if count < 0:
        raise ApiError(400, "scaling action count can't be negative")
    lo, hi = scaling.get("Min"), scaling.get("Max")
    if hi is not None and count > hi:
        raise ApiError(400, f"group count was greater than scaling policy maximum: {count} > {hi}")
    if lo is not None and count < lo:
        raise ApiError(400, f"group count was less than scaling policy minimum: {count} < {lo}")


def _record_event(ctx: Ctx, ns: str, job_id: str, group: str, event: dict[str, Any], index: int) -> None:
    events = copy.deepcopy(ctx.store.get("scaling_events", (ns, job_id)) or {})
    events[group] = ([event] + events.get(group, []))[:MAX_EVENTS_PER_GROUP]
    ctx.store.upsert("scaling_events", (ns, job_id), events, index=index)


async def scale(request: Request) -> Response:
    ctx = _ctx(request)
    ns, job_id = ctx.namespace(request), request.path_params["job_id"]
    if request.method == "GET":
        ctx.require_ns(request, ns, "read-job-scaling", "read-job")

        def produce() -> tuple[Any, int]:
            job = get_job(ctx.store, ns, job_id)
            return scale_status(ctx, job), ctx.store.max_index(("jobs", "allocs", "scaling_events"))

        return await blocking_reply(ctx, request, ("jobs", "allocs", "scaling_events"), produce)

    body = await read_json(request)
    target = body.get("Target") or {}
    if target.get("Job") and target["Job"] != job_id:  # command/agent/job_endpoint.go jobScaleAction
        raise ApiError(400, "job ID in payload did not match URL")
    ctx.require_ns(request, ns, "scale-job", "submit-job")
    job = get_job(ctx.store, ns, job_id)
    group = target.get("Group")
    if not group:
        raise ApiError(400, "missing task group name for scaling action")
    tgs = {tg["Name"]: tg for tg in job.get("TaskGroups") or []}
    if group not in tgs:
        raise ApiError(400, f"task group {group!r} specified for scaling does not exist in job")
    count = body.get("Count")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool)):
        raise ApiError(400, "Count must be an integer")
    previous = tgs[group].get("Count", 1)
    event = {
        "Count": count,
        "PreviousCount": previous,
        "Error": bool(body.get("Error")),
        "Message": body.get("Message", ""),
        "Meta": body.get("Meta"),
        "EvalID": None,
        "Time": now_ns(),
        "CreateIndex": 0,
        "ID": str(uuid.uuid4()),
    }
    if count is None:
        # Record-only event (e.g. the Nomad Autoscaler's dry run or an error report).
        idx = ctx.store.next_index()
        event["CreateIndex"] = idx
        _record_event(ctx, ns, job_id, group, event, idx)
        out = {"EvalID": "", "EvalCreateIndex": 0, "JobModifyIndex": job.get("JobModifyIndex", 0),
               "Warnings": "", "Index": idx, "LastContact": 0, "KnownLeader": True}
        return reply(out, idx)
    if not body.get("PolicyOverride"):
        _check_bounds(tgs[group], count)
    if active_deployment(ctx.store, ns, job_id) is not None:
        raise ApiError(400, "job scaling blocked due to active deployment")
    new = copy.deepcopy(job)
    for tg in new["TaskGroups"]:
        if tg["Name"] == group:
            tg["Count"] = count
    stored, ev, idx = upsert_job_version(ctx, new, "job-scaling")
    event["EvalID"] = ev["ID"] if ev else None
    event["CreateIndex"] = idx
    _record_event(ctx, ns, job_id, group, event, idx)
    return reply(register_reply(stored, ev, idx), idx)


ROUTES = [
    Route("/v1/job/{job_id}/scale", scale, methods=["GET", "POST", "PUT"]),
]
