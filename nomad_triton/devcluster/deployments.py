"""Deployment bookkeeping: create, count health, promote, succeed, fail and auto-revert.

Why separate from the runtime's eval loop: this is Nomad's deployment watcher, a different
actor from the scheduler. It reacts to allocation health (written by alloc runners) and to the
clock (progress deadlines), and talks back to the scheduler only by creating evaluations, as
the real watcher does. Status texts are Nomad's constants (structs.DeploymentStatusDescription*).
"""

from __future__ import annotations

import copy
import time
import uuid
from typing import TYPE_CHECKING, Any

from nomad_triton.devcluster.errors import ApiError
from nomad_triton.devcluster.feasibility import alloc_is_terminal
from nomad_triton.devcluster.scheduler import same_registration

if TYPE_CHECKING:  # pragma: no cover
    from nomad_triton.devcluster.runtime import Runtime

NS = 1_000_000_000
ACTIVE = ("running", "paused", "pending", "blocked", "unblocking", "initializing")

DESC_RUNNING = "Deployment is running"
DESC_NEEDS_PROMOTION = "Deployment is running but requires manual promotion"
DESC_AUTO_PROMOTION = "Deployment is running pending automatic promotion"
DESC_SUCCESSFUL = "Deployment completed successfully"
DESC_STOPPED_JOB = "Cancelled because job is stopped"
DESC_NEWER_JOB = "Cancelled due to newer version of job"
DESC_FAILED_ALLOCS = "Failed due to unhealthy allocations"
DESC_PROGRESS_DEADLINE = "Failed due to progress deadline"
DESC_FAILED_BY_USER = "Deployment marked as failed"


def rfc3339_ns(ts: float) -> str:
    from nomad_triton.devcluster.alloc_runner import rfc3339

    return rfc3339(ts)


def multi_error(errors: list[str]) -> str:
    """hashicorp/go-multierror's text, which Nomad's promote returns for unhealthy canaries."""
    head = "1 error occurred:" if len(errors) == 1 else f"{len(errors)} errors occurred:"
    return head + "\n" + "".join(f"\t* {e}\n" for e in errors)


def requires_promotion(dep: dict[str, Any]) -> bool:
    if dep.get("Status") != "running":
        return False
    return any(int(s.get("DesiredCanaries") or 0) > 0 and not s.get("Promoted")
               for s in (dep.get("TaskGroups") or {}).values())


def has_auto_promote(dep: dict[str, Any]) -> bool:
    return all(s.get("AutoPromote") for s in (dep.get("TaskGroups") or {}).values()
               if int(s.get("DesiredCanaries") or 0) > 0)


def new_deployment(job: dict[str, Any], desired_canaries: dict[str, int], now: float) -> dict[str, Any]:
    """Nomad's NewDeployment plus one DeploymentState per task group with an update block."""
    groups: dict[str, Any] = {}
    for tg in job.get("TaskGroups") or []:
        upd = tg.get("Update") or {}
        if int(upd.get("MaxParallel") or 0) <= 0:
            continue
        pd = int(upd.get("ProgressDeadline") or 0)
        groups[tg["Name"]] = {
            "AutoRevert": bool(upd.get("AutoRevert")),
            "AutoPromote": bool(upd.get("AutoPromote")),
            "ProgressDeadline": pd,
            "RequireProgressBy": rfc3339_ns(now + pd / NS) if pd else "0001-01-01T00:00:00Z",
            "Promoted": False,
            "PlacedCanaries": [],
            "DesiredCanaries": int(desired_canaries.get(tg["Name"], 0)),
            "DesiredTotal": int(tg.get("Count") or 0),
            "PlacedAllocs": 0,
            "HealthyAllocs": 0,
            "UnhealthyAllocs": 0,
        }
    dep = {
        "ID": str(uuid.uuid4()),
        "Namespace": job.get("Namespace", "default"),
        "JobID": job["ID"],
        "JobVersion": job.get("Version", 0),
        "JobModifyIndex": job.get("ModifyIndex", 0),
        "JobSpecModifyIndex": job.get("JobModifyIndex", 0),
        "JobCreateIndex": job.get("CreateIndex", 0),
        "IsMultiregion": False,
        "TaskGroups": groups,
        "Status": "running",
        "StatusDescription": DESC_RUNNING,
        "EvalPriority": job.get("Priority", 50),
        "CreateIndex": 0,
        "ModifyIndex": 0,
        "CreateTime": int(now * NS),
        "ModifyTime": int(now * NS),
    }
    if requires_promotion(dep):
        dep["StatusDescription"] = DESC_AUTO_PROMOTION if has_auto_promote(dep) else DESC_NEEDS_PROMOTION
    return dep


