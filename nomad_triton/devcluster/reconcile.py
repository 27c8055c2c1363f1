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

Across a version change (a new deploy, a revert, an auto-revert), as Nomad documents and does:
- a failed alloc of an older version that is waiting for a delayed reschedule, or has no
  reschedule attempts left, is still an allocation to update: the new version replaces it with a
  destructive update (so a revert after a failed rollout runs the stable version again at once);
- a failed alloc due for rescheduling now is replaced by the current version;
- a lost alloc is replaced (same name, PreviousAllocation) even while the rollout is on hold;
- canaries of an older version's deployment that were never promoted are stopped;
- no new allocations are placed while canaries wait for promotion or the deployment failed.
The scheduler creates a deployment for a version with an update block and a non-zero count
when no allocation of that version exists yet, even if nothing can be placed yet.
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
ALLOC_LOST = "alloc is lost since its node is down"


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
    had_current: bool = False  # some allocation of the job's current version exists (any state)

    @property
    def updates_spec(self) -> bool:
        """Existing allocations move to the new version (in place, destructively, or canaries)."""
        return bool(self.inplace or self.destructive or self.canary or self.desired_canaries)

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


def _reschedule_event(alloc: dict[str, Any], delay_s: float, now: float) -> list[dict[str, Any]]:
    events = list((alloc.get("RescheduleTracker") or {}).get("Events") or [])
    events.append({
        "RescheduleTime": int(now * NS),
        "PrevAllocID": alloc["ID"],
        "PrevNodeID": alloc.get("NodeID", ""),
        "Delay": int(delay_s * NS),
    })
    return events


def _stale_canary(alloc: dict[str, Any], gname: str, old_dep: dict[str, Any] | None) -> bool:
    """A canary of an older version's deployment that was never promoted: a new version (failing
    forward, or an auto-revert) replaces it, so it only holds resources now."""
    if not old_dep or not _is_canary(alloc) or alloc.get("DeploymentID") != old_dep.get("ID"):
        return False
    return not (((old_dep.get("TaskGroups") or {}).get(gname) or {}).get("Promoted"))


