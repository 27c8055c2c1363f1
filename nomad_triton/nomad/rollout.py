"""Is what I asked for really running healthy? The one rule for deploy, rollback and fleet.

Why its own module: a deployment's status is not the whole truth. Nomad may create no deployment
at all (nothing changed, no update block, or a scheduler that decided otherwise), and after a
failed deployment its auto-revert registers the stable version again, which may or may not come
back. Reporting "ok" or "rolled back" from the deployment alone once ended with nothing running
and exit 0. So every rollout command ends with the same judgement, made here from what Nomad
reports about the allocations themselves:

    every task group of the version runs its desired count of allocations OF THAT VERSION,
    client status running and healthy (DeploymentStatus.Healthy; where Nomad tracks no health
    for an allocation, because no deployment placed it, running is all there is to know).

`follow()` is the deploy follower every rollout command calls (deploy, rollback, fleet): it follows
the registration's deployment with `watch.DeploymentWatcher`, then applies the rule, following an
auto-revert to its end. Every wait is bounded by the caller's deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from nomad_triton.nomad import errors
from nomad_triton.nomad.client import NomadClient
from nomad_triton.nomad.watch import DeploymentState, DeploymentWatcher, Outcome, WatchResult

__all__ = [
    "GroupRunning",
    "RunningState",
    "VersionCount",
    "await_running",
    "follow",
    "from_deployment",
    "read_running",
    "registered_version",
    "summarize",
]


@dataclass
class VersionCount:
    """Allocations of one job version in one task group that Nomad wants running."""

    running: int = 0
    healthy: int = 0
    starting: int = 0  # pending: placed, not running yet


@dataclass
class GroupRunning:
    name: str
    desired: int
    versions: dict[int, VersionCount] = field(default_factory=dict)


@dataclass
class RunningState:
    """What runs of a job, measured against the version the caller asked for."""

    job_id: str
    version: int  # the version that should run
    job_version: int | None  # the job's current version (None: the job is gone)
    groups: dict[str, GroupRunning] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """The rule: every group runs its desired count healthy, all of `version`."""
        if self.job_version != self.version:
            return False  # gone, or moved on to another version: not what was asked for
        return all(self._healthy(g) >= g.desired for g in self.groups.values())

    def _healthy(self, group: GroupRunning) -> int:
        return group.versions.get(self.version, VersionCount()).healthy

    def describe(self) -> str:
        """One line: per group the wanted count of the version, then what runs, by version."""
        if self.job_version is None:
            return f"job {self.job_id!r} no longer exists: nothing runs"
        parts = [] if self.job_version == self.version else [f"the job is at version {self.job_version}"]
        for g in self.groups.values():
            now = [
                f"version {v}: {c.running} running ({c.healthy} healthy)"
                + (f", {c.starting} starting" if c.starting else "")
                for v, c in sorted(g.versions.items())
                if c.running or c.starting
            ]
            parts.append(
                f"{g.name}: {self._healthy(g)}/{g.desired} healthy of version {self.version}; "
                f"now {', '.join(now) if now else 'nothing running'}"
            )
        return "; ".join(parts) if parts else f"job {self.job_id!r} has no task groups"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "version": self.version,
            "job_version": self.job_version,
            "groups": {
                name: {
                    "desired": g.desired,
                    "versions": {str(v): {**c.__dict__} for v, c in sorted(g.versions.items())},
                }
                for name, g in self.groups.items()
            },
        }


def summarize(job: dict[str, Any] | None, allocs: list[dict[str, Any]], version: int, job_id: str = "") -> RunningState:
    """The rule's input, from a job (its current version) and its allocation list (pure)."""
    if job is None:
        return RunningState(job_id=job_id, version=version, job_version=None)
    state = RunningState(job_id=job.get("ID", job_id), version=version, job_version=int(job.get("Version") or 0))
    for tg in job.get("TaskGroups") or []:
        state.groups[tg["Name"]] = GroupRunning(name=tg["Name"], desired=int(tg.get("Count") or 0))
    for a in allocs:
        group = state.groups.get(a.get("TaskGroup", ""))
        if group is None or a.get("DesiredStatus") != "run":
            continue
        v = a.get("JobVersion")
        if v is None:
            v = (a.get("Job") or {}).get("Version", -1)
        count = group.versions.setdefault(int(v), VersionCount())
        status = a.get("ClientStatus")
        if status == "pending":
            count.starting += 1
        elif status == "running":
            count.running += 1
            if _healthy(a):
                count.healthy += 1
    return state


