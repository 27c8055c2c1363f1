"""GET /v1/scaling/policies and /v1/scaling/policy/:id: Nomad's scaling-policy API.

Why a tracker and not a read of the jobs: an autoscaler (the Nomad Autoscaler, our
`autoscale agent`) follows these endpoints with blocking queries, so a policy must behave as a
Nomad state object of its own: an ID that stays the same while its job is updated, a
CreateIndex from when it appeared, a ModifyIndex that moves only when the policy itself changes
(a job write that leaves the `scaling` block alone does not wake a waiting list query), and an
X-Nomad-Index that moves when a policy appears, changes or disappears.

What Nomad documents and shows (api-docs/scaling-policies, PRs #7772/#25911):
- one policy per task group with a `scaling` block, Type "horizontal", Target {Namespace, Job,
  Group}; the list returns stubs (ID, Enabled, Type, Target, CreateIndex, ModifyIndex), the read
  returns the whole policy (plus Namespace, Min, Max, Policy);
- `?job=` filters by job ID, `?type=` by type prefix ("vertical" matches vertical_cpu/_mem);
- a stopped job keeps its policies, disabled (Enabled=false); a purge removes them; a purge and
  re-register gives new policy IDs;
- ACL: namespace:list-scaling-policies for the list (`namespace=*` lists every namespace the
  token may list), namespace:read-scaling-policy for a read; an unknown ID is 404.

devcluster keeps the tracked policies in memory and rebuilds them from the jobs after a restart;
IDs are derived from (namespace, job, group, the job's CreateIndex), so they survive restarts.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import ApiError
from .common import Ctx, blocking_reply

_CONTENT = ("Type", "Min", "Max", "Policy", "Enabled")
Target = tuple[str, str, str]  # (namespace, job, group)


def _policy_id(ns: str, job: dict[str, Any], group: str) -> str:
    """Stable across job updates and devcluster restarts; new after a purge and re-register."""
    name = f"nomad-triton-devcluster/{ns}/{job['ID']}/{group}/{job.get('CreateIndex', 0)}"
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def desired_policies(job: dict[str, Any]) -> dict[Target, dict[str, Any]]:
    """The policies a stored job implies, keyed by target (content fields only)."""
    ns = job.get("Namespace") or "default"
    out: dict[Target, dict[str, Any]] = {}
    for tg in job.get("TaskGroups") or []:
        scaling = tg.get("Scaling")
        if not scaling:
            continue
        out[(ns, job["ID"], tg["Name"])] = {
            "Type": scaling.get("Type") or "horizontal",
            "Min": scaling.get("Min", tg.get("Count", 1)),
            "Max": scaling.get("Max"),
            "Policy": copy.deepcopy(scaling.get("Policy")),
            # Nomad disables a stopped job's policies instead of deleting them (PR #25911).
            "Enabled": bool(scaling.get("Enabled", True)) and not job.get("Stop"),
        }
    return out


class PolicyTracker:
    """Scaling policies as state objects, kept in step with the jobs table after every write."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.policies: dict[Target, dict[str, Any]] = {}
        self.index = 1  # X-Nomad-Index of the scaling-policy "table"
        self._synced_jobs_index = -1

    def sync(self) -> None:
        """Bring policies in line with the jobs; cheap when no job was written since last time."""
        store = self.ctx.store
        jobs_index = store.max_index(("jobs",))
        if jobs_index == self._synced_jobs_index:
            return
        self._synced_jobs_index = jobs_index
        seen: set[Target] = set()
        for job in store.list("jobs"):
            write_index = int(job.get("ModifyIndex") or jobs_index)
            for target, content in desired_policies(job).items():
                seen.add(target)
                self._upsert(target, job, content, write_index)
        for target in [t for t in self.policies if t not in seen]:
            del self.policies[target]
            self.index = max(self.index, jobs_index)

    def _upsert(self, target: Target, job: dict[str, Any], content: dict[str, Any], index: int) -> None:
        ns, job_id, group = target
        pid = _policy_id(ns, job, group)
        current = self.policies.get(target)
        if current is not None and current["ID"] == pid \
                and all(current[k] == content[k] for k in _CONTENT):
            return
        create_index = current["CreateIndex"] if current is not None and current["ID"] == pid else index
        self.policies[target] = {
            "ID": pid,
            "Namespace": ns,
            "Target": {"Namespace": ns, "Job": job_id, "Group": group},
            **content,
            "CreateIndex": create_index,
            "ModifyIndex": index,
        }
        self.index = max(self.index, index)

    def on_store_write(self) -> None:
        self.sync()


def install(ctx: Ctx) -> PolicyTracker:
    """Create the tracker and follow every store write, so ModifyIndex is the index of the job
    write that changed the policy (not of some later unrelated write)."""
    tracker = PolicyTracker(ctx)
    ctx.extras["scaling_policies"] = tracker
    ctx.store.subscribe(tracker.on_store_write)
    tracker.sync()
    return tracker


def _tracker(request: Request) -> tuple[Ctx, PolicyTracker]:
    ctx: Ctx = request.app.state.ctx
    tracker = ctx.extras.get("scaling_policies")
    if tracker is None:
        tracker = install(ctx)
    return ctx, tracker


def stub(policy: dict[str, Any]) -> dict[str, Any]:
    """Nomad's ScalingPolicyListStub."""
    return {k: copy.deepcopy(policy[k]) for k in ("ID", "Enabled", "Type", "Target", "CreateIndex", "ModifyIndex")}


async def list_policies(request: Request) -> Response:
    ctx, tracker = _tracker(request)
    ns = ctx.namespace(request)
    token = ctx.token(request)
    if ns == "*":
        def visible(policy_ns: str) -> bool:
            return ctx.authorizer.allow_namespace(token, policy_ns, "list-scaling-policies")
    else:
        ctx.require_ns(request, ns, "list-scaling-policies")

        def visible(policy_ns: str) -> bool:
            return policy_ns == ns
    job_id = request.query_params.get("job", "")
    type_prefix = request.query_params.get("type", "")

    def produce() -> tuple[Any, int]:
        tracker.sync()
        out = [stub(p) for p in tracker.policies.values()
               if visible(p["Namespace"]) and (not job_id or p["Target"]["Job"] == job_id)
               and p["Type"].startswith(type_prefix)]
        out.sort(key=lambda p: p["ID"])
        return out, tracker.index

    return await blocking_reply(ctx, request, ("jobs",), produce)


async def read_policy(request: Request) -> Response:
    ctx, tracker = _tracker(request)
    ns = ctx.namespace(request)
    ctx.require_ns(request, ns, "read-scaling-policy")
    pid = request.path_params["policy_id"]

    def produce() -> tuple[Any, int]:
        tracker.sync()
        for policy in tracker.policies.values():
            if policy["ID"] == pid and policy["Namespace"] == ns:
                return copy.deepcopy(policy), policy["ModifyIndex"]
        raise ApiError(404, "policy not found")

    return await blocking_reply(ctx, request, ("jobs",), produce)


ROUTES = [
    Route("/v1/scaling/policies", list_policies, methods=["GET"]),
    Route("/v1/scaling/policy/{policy_id}", read_policy, methods=["GET"]),
]