class DeploymentWatcher:
    """Nomad's deployment watcher for every deployment in the store."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    @property
    def store(self) -> Any:
        return self.rt.store

    def write(self, dep: dict[str, Any], event_type: str = "DeploymentStatusUpdate") -> None:
        dep["ModifyTime"] = time.time_ns()
        self.store.upsert("deployments", dep["ID"], dep, event_type=event_type, namespace=dep["Namespace"],
                          payload_name="Deployment", filter_keys=(dep["JobID"],))

    def latest_for_job(self, ns: str, job_id: str) -> dict[str, Any] | None:
        deps = [d for d in self.store.list("deployments") if d.get("JobID") == job_id
                and d.get("Namespace", "default") == ns]
        return max(deps, key=lambda d: d.get("CreateIndex", 0)) if deps else None

    def _allocs(self, dep_id: str) -> list[dict[str, Any]]:
        return [a for a in self.store.list("allocs") if a.get("DeploymentID") == dep_id]

    def recount(self, dep: dict[str, Any]) -> dict[str, Any]:
        """Recompute per-group counters from the allocations that carry this DeploymentID."""
        dep = copy.deepcopy(dep)
        allocs = self._allocs(dep["ID"])
        for name, st in (dep.get("TaskGroups") or {}).items():
            mine = [a for a in allocs if a.get("TaskGroup") == name]
            st["PlacedAllocs"] = len(mine)
            st["PlacedCanaries"] = [a["ID"] for a in mine if (a.get("DeploymentStatus") or {}).get("Canary")]
            st["HealthyAllocs"] = sum(1 for a in mine if (a.get("DeploymentStatus") or {}).get("Healthy") is True)
            st["UnhealthyAllocs"] = sum(1 for a in mine if (a.get("DeploymentStatus") or {}).get("Healthy") is False)
        return dep

    def on_alloc_health(self, dep_id: str, alloc_id: str, healthy: bool, now: float | None = None) -> None:
        """An alloc of this deployment got its health verdict: count, then promote/succeed/fail.

        As in Nomad's watcher: in a group with a progress deadline an unhealthy alloc is marked
        for replacement (DesiredTransition.Reschedule) and only the deadline fails the
        deployment; without one the first unhealthy alloc fails it (and may auto-revert).
        """
        now = time.time() if now is None else now
        dep = self.store.get("deployments", dep_id)
        alloc = self.store.get("allocs", alloc_id) or {}
        if dep is None:
            return
        if dep.get("Status") not in ACTIVE:
            # Nomad's state store (updateDeploymentWithAlloc) counts a health verdict into any
            # deployment, terminal or not: after a progress_deadline=0 failure on the first
            # unhealthy alloc, its siblings' verdicts still show in Healthy/UnhealthyAllocs.
            fresh = self.recount(dep)
            if fresh["TaskGroups"] != dep.get("TaskGroups"):
                self.write(fresh, "DeploymentAllocHealth")
            return
        dep = self.recount(dep)
        st = dep["TaskGroups"].get(alloc.get("TaskGroup", ""))
        if healthy and st is not None and st.get("ProgressDeadline"):
            st["RequireProgressBy"] = rfc3339_ns(now + st["ProgressDeadline"] / NS)
        if not healthy and st is not None:
            if st.get("ProgressDeadline"):
                self.write(dep, "DeploymentAllocHealth")
                self.rt.patch_alloc(alloc_id, lambda a: a.__setitem__(
                    "DesiredTransition", {**(a.get("DesiredTransition") or {}), "Reschedule": True}))
                job = self.store.get("jobs", (dep["Namespace"], dep["JobID"]))
                if job is not None:
                    self.rt.create_eval(job, "deployment-watcher", deployment_id=dep["ID"])
                return
            self.fail(dep, DESC_FAILED_ALLOCS)
            return
        self.write(dep, "DeploymentAllocHealth")
        self.advance(dep)

    def advance(self, dep: dict[str, Any]) -> None:
        """Auto-promote healthy canaries, mark success, or ask the scheduler to continue."""
        if dep.get("Status") != "running":
            return
        if requires_promotion(dep):
            ready = all(self._canaries_healthy(dep, g)[0] for g, st in dep["TaskGroups"].items()
                        if int(st.get("DesiredCanaries") or 0) > 0 and not st.get("Promoted"))
            if ready and has_auto_promote(dep):
                self.promote(dep["ID"], None)
            return
        job = self.store.get("jobs", (dep["Namespace"], dep["JobID"])) or {}
        if job.get("Version") != dep.get("JobVersion") or not same_registration(dep.get("JobCreateIndex"), job):
            return
        if not self.try_complete(dep):
            self.rt.create_eval(job, "deployment-watcher", deployment_id=dep["ID"])

    def try_complete(self, dep: dict[str, Any]) -> bool:
        """Mark the deployment successful (and the job version stable) when every group is done."""
        dep = self.recount(dep)
        if dep.get("Status") != "running" or requires_promotion(dep):
            return False
        complete = all(st["HealthyAllocs"] >= st["DesiredTotal"] for st in dep["TaskGroups"].values())
        if not complete or self._pending_work(dep):
            return False
        dep["Status"], dep["StatusDescription"] = "successful", DESC_SUCCESSFUL
        self.write(dep)
        self.rt.mark_job_stable(dep["Namespace"], dep["JobID"], dep["JobVersion"])
        return True

    def _pending_work(self, dep: dict[str, Any]) -> bool:
        """Old-version allocations still running: the rollout is not finished even if counts match."""
        for a in self.store.list("allocs"):
            if (a.get("JobID") == dep["JobID"] and a.get("Namespace", "default") == dep["Namespace"]
                    and a.get("TaskGroup") in dep["TaskGroups"] and not alloc_is_terminal(a)
                    and (a.get("Job") or {}).get("Version") != dep["JobVersion"]):
                return True
        return False

    def _canaries_healthy(self, dep: dict[str, Any], group: str) -> tuple[bool, int, int]:
        st = dep["TaskGroups"][group]
        want = int(st.get("DesiredCanaries") or 0)
        ids = set(st.get("PlacedCanaries") or [])
        healthy = sum(1 for a in self._allocs(dep["ID"])
                      if a["ID"] in ids and (a.get("DeploymentStatus") or {}).get("Healthy") is True)
        return healthy >= want and len(ids) >= want, healthy, want

    def promote(self, dep_id: str, groups: list[str] | None) -> dict[str, Any]:
        """Promote canaries (all groups, or `groups`); Nomad's errors when that cannot be done."""
        dep = self.store.get("deployments", dep_id)
        if dep is None:
            raise ApiError(404, "deployment not found")
        if dep.get("Status") not in ACTIVE:
            raise ApiError(500, "can't promote terminal deployment")
        dep = self.recount(dep)
        names = groups or [g for g, st in dep["TaskGroups"].items() if int(st.get("DesiredCanaries") or 0) > 0]
        unknown = [g for g in names if g not in dep["TaskGroups"]]
        if unknown:
            raise ApiError(500, f'deployment has no task group "{unknown[0]}"')
        if not any(int(dep["TaskGroups"][g].get("DesiredCanaries") or 0) > 0 for g in names):
            raise ApiError(500, "no canaries to promote")
        errors = []
        for g in sorted(names):
            if int(dep["TaskGroups"][g].get("DesiredCanaries") or 0) == 0:
                continue
            ok, healthy, want = self._canaries_healthy(dep, g)
            if not ok:
                errors.append(f'Task group "{g}" has {healthy}/{want} healthy allocations')
        if errors:
            raise ApiError(500, multi_error(errors))
        for g in names:
            dep["TaskGroups"][g]["Promoted"] = True
        if not requires_promotion(dep):
            dep["StatusDescription"] = DESC_RUNNING
        self.write(dep, "DeploymentPromotion")
        job = self.store.get("jobs", (dep["Namespace"], dep["JobID"])) or {"ID": dep["JobID"],
                                                                             "Namespace": dep["Namespace"]}
        return self.rt.create_eval(job, "deployment-watcher", deployment_id=dep["ID"])

    def fail(self, dep: dict[str, Any], description: str) -> dict[str, Any] | None:
        """Mark failed; with auto_revert re-register the latest stable version. Returns the eval."""
        dep = copy.deepcopy(dep)
        dep["Status"] = "failed"
        revert = any(st.get("AutoRevert") for st in (dep.get("TaskGroups") or {}).values())
        target: dict[str, Any] | None = None
        if revert:
            target, why = self.rt.stable_revert_target(dep["Namespace"], dep["JobID"], dep["JobVersion"])
            if target is not None:
                description = f"{description} - rolling back to job version {target['Version']}"
            elif why is not None:
                description = (f"{description} - not rolling back to stable job version {why} as current job "
                               "has same specification")
            else:
                description = f"{description} - no stable job version to auto revert to"
        dep["StatusDescription"] = description
        self.write(dep)
        job = self.store.get("jobs", (dep["Namespace"], dep["JobID"])) or {"ID": dep["JobID"],
                                                                             "Namespace": dep["Namespace"]}
        if target is not None:
            return self.rt.revert_job(target)
        return self.rt.create_eval(job, "deployment-watcher", deployment_id=dep["ID"])

    def fail_by_user(self, dep_id: str) -> dict[str, Any]:
        dep = self.store.get("deployments", dep_id)
        if dep is None:
            raise ApiError(404, "deployment not found")
        if dep.get("Status") not in ACTIVE:
            raise ApiError(500, "can't fail terminal deployment")
        ev = self.fail(self.recount(dep), DESC_FAILED_BY_USER)
        assert ev is not None
        return ev

    def cancel(self, dep: dict[str, Any], description: str) -> None:
        dep = copy.deepcopy(dep)
        dep["Status"], dep["StatusDescription"] = "cancelled", description
        self.write(dep)

    def check_deadlines(self, now: float | None = None) -> None:
        """Fail running deployments whose progress deadline passed without the group completing."""
        from datetime import datetime

        now = time.time() if now is None else now
        for dep in list(self.store.list("deployments")):
            if dep.get("Status") != "running":
                continue
            for name, st in (dep.get("TaskGroups") or {}).items():
                if not st.get("ProgressDeadline") or st.get("HealthyAllocs", 0) >= st.get("DesiredTotal", 0):
                    continue
                if int(st.get("DesiredCanaries") or 0) > 0 and not st.get("Promoted") \
                        and self._canaries_healthy(dep, name)[0]:
                    continue  # waiting for a manual promotion is not a lack of progress
                try:
                    by = datetime.fromisoformat(str(st.get("RequireProgressBy"))).timestamp()
                except ValueError:
                    continue
                if now > by:
                    self.fail(self.recount(dep), DESC_PROGRESS_DEADLINE)
                    break