def from_deployment(dep: DeploymentState, job_id: str) -> RunningState:
    """The rule read off a successful deployment's own counters (no request).

    A deployment succeeds only when every group's desired total of its version is healthy: that is
    Nomad's verdict on exactly this rule, at the moment it ended, and reading it costs nothing (the
    deploy promise is to return within 100 ms of the end).
    """
    state = RunningState(job_id=job_id, version=dep.job_version, job_version=dep.job_version)
    for g in dep.groups.values():
        state.groups[g.name] = GroupRunning(
            name=g.name, desired=g.desired, versions={dep.job_version: VersionCount(running=g.healthy, healthy=g.healthy)}
        )
    return state


def _healthy(alloc: dict[str, Any]) -> bool:
    health = (alloc.get("DeploymentStatus") or {}).get("Healthy")
    if health is not None:
        return bool(health)
    # No verdict yet. Nomad only tracks health for allocations a deployment placed: outside one,
    # running is all there is to know. (List stubs carry no DeploymentID: see _with_deployment_ids.)
    return alloc.get("DeploymentID", "?") == ""


def _with_deployment_ids(client: NomadClient, allocs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Allocation list stubs lack DeploymentID; read it for the running ones without a verdict."""
    out = []
    for a in allocs:
        if "DeploymentID" not in a and a.get("ClientStatus") == "running" and a.get("DesiredStatus") == "run" \
                and (a.get("DeploymentStatus") or {}).get("Healthy") is None:
            try:
                a = {**a, "DeploymentID": client.allocation(a["ID"]).get("DeploymentID") or ""}
            except errors.NotFound:
                continue  # garbage-collected in between: it no longer runs
        out.append(a)
    return out


def read_running(client: NomadClient, job_id: str, version: int) -> RunningState:
    """One look: the job and its allocations now."""
    try:
        job = client.job(job_id)
    except errors.NotFound:
        return RunningState(job_id=job_id, version=version, job_version=None)
    return summarize(job, _with_deployment_ids(client, client.job_allocations(job_id)), version, job_id)


def registered_version(client: NomadClient, job_id: str, job_modify_index: int) -> int:
    """The version a register/revert reply's JobModifyIndex created (the current one otherwise)."""
    job = client.job(job_id)
    if job_modify_index and int(job.get("JobModifyIndex") or 0) != job_modify_index:
        for v in client.versions(job_id):
            if int(v.get("JobModifyIndex") or 0) == job_modify_index:
                return int(v.get("Version") or 0)
    return int(job.get("Version") or 0)


ProgressFn = Callable[[DeploymentState], None]


def await_running(
    client: NomadClient,
    job_id: str,
    version: int,
    *,
    deadline: float,
    on_progress: ProgressFn | None = None,
    poll_s: float = 5.0,
) -> tuple[RunningState, str]:
    """Wait until `version` runs healthy, or it cannot any more, or the deadline (time.monotonic()).

    Returns the last state seen and, when not ok, why the wait ended. Waits on a blocking query of
    the job's allocations (health changes are allocation changes), re-reading at least every
    `poll_s` so that a deployment of `version` that fails, or a newer version, ends the wait early.
    """
    index = 0
    last_dep = ""
    while True:
        t0, previous = time.monotonic(), index
        try:
            allocs, index = client.blocking_get(
                f"job/{job_id}/allocations", index, max(0.05, min(poll_s, deadline - t0))
            )
            if previous and index == previous and time.monotonic() - t0 < 0.2:
                # a server that answers a blocking query at once without a change: do not spin
                time.sleep(max(0.0, min(0.5, deadline - time.monotonic())))
            job = client.job(job_id)
        except errors.NotFound:
            return RunningState(job_id=job_id, version=version, job_version=None), "the job was deregistered"
        state = summarize(job, _with_deployment_ids(client, allocs or []), version, job_id)
        if state.ok:
            return state, ""
        if state.job_version != version:
            return state, f"the job moved on to version {state.job_version}"
        dep = client.latest_deployment(job_id)
        if dep and int(dep.get("JobVersion", -1)) == version:
            dstate = DeploymentState.from_api(dep)
            summary = f"{dstate.status} {dstate.summary()}"
            if on_progress and summary != last_dep:
                on_progress(dstate)
            last_dep = summary
            if dstate.status in ("failed", "cancelled"):
                return state, f"deployment {dstate.id[:8]} of version {version} {dstate.status}: {dstate.description}"
        if time.monotonic() >= deadline:
            return state, "the deadline passed"


def follow(
    client: NomadClient,
    job_id: str,
    eval_id: str,
    start_index: int = 0,
    *,
    deadline: float,
    job_modify_index: int = 0,
    on_progress: ProgressFn | None = None,
    on_canaries_healthy: Callable[[DeploymentState], None] | None = None,
) -> WatchResult:
    """Follow a registration (register, revert, scale reply) to what really runs.

    The deployment is followed as `DeploymentWatcher.run` does; then:
    - successful: Nomad's own verdict on the rule (its counters), else as below;
    - no deployment: the registered version must run healthy (waited for until the deadline), else
      the outcome is NOT_RUNNING;
    - failed with an auto-revert: the reverted version is followed to health; ROLLED_BACK only if
      the stable version really runs again, REVERT_NOT_RUNNING otherwise;
    - the other outcomes (failed, blocked, timeout, cancelled, lost, awaiting promotion) stand.
    `result.running` says what runs whenever Nomad could be asked.
    """
    start_requests = client.request_count
    watcher = DeploymentWatcher(
        client, job_id, deadline=deadline, on_progress=on_progress, on_canaries_healthy=on_canaries_healthy
    )
    res = watcher.run(eval_id, start_index)
    try:
        res = _judge(client, job_id, res, deadline, job_modify_index, on_progress)
    except errors.Unreachable as exc:
        # Unverified is not ok: an outcome that needed the judgement becomes "lost contact".
        needed = res.outcome in (Outcome.SUCCESSFUL, Outcome.NO_DEPLOYMENT, Outcome.ROLLED_BACK) and res.running is None
        res = replace(
            res,
            outcome=Outcome.LOST if needed else res.outcome,
            message=f"{res.message}; could not check what runs: {exc}",
        )
    return replace(res, requests=client.request_count - start_requests)


def _judge(
    client: NomadClient,
    job_id: str,
    res: WatchResult,
    deadline: float,
    job_modify_index: int,
    on_progress: ProgressFn | None,
) -> WatchResult:
    if res.outcome is Outcome.LOST:
        return res
    if res.outcome is Outcome.SUCCESSFUL and res.deployment is not None:
        state = from_deployment(res.deployment, job_id)
        if state.ok:
            return replace(res, running=state)
    if res.outcome in (Outcome.SUCCESSFUL, Outcome.NO_DEPLOYMENT):
        version = (
            res.deployment.job_version
            if res.deployment is not None
            else registered_version(client, job_id, job_modify_index)
        )
        state, why = await_running(client, job_id, version, deadline=deadline, on_progress=on_progress)
        if state.ok:
            return _ended(res, running=state)
        return _ended(
            res,
            outcome=Outcome.NOT_RUNNING,
            message=f"{res.message}, but version {version} is not running healthy ({why}): {state.describe()}",
            running=state,
        )
    if res.outcome is Outcome.ROLLED_BACK:
        try:
            job = client.job(job_id)
        except errors.NotFound:
            job = None
        failed_version = res.deployment.job_version if res.deployment else -1
        if job is None or int(job.get("Version") or 0) <= failed_version:
            state = read_running(client, job_id, res.rollback_version or 0)
            return _ended(
                res,
                outcome=Outcome.REVERT_NOT_RUNNING,
                message=f"{res.message}; but Nomad registered no reverted version: {state.describe()}",
                running=state,
            )
        version = int(job.get("Version") or 0)
        state, why = await_running(client, job_id, version, deadline=deadline, on_progress=on_progress)
        reverted = (
            f"{res.message}; Nomad rolled the job back to version {res.rollback_version} "
            f"(registered again as version {version})"
        )
        if state.ok:
            return _ended(res, message=f"{reverted}, which runs healthy again: {state.describe()}", running=state)
        return _ended(
            res,
            outcome=Outcome.REVERT_NOT_RUNNING,
            message=f"{reverted}, but it is not running healthy ({why}): {state.describe()}",
            running=state,
        )
    # Failed, blocked, timed out, superseded, awaiting promotion: the outcome stands; say what runs.
    version = res.deployment.job_version if res.deployment else None
    if version is None:
        try:
            version = int(client.job(job_id).get("Version") or 0)
        except errors.NotFound:
            version = 0
    return replace(res, running=read_running(client, job_id, version))


def _ended(res: WatchResult, **changes: Any) -> WatchResult:
    """The result with the moment the judgement (not the deployment) ended."""
    return replace(res, finished_at=time.monotonic(), finished_wall=time.time(), **changes)
