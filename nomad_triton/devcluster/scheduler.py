"""Pure scheduling: job + nodes + allocations + deployment -> what to place, stop and update.

Why pure: this is the logic most worth testing exhaustively (table-driven, no loop, no processes)
and the one `plan` must run without writing anything. The runtime turns a `SchedulePlan` into
store writes and processes.

It follows Nomad's generic (service) scheduler in miniature:
- reconcile each task group (`reconcile.py`): count up/down (stop highest indexes first),
  reschedule failed allocs, in-place vs destructive updates, canaries, MaxParallel;
- place each requested allocation (`feasibility.py`): node pool, datacenters, readiness,
  drivers, constraints, devices, then cpu/memory/devices/ports fit; failures become Nomad
  AllocMetric JSON in FailedTGAllocs (CoalescedFailures counts the repeats).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nomad_triton.devcluster import feasibility as fz
from nomad_triton.devcluster.reconcile import GroupResult, Placement, Stop, reconcile_group

__all__ = [
    "PlacedAlloc",
    "Placement",
    "SchedulePlan",
    "Stop",
    "compute_plan",
]


@dataclass
class PlacedAlloc:
    """A placement that found a node, with the resources granted there."""

    request: Placement
    node: dict[str, Any]
    offer: fz.Offer


@dataclass
class SchedulePlan:
    """Everything one evaluation decides. Empty lists mean nothing to do."""

    placed: list[PlacedAlloc] = field(default_factory=list)
    stops: list[Stop] = field(default_factory=list)
    inplace: list[str] = field(default_factory=list)
    reschedule_later: list[tuple[str, float]] = field(default_factory=list)
    failed_tg_allocs: dict[str, dict[str, Any]] = field(default_factory=dict)
    queued: dict[str, int] = field(default_factory=dict)
    desired_tg_updates: dict[str, dict[str, int]] = field(default_factory=dict)
    groups: dict[str, GroupResult] = field(default_factory=dict)
    # deployment decisions (runtime materialises them)
    create_deployment: bool = False
    desired_canaries: dict[str, int] = field(default_factory=dict)


def same_registration(create_index: Any, job: dict[str, Any]) -> bool:
    """False for objects of an earlier instance of a job ID (purged, then registered again):
    Nomad's scheduler and reconciler compare Job.CreateIndex / JobCreateIndex for that."""
    return not create_index or not job.get("CreateIndex") or create_index == job.get("CreateIndex")