def reconcile_group(
    job: dict[str, Any],
    tg: dict[str, Any],
    allocs: list[dict[str, Any]],
    dep: dict[str, Any] | None,
    now: float,
    old_dep: dict[str, Any] | None = None,
) -> GroupResult:
    """Reconcile one task group.

    `dep` is the deployment of the job's current version, if any; `old_dep` the job's latest
    deployment when it belongs to an older version (its unpromoted canaries are stopped).
    """
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
    res.had_current = any(_is_current(a, job) for a in allocs)

    occupants: list[dict[str, Any]] = []  # hold a name: live, failed-but-kept, reschedule later
    resched_now: dict[str, float] = {}
    resched_later: dict[str, float] = {}
    migrate: set[str] = set()
    canaries: list[dict[str, Any]] = []
    lost: list[dict[str, Any]] = []
    for a in allocs:
        if a.get("DesiredStatus") != "run":
            continue
        cs = a.get("ClientStatus")
        if cs == "complete" and job.get("Type") in ("batch", "sysbatch"):
            occupants.append(a)  # finished batch work keeps its slot: it is not run again
            continue
        if cs == "complete":
            continue
        if cs == "lost":
            lost.append(a)
            continue
        if _stale_canary(a, gname, old_dep):
            res.stops.append(Stop(a["ID"], ALLOC_NOT_NEEDED))
            continue
        if dep and _is_canary(a) and a.get("DeploymentID") == dep.get("ID") and not promoted:
            # A canary that failed and that the deployment watcher released is replaced by a
            # new canary; otherwise a failed canary still counts as placed: the deployment decides.
            if cs == "failed" and not a.get("NextAllocation"):
                ok, when, delay = reschedule_decision(a, tg, dep, now)
                if ok and when <= now:
                    res.place.append(Placement(a["Name"], alloc_index(a), gname, canary=True,
                                               previous_alloc=a["ID"], previous_node=a.get("NodeID"),
                                               reschedule=True, reschedule_events=_reschedule_event(a, delay, now)))
                    res.stops.append(Stop(a["ID"], ALLOC_RESCHEDULED))
                    res.canary += 1
                elif ok:
                    res.reschedule_later.append((a["ID"], when))
            canaries.append(a)
            continue
        if cs == "failed":
            if a.get("NextAllocation"):
                continue
            ok, when, delay = reschedule_decision(a, tg, dep, now)
            if ok and when <= now:
                resched_now[a["ID"]] = delay
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

    used = {alloc_index(a) for a in kept}
    destructive: list[dict[str, Any]] = []
    for a in kept:
        if a["ID"] in resched_now:
            # replaced now, by the job's current version whatever version failed
            res.place.append(Placement(a["Name"], alloc_index(a), gname, previous_alloc=a["ID"],
                                       previous_node=a.get("NodeID"), reschedule=True,
                                       reschedule_events=_reschedule_event(a, resched_now[a["ID"]], now)))
            res.stops.append(Stop(a["ID"], ALLOC_RESCHEDULED))
            continue
        if a["ID"] in migrate:
            res.place.append(Placement(a["Name"], alloc_index(a), gname, previous_alloc=a["ID"],
                                       previous_node=a.get("NodeID"), migrate=True))
            res.stops.append(Stop(a["ID"], ALLOC_MIGRATING))
            res.migrate += 1
            continue
        if _is_current(a, job) or a.get("ClientStatus") == "complete":
            # A failed alloc of the current version waits for its reschedule (or stays failed).
            if a["ID"] in resched_later:
                res.reschedule_later.append((a["ID"], resched_later[a["ID"]]))
            res.ignore += 1
        elif not tasks_updated(a.get("Job") or {}, job, gname):
            res.inplace.append(a["ID"])
        else:
            # An older version, running OR failed (waiting for a delayed reschedule, or out of
            # attempts): the new version replaces it with a destructive update, as Nomad does.
            destructive.append(a)
    # Lost allocations are replaced whatever the deployment's state (Nomad: "to avoid odd user
    # experiences"), with the job's current version.
    for a in sorted(lost, key=alloc_index):
        if alloc_index(a) in used or len(used) >= count:
            res.stops.append(Stop(a["ID"], ALLOC_LOST))
            continue
        used.add(alloc_index(a))
        res.stops.append(Stop(a["ID"], ALLOC_LOST))
        res.place.append(Placement(a["Name"], alloc_index(a), gname, previous_alloc=a["ID"],
                                   previous_node=a.get("NodeID")))
    # Failed allocs are replaced first: updating them cannot take serving capacity away.
    destructive.sort(key=lambda a: (a.get("ClientStatus") != "failed", alloc_index(a)))
    canarying = bool(destructive or canaries) and canary_n > 0 and not promoted
    # count up (lowest free indexes), unless the rollout is on hold: a failed deployment places
    # nothing new, and neither does one whose canaries wait for promotion.
    missing = count - len(used)
    if missing > 0 and not (dep_failed or canarying):
        free = (i for i in range(count + len(used) + 1) if i not in used)
        for _ in range(missing):
            i = next(free)
            res.place.append(Placement(alloc_name(job, gname, i), i, gname))

    def later_or_ignore(a: dict[str, Any]) -> None:
        res.ignore += 1
        if a["ID"] in resched_later:
            res.reschedule_later.append((a["ID"], resched_later[a["ID"]]))

    if not destructive:
        res.ignore += len(canaries)
        return res
    if dep_failed:
        for a in destructive:
            later_or_ignore(a)
        return res
    if canarying:
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
        for a in destructive:
            later_or_ignore(a)
        res.ignore += len(canaries)
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
            later_or_ignore(a)
            continue
        limit -= 1
        res.stops.append(Stop(a["ID"], ALLOC_UPDATING))
        res.place.append(Placement(a["Name"], alloc_index(a), gname, previous_alloc=a["ID"],
                                   previous_node=a.get("NodeID"), destructive=True))
        res.destructive += 1
    return res
