"""Table of the reconciler's decisions across job version changes (pure: no store, no processes).

Why a table: a rollout that goes wrong must never end with nothing running, and that depends on
how the scheduler treats failed, lost, rescheduling and canary allocations when a new version
(a deploy, a revert, an auto-revert) arrives. Each row is one situation an operator can reach;
the expected decisions follow Nomad's documented and observable behaviour:
- an older version's failed alloc that waits for a delayed reschedule (or has no attempts left)
  is destructively updated to the new version, not left to reschedule later;
- a version with an update block and a non-zero count gets a deployment when no allocation of it
  exists yet, even if nothing can be placed;
- lost allocs are replaced even while the rollout is on hold; unpromoted canaries of an older
  deployment are stopped; nothing new is placed while canaries wait or the deployment failed.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from test_runtime_support import S, job, node

from nomad_triton.devcluster.reconcile import (
    ALLOC_LOST,
    ALLOC_NOT_NEEDED,
    ALLOC_RESCHEDULED,
    ALLOC_UPDATING,
)
from nomad_triton.devcluster.scheduler import compute_plan

NOW = 1_800_000_000.0
N = node("n", cpu=100_000, mem=100_000)

LATER = {"Attempts": 0, "Interval": 0, "Delay": int(30 * S), "DelayFunction": "constant", "MaxDelay": 0,
         "Unlimited": True}
NO_ATTEMPTS = {"Attempts": 0, "Interval": 0, "Delay": int(30 * S), "DelayFunction": "constant", "MaxDelay": 0,
               "Unlimited": False}
UPDATE = {"MaxParallel": 1, "Canary": 0, "AutoRevert": True, "ProgressDeadline": int(30 * S)}


def version(v: int, *, count: int = 1, canary: int = 0, policy: dict[str, Any] | None = None,
            update: bool = True) -> dict[str, Any]:
    """Job version `v`: each version has its own task env, so versions differ destructively,
    except that version 2 is version 0's spec again (what a revert registers)."""
    j = job(count=count, checks=False, reschedule=policy or LATER,
            update={**UPDATE, "Canary": canary} if update else None, version=v)
    j["TaskGroups"][0]["Tasks"][0]["Env"] = {"RELEASE": "stable" if v in (0, 2) else f"r{v}"}
    j["CreateIndex"] = 1
    return j