def _job_allocs(job: dict[str, Any], allocs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ns = job.get("Namespace", "default")
    return [a for a in allocs if a.get("JobID") == job["ID"] and a.get("Namespace", "default") == ns
            and same_registration((a.get("Job") or {}).get("CreateIndex"), job)]


def make_port_picker(rng: random.Random, port_ok: Callable[[int], bool]) -> Callable[[set[int]], int | None]:
    """Random dynamic port in Nomad's default range, skipping taken ones and ones `port_ok` rejects."""

    def pick(taken: set[int]) -> int | None:
        for _ in range(50):
            p = rng.randint(fz.PORT_MIN, fz.PORT_MAX)
            if p not in taken and port_ok(p):
                return p
        # crowded range: scan it once from a random start rather than give up early
        span = fz.PORT_MAX - fz.PORT_MIN + 1
        start = rng.randint(0, span - 1)
        for k in range(span):
            p = fz.PORT_MIN + (start + k) % span
            if p not in taken and port_ok(p):
                return p
        return None

    return pick


def compute_plan(
    job: dict[str, Any] | None,
    nodes: list[dict[str, Any]],
    allocs: list[dict[str, Any]],
    deployment: dict[str, Any] | None,
    *,
    job_id: str = "",
    namespace: str = "default",
    now: float | None = None,
    rng: random.Random | None = None,
    port_ok: Callable[[int], bool] = lambda p: True,
) -> SchedulePlan:
    """Decide one evaluation for a service job.

    `allocs` is every allocation in the cluster (for node usage and ports); `deployment` the
    job's latest deployment (or None). `job` None (purged) or Stop=true stops everything.
    """
    now = time.time() if now is None else now
    rng = rng or random.Random()
    plan = SchedulePlan()
    if job is None:
        mine = [a for a in allocs if a.get("JobID") == job_id and a.get("Namespace", "default") == namespace]
        plan.stops = [Stop(a["ID"], "alloc not needed due to job update") for a in mine
                      if a.get("DesiredStatus") == "run" and not fz.alloc_is_terminal(a)]
        return plan
    mine = _job_allocs(job, allocs)
    current = bool(deployment and deployment.get("JobVersion") == job.get("Version")
                   and same_registration(deployment.get("JobCreateIndex"), job))
    dep = deployment if current else None
    old_dep = deployment if deployment and not current \
        and same_registration(deployment.get("JobCreateIndex"), job) else None
    names = {tg["Name"] for tg in job.get("TaskGroups") or []}
    # groups removed from the job: stop their allocs
    for a in mine:
        if a.get("TaskGroup") not in names and not fz.alloc_is_terminal(a):
            plan.stops.append(Stop(a["ID"], "alloc not needed due to job update"))
    wants_deployment = False
    for tg in job.get("TaskGroups") or []:
        res = reconcile_group(job, tg, [a for a in mine if a.get("TaskGroup") == tg["Name"]], dep, now,
                              old_dep)
        plan.groups[tg["Name"]] = res
        plan.stops += res.stops
        plan.inplace += res.inplace
        plan.reschedule_later += res.reschedule_later
        plan.desired_tg_updates[tg["Name"]] = res.annotations()
        if res.desired_canaries:
            plan.desired_canaries[tg["Name"]] = res.desired_canaries
        # Nomad: a group with an update block and a non-zero count gets a deployment when its
        # version has never run (no allocation of it, whatever can be placed now) or when
        # existing allocations move to it.
        if int((tg.get("Update") or {}).get("MaxParallel") or 0) > 0 and int(tg.get("Count") or 0) > 0 \
                and (not res.had_current or res.updates_spec):
            wants_deployment = True
    plan.create_deployment = (
        wants_deployment and job.get("Type", "service") == "service" and not job.get("Stop") and dep is None
    )
    _place_all(job, nodes, allocs, plan, make_port_picker(rng, port_ok))
    return plan


def _place_all(
    job: dict[str, Any],
    nodes: list[dict[str, Any]],
    allocs: list[dict[str, Any]],
    plan: SchedulePlan,
    pick_port: Callable[[set[int]], int | None],
) -> None:
    stopping = {s.alloc_id for s in plan.stops}
    live = [a for a in allocs if not fz.alloc_is_terminal(a) and a["ID"] not in stopping]
    usage: dict[str, fz.NodeUsage] = {}
    for a in live:
        fz.add_usage(usage.setdefault(a.get("NodeID", ""), fz.NodeUsage()), a.get("AllocatedResources") or {})
    taken_ports = fz.used_ports(live)
    # distinct_hosts counts every live allocation of the job on a node
    job_nodes: dict[str, set[str]] = {}
    for a in live:
        if a.get("JobID") == job["ID"]:
            job_nodes.setdefault(a.get("TaskGroup", ""), set()).add(a.get("NodeID", ""))
    tgs = {tg["Name"]: tg for tg in job.get("TaskGroups") or []}
    for gname, res in plan.groups.items():
        tg = tgs[gname]
        failed_metric: dict[str, Any] | None = None
        for req in res.place:
            t0 = time.perf_counter()
            metric = fz.new_metric()
            in_use = set().union(*job_nodes.values()) if job_nodes else set()
            best: tuple[tuple[Any, ...], dict[str, Any], fz.Offer] | None = None
            for node in sorted(nodes, key=lambda n: n.get("Name", "")):
                in_pool, in_scope = fz.node_in_scope(job, node)
                if in_pool:
                    metric["NodesInPool"] += 1
                if not in_scope:
                    continue
                if not fz.node_ready(node):
                    continue
                dc = node.get("Datacenter", "")
                metric["NodesAvailable"][dc] = metric["NodesAvailable"].get(dc, 0) + 1
                metric["NodesEvaluated"] += 1
                if not fz.feasible(job, tg, node, metric, in_use):
                    continue
                offer = fz.fit(tg, node, usage.get(node["ID"], fz.NodeUsage()), taken_ports, pick_port, metric)
                if offer is None:
                    continue
                # spread the job's allocations, then prefer the least loaded node (stable by name)
                here = sum(1 for a in live if a.get("NodeID") == node["ID"] and a.get("JobID") == job["ID"])
                u = usage.get(node["ID"], fz.NodeUsage())
                score = (here, u.memory_mb, node.get("Name", ""))
                if best is None or score < best[0]:
                    best = (score, node, offer)
            metric["AllocationTime"] = int((time.perf_counter() - t0) * 1e9)
            if best is None:
                if failed_metric is None:
                    failed_metric = metric
                else:
                    failed_metric["CoalescedFailures"] += 1
                plan.queued[gname] = plan.queued.get(gname, 0) + 1
                if req.destructive or req.migrate:
                    # keep the old alloc running rather than stop it with no replacement
                    plan.stops = [s for s in plan.stops if s.alloc_id != req.previous_alloc]
                continue
            _, node, offer = best
            u = usage.setdefault(node["ID"], fz.NodeUsage())
            u.cpu += offer.cpu
            u.memory_mb += offer.memory_mb
            u.device_ids |= offer.device_ids
            taken_ports.update(p["Value"] for p in offer.ports)
            job_nodes.setdefault(gname, set()).add(node["ID"])
            # a placed alloc counts toward the next placement's spread score
            live.append({"ID": "", "NodeID": node["ID"], "JobID": job["ID"], "DesiredStatus": "run",
                         "ClientStatus": "pending"})
            plan.placed.append(PlacedAlloc(req, node, offer))
        if failed_metric is not None:
            plan.failed_tg_allocs[gname] = failed_metric
        plan.queued.setdefault(gname, 0)
