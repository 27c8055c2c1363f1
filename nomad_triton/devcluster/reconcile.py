"""Per-task-group reconciliation: desired count and spec vs the allocations that exist.

Why its own module: this is where Nomad's rolling-update semantics live (its reconciler), and
they are subtle enough to deserve table-driven tests of their own:
- count down stops the highest indexes first; count up fills the lowest free indexes;
- a failed alloc is replaced (same name, PreviousAllocation, RescheduleTracker) when its
  ReschedulePolicy allows, now or after the policy's delay (reschedule later = follow-up eval);
- an alloc of an older job version is updated in place when only non-task fields changed and
  destructively (stop + place) otherwise, at most MaxParallel unhealthy at a time;
- with `canary = N`, N canaries of the new version run beside the old allocs until promotion,
  after which the old allocs holding canary names are stopped and the rest roll normally;
- a failed deployment stops the rollout (no further destructive updates of that version).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nomad_triton.devcluster.feasibility import alloc_is_terminal

NS = 1_000_000_000

ALLOC_NOT_NEEDED = "alloc not needed due to job update"
ALLOC_UPDATING = "alloc is being updated due to job update"
ALLOC_MIGRATING = "alloc is being migrated"
ALLOC_RESCHEDULED = "alloc was rescheduled because it failed"
ALLOC_STOPPED_JOB = "alloc not needed due to job update"


@dataclass
class Placement:
    """One allocation to create."""

    name: str
    index: int
    task_group: str
    canary: bool = False
    previous_alloc: str | None = None
    previous_node: str | None = None
    reschedule: bool = False
    destructive: bool = False
    migrate: bool = False
    reschedule_events: list[dict[str, Any]] | None = None


@dataclass
class Stop:
    """One allocation to move to DesiredStatus "stop" (with Nomad's DesiredDescription)."""

    alloc_id: str
    description: str


@dataclass
class GroupResult:
    place: list[Placement] = field(default_factory=list)
    stops: list[Stop] = field(default_factory=list)
    inplace: list[str] = field(default_factory=list)
    reschedule_later: list[tuple[str, float]] = field(default_factory=list)
    ignore: int = 0
    destructive: int = 0
    canary: int = 0
    migrate: int = 0
    desired_canaries: int = 0

    def annotations(self) -> dict[str, int]:
        """Nomad's DesiredTGUpdates entry for plan output."""
        new = sum(1 for p in self.place if not (p.canary or p.destructive or p.migrate))
        stops = sum(1 for s in self.stops if s.description not in (ALLOC_UPDATING, ALLOC_MIGRATING))
        return {
            "Place": new,
            "Stop": stops,
            "Migrate": self.migrate,
            "InPlaceUpdate": len(self.inplace),
            "DestructiveUpdate": self.destructive,
            "Canary": self.canary,
            "Ignore": self.ignore,
            "Preemptions": 0,
        }


_INDEX = re.compile(r"\[(\d+)\]$")


def alloc_index(alloc: dict[str, Any]) -> int:
    m = _INDEX.search(alloc.get("Name", ""))
    return int(m.group(1)) if m else 0


def alloc_name(job: dict[str, Any], group: str, index: int) -> str:
    return f"{job['ID']}.{group}[{index}]"


# Task fields whose change needs a new process (Nomad's tasksUpdated); the rest update in place.
_INPLACE_TASK_FIELDS = {"Services", "KillTimeout", "KillSignal", "LogConfig", "ShutdownDelay"}


def tasks_updated(old_job: dict[str, Any], new_job: dict[str, Any], group: str) -> bool:
    """True when the group's allocations must be replaced to apply `new_job`."""

    def tg_of(job: dict[str, Any]) -> dict[str, Any] | None:
        return next((g for g in job.get("TaskGroups") or [] if g.get("Name") == group), None)

    a, b = tg_of(old_job), tg_of(new_job)
    if a is None or b is None:
        return True
    for key in ("Networks", "Constraints", "Meta", "EphemeralDisk", "Volumes"):
        if (a.get(key) or None) != (b.get(key) or None):
            return True
    for key in ("Constraints", "Meta", "NodePool"):
        if (old_job.get(key) or None) != (new_job.get(key) or None):
            return True
    ta = {t["Name"]: t for t in a.get("Tasks") or []}
    tb = {t["Name"]: t for t in b.get("Tasks") or []}
    if set(ta) != set(tb):
        return True
    for name, t in ta.items():
        u = tb[name]
        for key in set(t) | set(u):
            if key in _INPLACE_TASK_FIELDS:
                continue
            if (t.get(key) or None) != (u.get(key) or None):
                return True
    return False


def _ts_ns(value: Any) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value and not value.startswith("0001"):
        try:
            return datetime.fromisoformat(value).timestamp() * NS
        except ValueError:
            return None
    return None


def failed_at(alloc: dict[str, Any]) -> float:
    """Seconds since epoch when the alloc failed (latest task FinishedAt, else ModifyTime)."""
    times = [_ts_ns((ts or {}).get("FinishedAt")) for ts in (alloc.get("TaskStates") or {}).values()]
    got = [t for t in times if t]
    if got:
        return max(got) / NS
    return float(alloc.get("ModifyTime") or 0) / NS


def next_delay_s(policy: dict[str, Any], events: list[dict[str, Any]]) -> float:
    """Nomad's reschedule delay functions: constant, exponential, fibonacci; capped by MaxDelay."""
    base = float(policy.get("Delay") or 0) / NS
    cap = float(policy.get("MaxDelay") or 0) / NS
    fn = policy.get("DelayFunction") or "constant"
    n = len(events)
    if fn == "exponential":
        delay = base * (2**n)
    elif fn == "fibonacci":
        a, b = base, base
        for _ in range(n):
            a, b = b, a + b
        delay = a
    else:
        delay = base
    return min(delay, cap) if cap > 0 else delay


def reschedule_decision(
    alloc: dict[str, Any], tg: dict[str, Any], dep: dict[str, Any] | None, now: float
) -> tuple[bool, float, float]:
    """(eligible, when in epoch seconds, delay in seconds) for replacing a failed alloc."""
    if dep and alloc.get("DeploymentID") == dep.get("ID"):
        if dep.get("Status") == "failed":
            return False, 0.0, 0.0
        # in an active deployment only allocs the deployment watcher released are replaced
        if dep.get("Status") in ("running", "paused", "pending", "blocked") and \
                not (alloc.get("DesiredTransition") or {}).get("Reschedule"):
            return False, 0.0, 0.0
    policy = tg.get("ReschedulePolicy") or {}
    events = list((alloc.get("RescheduleTracker") or {}).get("Events") or [])
    if not policy.get("Unlimited"):
        attempts = int(policy.get("Attempts") or 0)
        interval_ns = float(policy.get("Interval") or 0)
        recent = [e for e in events if now * NS - float(e.get("RescheduleTime") or 0) < interval_ns]
        if attempts <= 0 or len(recent) >= attempts:
            return False, 0.0, 0.0
    delay = next_delay_s(policy, events)
    return True, failed_at(alloc) + delay, delay


def _is_current(alloc: dict[str, Any], job: dict[str, Any]) -> bool:
    return (alloc.get("Job") or {}).get("Version") == job.get("Version")


def _is_canary(alloc: dict[str, Any]) -> bool:
    return bool((alloc.get("DeploymentStatus") or {}).get("Canary"))


def reconcile_group(
    job: dict[str, Any],
    tg: dict[str, Any],
    allocs: list[dict[str, Any]],
    dep: dict[str, Any] | None,
    now: float,
) -> GroupResult:
    """Reconcile one task group. `dep` is the deployment of the job's current version, if any."""
    res = GroupResult()
    gname = tg["Name"]
    if job.get("Stop"):
        for a in allocs:
            if a.get("DesiredStatus") == "run" and not alloc_is_terminal(a):
                res.stops.append(Stop(a["ID"], ALLOC_STOPPED_JOB))
        return res
    count = int(tg.get("Count") or 0)
    update = tg.get("Update") or {}
    max_parallel = int(update.get("MaxParallel") or 0)
    canary_n = int(update.get("Canary") or 0) if max_parallel > 0 else 0
    dstate = ((dep or {}).get("TaskGroups") or {}).get(gname) or {}
    promoted = bool(dstate.get("Promoted"))
    dep_failed = bool(dep and dep.get("Status") == "failed")

    occupants: list[dict[str, Any]] = []  # hold a name: live, failed-but-kept, reschedule later
    resched_now: list[tuple[dict[str, Any], float]] = []
    resched_later: dict[str, float] = {}
    migrate: set[str] = set()
    canaries: list[dict[str, Any]] = []
    for a in allocs:
        if a.get("DesiredStatus") != "run":
            continue
        cs = a.get("ClientStatus")
        if cs == "complete" and job.get("Type") in ("batch", "sysbatch"):
            occupants.append(a)  # finished batch work keeps its slot: it is not run again
            continue
        if cs in ("complete", "lost"):
            continue
        if dep and _is_canary(a) and a.get("DeploymentID") == dep.get("ID") and not promoted:
            canaries.append(a)  # a failed canary still counts as placed: the deployment decides
            continue
        if cs == "failed":
            if a.get("NextAllocation"):
                continue
            ok, when, delay = reschedule_decision(a, tg, dep, now)
            if ok and when <= now:
                resched_now.append((a, delay))
            elif ok:
                resched_later[a["ID"]] = when
            occupants.append(a)
            continue
        if (a.get("DesiredTransition") or {}).get("Migrate"):
            migrate.add(a["ID"])
        occupants.append(a)

    # Two allocs holding one name (a promoted canary and the old alloc it replaces): keep the
    # current-version, running one and stop the other.
    by_index: dict[int, list[dict[str, Any]]] = {}
    for a in occupants:
        by_index.setdefault(alloc_index(a), []).append(a)
    kept: list[dict[str, Any]] = []
    for idx in sorted(by_index):
        group = sorted(
            by_index[idx],
            key=lambda a: (not _is_current(a, job), a.get("ClientStatus") != "running", a.get("CreateIndex", 0)),
        )
        kept.append(group[0])
        for extra in group[1:]:
            res.stops.append(Stop(extra["ID"], ALLOC_NOT_NEEDED))
    # count down: stop the highest indexes
    kept.sort(key=alloc_index)
    for a in kept[count:]:
        res.stops.append(Stop(a["ID"], ALLOC_NOT_NEEDED))
    kept = kept[:count]
    resched_ids = {a["ID"]: d for a, d in resched_now}

    used = {alloc_index(a) for a in kept}
    destructive: list[dict[str, Any]] = []
    for a in kept:
        if a["ID"] in resched_ids:
            events = list((a.get("RescheduleTracker") or {}).get("Events") or [])
            events.append({
                "RescheduleTime": int(now * NS),
                "PrevAllocID": a["ID"],
                "PrevNodeID": a.get("NodeID", ""),
                "Delay": int(resched_ids[a["ID"]] * NS),
            })
            res.place.append(Placement(a["Name"], alloc_index(a), gname, previous_alloc=a["ID"],
                                       previous_node=a.get("NodeID"), reschedule=True,
                                       reschedule_events=events))
            res.stops.append(Stop(a["ID"], ALLOC_RESCHEDULED))
            continue
        if a["ID"] in resched_later and _is_current(a, job):
            res.reschedule_later.append((a["ID"], resched_later[a["ID"]]))
            res.ignore += 1
            continue
        if a.get("ClientStatus") == "complete" or (a.get("ClientStatus") == "failed" and _is_current(a, job)):
            # A failed alloc of an OLDER version (not rescheduled, or not due yet) is still
            # replaced by the new version's destructive update (Nomad's reconciler keeps it
            # "untainted"), so a fix or a revert after a failed rollout does place again.
            res.ignore += 1
            continue
        if a["ID"] in migrate:
            res.place.append(Placement(a["Name"], alloc_index(a), gname, previous_alloc=a["ID"],
                                       previous_node=a.get("NodeID"), migrate=True))
            res.stops.append(Stop(a["ID"], ALLOC_MIGRATING))
            res.migrate += 1
            continue
        if _is_current(a, job):
            res.ignore += 1
        elif not tasks_updated(a.get("Job") or {}, job, gname):
            res.inplace.append(a["ID"])
        else:
            destructive.append(a)
    # count up: lowest free indexes
    free = (i for i in range(count + len(used) + 1) if i not in used)
    for _ in range(count - len(kept)):
        i = next(free)
        res.place.append(Placement(alloc_name(job, gname, i), i, gname))

    if not destructive:
        res.ignore += len(canaries)
        return res
    if dep_failed:
        res.ignore += len(destructive)
        return res
    if canary_n > 0 and not promoted:
        res.desired_canaries = canary_n
        have = {alloc_index(c) for c in canaries}
        need = canary_n - len(canaries)
        for a in destructive:
            if need <= 0:
                break
            if alloc_index(a) in have:
                continue
            res.place.append(Placement(a["Name"], alloc_index(a), gname, canary=True))
            have.add(alloc_index(a))
            res.canary += 1
            need -= 1
        res.ignore += len(destructive) + len(canaries)
        return res
    limit = max_parallel if max_parallel > 0 else len(destructive)
    if dep is not None and max_parallel > 0:
        in_flight = sum(
            1 for a in allocs
            if a.get("DeploymentID") == dep.get("ID") and not alloc_is_terminal(a)
            and (a.get("DeploymentStatus") or {}).get("Healthy") is not True
        )
        limit -= in_flight
    for a in destructive:
        if limit <= 0:
            res.ignore += 1
            continue
        limit -= 1
        res.stops.append(Stop(a["ID"], ALLOC_UPDATING))
        res.place.append(Placement(a["Name"], alloc_index(a), gname, previous_alloc=a["ID"],
                                   previous_node=a.get("NodeID"), destructive=True))
        res.destructive += 1
    return res