def alloc(aid: str, v: int, index: int, status: str = "running", *, failed_ago: float = 0.0,
          job_of: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    jj = copy.deepcopy(job_of or version(v))
    jj["Version"] = v
    a = {"ID": aid, "Name": f"web.g[{index}]", "Namespace": "default", "JobID": "web", "Job": jj,
         "TaskGroup": "g", "NodeID": N["ID"], "DesiredStatus": "run", "ClientStatus": status,
         "CreateIndex": 10 + index, "DeploymentID": "", "DeploymentStatus": None,
         "ModifyTime": int((NOW - failed_ago) * S),
         "AllocatedResources": {"Tasks": {"web": {"Cpu": {"CpuShares": 100}, "Memory": {"MemoryMB": 64}}},
                                "Shared": {"Ports": []}}}
    a.update(extra)
    return a


def deployment(dep_id: str, v: int, status: str = "running", *, canaries: int = 0,
               promoted: bool = False) -> dict[str, Any]:
    return {"ID": dep_id, "JobVersion": v, "JobCreateIndex": 1, "Status": status,
            "TaskGroups": {"g": {"DesiredCanaries": canaries, "Promoted": promoted, "DesiredTotal": 1}}}


def canary_of(dep_id: str, healthy: bool | None = None) -> dict[str, Any]:
    return {"DeploymentID": dep_id, "DeploymentStatus": {"Healthy": healthy, "Canary": True}}


def outcome(p: Any) -> dict[str, Any]:
    """What an operator would see change: placements (kind, replaced alloc), stops, follow-ups."""

    def kind(r: Any) -> str:
        return ("canary" if r.canary else "destructive" if r.destructive else "reschedule" if r.reschedule
                else "migrate" if r.migrate else "place")

    return {
        "place": sorted(f"{x.request.name} {kind(x.request)}"
                        + (f" <- {x.request.previous_alloc}" if x.request.previous_alloc else "")
                        for x in p.placed),
        "stop": sorted(f"{s.alloc_id}: {s.description}" for s in p.stops),
        "inplace": sorted(p.inplace),
        "later": sorted(aid for aid, _ in p.reschedule_later),
        "deployment": p.create_deployment,
        "canaries": p.desired_canaries,
    }


def expect(place: tuple[str, ...] | list[str] = (), stop: tuple[str, ...] | list[str] = (),
           later: tuple[str, ...] | list[str] = (), deployment: bool = False,
           canaries: dict[str, int] | None = None, inplace: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    return {"place": sorted(place), "stop": sorted(stop), "inplace": sorted(inplace), "later": sorted(later),
            "deployment": deployment, "canaries": canaries or {}}


DEP1_FAILED = deployment("dep1", 1, "failed")
DEP1_CANCELLED = deployment("dep1", 1, "cancelled")
RELEASED = {"DesiredTransition": {"Reschedule": True}, "DeploymentID": "dep1"}

# (name, job being reconciled, allocations, latest deployment of the job, nodes, expected)
CASES: list[tuple[str, dict[str, Any], list[dict[str, Any]], dict[str, Any] | None, list, dict[str, Any]]] = [
    ("new version replaces a running old alloc destructively and gets a deployment",
     version(1), [alloc("v0", 0, 0)], None, [N],
     expect(["web.g[0] destructive <- v0"], [f"v0: {ALLOC_UPDATING}"], deployment=True)),
    ("auto-revert: the broken version's failed alloc waiting for its delayed reschedule is updated to "
     "the stable spec now, in a new deployment",
     version(2), [alloc("v1", 1, 0, "failed", failed_ago=1, **RELEASED)], DEP1_FAILED, [N],
     expect(["web.g[0] destructive <- v1"], [f"v1: {ALLOC_UPDATING}"], deployment=True)),
    ("deploy while a broken rollout is in flight (its deployment just cancelled): same, the new "
     "version replaces the failed alloc",
     version(2), [alloc("v1", 1, 0, "failed", failed_ago=1, **RELEASED)], DEP1_CANCELLED, [N],
     expect(["web.g[0] destructive <- v1"], [f"v1: {ALLOC_UPDATING}"], deployment=True)),
    ("an old failed alloc with no reschedule attempts left is updated to the new version",
     version(2, policy=NO_ATTEMPTS), [alloc("v1", 1, 0, "failed", failed_ago=100,
                                            job_of=version(1, policy=NO_ATTEMPTS))], DEP1_FAILED, [N],
     expect(["web.g[0] destructive <- v1"], [f"v1: {ALLOC_UPDATING}"], deployment=True)),
    ("an old failed alloc due for rescheduling now is rescheduled as the current version, in a new "
     "deployment",
     version(2), [alloc("v1", 1, 0, "failed", failed_ago=60)], None, [N],
     expect(["web.g[0] reschedule <- v1"], [f"v1: {ALLOC_RESCHEDULED}"], deployment=True)),
    ("a failed alloc of the current version waits for its delayed reschedule (no new deployment)",
     version(1), [alloc("v1", 1, 0, "failed", failed_ago=1)], None, [N],
     expect(later=["v1"])),
    ("a failed alloc of the current version with no attempts left stays failed",
     version(1, policy=NO_ATTEMPTS), [alloc("v1", 1, 0, "failed", failed_ago=100,
                                            job_of=version(1, policy=NO_ATTEMPTS))], None, [N],
     expect()),
    ("the current version's failed deployment holds old allocs (no destructive update)",
     version(1), [alloc("v0", 0, 0)], DEP1_FAILED, [N],
     expect()),
    ("MaxParallel 1: the failed old alloc is replaced first, the running old alloc waits its turn",
     version(3, count=2), [alloc("v0", 0, 0, job_of=version(0, count=2)),
                           alloc("v1", 1, 1, "failed", failed_ago=1, job_of=version(1, count=2))], None, [N],
     expect(["web.g[1] destructive <- v1"], [f"v1: {ALLOC_UPDATING}"], later=[], deployment=True)),
    ("MaxParallel 1 with a running old alloc first in line: the waiting failed one keeps its "
     "delayed reschedule",
     version(2, count=2), [alloc("v1", 1, 0, "failed", failed_ago=1, job_of=version(1, count=2)),
                           alloc("v1b", 1, 1, "failed", failed_ago=1, job_of=version(1, count=2))], None, [N],
     expect(["web.g[0] destructive <- v1"], [f"v1: {ALLOC_UPDATING}"], later=["v1b"], deployment=True)),
    ("a lost alloc is replaced by the current version even while the deployment failed",
     version(1), [alloc("v1", 1, 0, "lost")], DEP1_FAILED, [N],
     expect(["web.g[0] place <- v1"], [f"v1: {ALLOC_LOST}"])),
    ("a lost alloc beyond the count is only stopped",
     version(1), [alloc("v1", 1, 0), alloc("v1b", 1, 1, "lost")], None, [N],
     expect(stop=[f"v1b: {ALLOC_LOST}"])),
    ("a lost alloc of an old version: replaced as the new version, in a new deployment",
     version(1), [alloc("v0", 0, 0, "lost")], None, [N],
     expect(["web.g[0] place <- v0"], [f"v0: {ALLOC_LOST}"], deployment=True)),
    ("failing forward: the old deployment's unpromoted canary stops, the new version canaries",
     version(3, canary=1), [alloc("v0", 0, 0), alloc("c1", 1, 0, **canary_of("dep1", healthy=False))],
     deployment("dep1", 1, "cancelled", canaries=1), [N],
     expect(["web.g[0] canary"], [f"c1: {ALLOC_NOT_NEEDED}"], deployment=True, canaries={"g": 1})),
    ("auto-revert after failed canaries: the canary stops; the old alloc already runs the stable spec "
     "and is updated in place, in a new deployment",
     version(2), [alloc("v0", 0, 0), alloc("c1", 1, 0, "failed", **canary_of("dep1", healthy=False))],
     deployment("dep1", 1, "failed", canaries=1), [N],
     expect(stop=[f"c1: {ALLOC_NOT_NEEDED}"], inplace=["v0"], deployment=True)),
    ("a promoted canary of an old deployment is an ordinary alloc: updated destructively",
     version(2), [alloc("c1", 1, 0, **canary_of("dep1", healthy=True))],
     deployment("dep1", 1, "successful", canaries=1, promoted=True), [N],
     expect(["web.g[0] destructive <- c1"], [f"c1: {ALLOC_UPDATING}"], deployment=True)),
    ("a failed canary the deployment watcher released is replaced by a new canary",
     version(1, canary=1), [alloc("v0", 0, 0), alloc("c1", 1, 0, "failed", failed_ago=60,
                                                    **{**canary_of("dep1", healthy=False), **RELEASED})],
     deployment("dep1", 1, canaries=1), [N],
     expect(["web.g[0] canary <- c1"], [f"c1: {ALLOC_RESCHEDULED}"], canaries={"g": 1})),
    ("a failed canary not (yet) released stays: the deployment decides",
     version(1, canary=1), [alloc("v0", 0, 0), alloc("c1", 1, 0, "failed", **canary_of("dep1", healthy=False))],
     deployment("dep1", 1, canaries=1), [N],
     expect(canaries={"g": 1})),
    ("no new allocations while canaries wait for promotion (count went up with the new version)",
     version(1, count=3, canary=1), [alloc("v0", 0, 0), alloc("v0b", 0, 1)], None, [N],
     expect(["web.g[0] canary"], deployment=True, canaries={"g": 1})),
    ("after promotion the count-up placements follow",
     version(1, count=3, canary=1), [alloc("v0", 0, 0), alloc("v0b", 0, 1),
                                     alloc("c1", 1, 0, **canary_of("dep1", healthy=True))],
     deployment("dep1", 1, canaries=1, promoted=True), [N],
     expect(["web.g[1] destructive <- v0b", "web.g[2] place"],
            [f"v0: {ALLOC_NOT_NEEDED}", f"v0b: {ALLOC_UPDATING}"])),
    ("a version that never ran gets a deployment even when nothing can be placed",
     version(2), [alloc("v1", 1, 0, "failed", failed_ago=1)], DEP1_FAILED, [],
     expect(deployment=True)),
    ("the same version evaluated again (allocations of it exist): no second deployment",
     version(1), [alloc("v1", 1, 0)], None, [N],
     expect()),
    ("a new version with count 0 gets no deployment",
     version(1, count=0), [alloc("v0", 0, 0)], None, [N],
     expect(stop=[f"v0: {ALLOC_NOT_NEEDED}"])),
    ("a new version without an update block replaces everything at once, without a deployment",
     version(1, count=2, update=False), [alloc("v0", 0, 0, job_of=version(0, count=2)),
                                         alloc("v0b", 0, 1, "failed", failed_ago=1, job_of=version(0, count=2))],
     None, [N],
     expect(["web.g[0] destructive <- v0", "web.g[1] destructive <- v0b"],
            [f"v0: {ALLOC_UPDATING}", f"v0b: {ALLOC_UPDATING}"])),
]


@pytest.mark.parametrize("name,j,allocs,dep,nodes,want", CASES, ids=[c[0][:60] for c in CASES])
def test_reconcile_across_versions(name: str, j: dict[str, Any], allocs: list[dict[str, Any]],
                                   dep: dict[str, Any] | None, nodes: list[dict[str, Any]],
                                   want: dict[str, Any]) -> None:
    p = compute_plan(j, nodes, allocs, dep, now=NOW, rng=random.Random(1))
    assert outcome(p) == want, name


def test_unplaceable_revert_reports_why_and_stops_nothing() -> None:
    """With nothing placeable the old alloc is not stopped for a replacement that cannot run."""
    p = compute_plan(version(3), [], [alloc("v0", 0, 0)], None, now=NOW,
                     rng=random.Random(1))
    assert p.create_deployment and not p.placed and not p.stops
    assert p.queued == {"g": 1} and "g" in p.failed_tg_allocs
