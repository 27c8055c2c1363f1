"""Table-driven tests of the pure scheduler: feasibility, resources, devices, ports, reconcile.

Failure reasons are compared to Nomad's texts (AllocMetric keys) because users and tools read
them verbatim in `nomad job status` / plan output.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from test_runtime_support import S, http_task, job, node

from nomad_triton.devcluster import feasibility as fz
from nomad_triton.devcluster.reconcile import next_delay_s, tasks_updated
from nomad_triton.devcluster.scheduler import compute_plan

NOW = 1_800_000_000.0


def plan(j: dict[str, Any], nodes: list[dict[str, Any]], allocs: list[dict[str, Any]] | None = None,
         dep: dict[str, Any] | None = None, **kw: Any) -> Any:
    return compute_plan(j, nodes, allocs or [], dep, now=NOW, rng=random.Random(1), **kw)


def with_task(j: dict[str, Any], **changes: Any) -> dict[str, Any]:
    j = copy.deepcopy(j)
    j["TaskGroups"][0]["Tasks"][0].update(changes)
    return j


def with_tg(j: dict[str, Any], **changes: Any) -> dict[str, Any]:
    j = copy.deepcopy(j)
    j["TaskGroups"][0].update(changes)
    return j


def c(lt: str, op: str, r: str = "") -> dict[str, Any]:
    return {"LTarget": lt, "Operand": op, "RTarget": r}


def gpu_task(count: int = 1, name: str = "nvidia/gpu", constraints: list[dict[str, Any]] | None = None) -> dict:
    t = http_task()
    t["Resources"]["Devices"] = [{"Name": name, "Count": count, "Constraints": constraints}]
    return t


BASE = job(checks=False)
N1 = node("n1", attrs={"cpu.numcores": "8"}, meta={"rack": "r1", "tags": "a,b,c"}, node_class="gpu")

# (name, job, nodes, expected): expected is "placed" or a dict of metric fields that must match.
FEASIBILITY = [
    ("raw_exec fits", BASE, [N1], "placed"),
    ("missing driver", with_task(BASE, Driver="docker"), [N1],
     {"NodesFiltered": 1, "ConstraintFiltered": {"missing drivers": 1}, "ClassFiltered": {"gpu": 1}}),
    ("unhealthy driver", BASE, [{**N1, "Drivers": {"raw_exec": {"Detected": True, "Healthy": False}}}],
     {"ConstraintFiltered": {"missing drivers": 1}}),
    ("attr equal fails", with_tg(BASE, Constraints=[c("${attr.kernel.name}", "=", "windows")]), [N1],
     {"ConstraintFiltered": {"${attr.kernel.name} = windows": 1}}),
    ("attr equal passes", with_tg(BASE, Constraints=[c("${attr.kernel.name}", "=", "linux")]), [N1], "placed"),
    ("datacenter !=", with_tg(BASE, Constraints=[c("${node.datacenter}", "!=", "dc1")]), [N1],
     {"ConstraintFiltered": {"${node.datacenter} != dc1": 1}}),
    ("node class", with_tg(BASE, Constraints=[c("${node.class}", "=", "gpu")]), [N1], "placed"),
    ("meta", with_tg(BASE, Constraints=[c("${meta.rack}", "=", "r2")]), [N1],
     {"ConstraintFiltered": {"${meta.rack} = r2": 1}}),
    ("is_set", with_tg(BASE, Constraints=[c("${meta.rack}", "is_set")]), [N1], "placed"),
    ("is_not_set", with_tg(BASE, Constraints=[c("${meta.rack}", "is_not_set")]), [N1],
     {"ConstraintFiltered": {"${meta.rack} is_not_set ": 1}}),
    ("regexp", with_tg(BASE, Constraints=[c("${attr.cpu.arch}", "regexp", "^amd")]), [N1], "placed"),
    ("version ok", with_tg(BASE, Constraints=[c("${attr.nomad.version}", "version", ">= 1.8, < 2.0")]), [N1],
     "placed"),
    ("version too old", with_tg(BASE, Constraints=[c("${attr.nomad.version}", "version", ">= 1.10")]), [N1],
     {"ConstraintFiltered": {"${attr.nomad.version} version >= 1.10": 1}}),
    ("set_contains", with_tg(BASE, Constraints=[c("${meta.tags}", "set_contains", "c,a")]), [N1], "placed"),
    ("set_contains missing", with_tg(BASE, Constraints=[c("${meta.tags}", "set_contains", "d")]), [N1],
     {"ConstraintFiltered": {"${meta.tags} set_contains d": 1}}),
    ("numeric >", with_tg(BASE, Constraints=[c("${attr.cpu.numcores}", ">", "4")]), [N1], "placed"),
    ("numeric > not lexical", with_tg(BASE, Constraints=[c("${attr.cpu.numcores}", ">", "16")]), [N1],
     {"ConstraintFiltered": {"${attr.cpu.numcores} > 16": 1}}),
    ("job-level constraint", {**BASE, "Constraints": [c("${attr.cpu.arch}", "=", "arm64")]}, [N1],
     {"ConstraintFiltered": {"${attr.cpu.arch} = arm64": 1}}),
    ("memory exhausted", with_task(BASE, Resources={"CPU": 100, "MemoryMB": 99999}), [N1],
     {"NodesExhausted": 1, "DimensionExhausted": {"memory": 1}, "ClassExhausted": {"gpu": 1}}),
    ("cpu exhausted", with_task(BASE, Resources={"CPU": 99999, "MemoryMB": 64}), [N1],
     {"NodesExhausted": 1, "DimensionExhausted": {"cpu": 1}}),
    ("gpu on cpu node", with_tg(BASE, Tasks=[gpu_task()]), [N1],
     {"ConstraintFiltered": {"missing devices": 1}}),
    ("gpu fits", with_tg(BASE, Tasks=[gpu_task()]), [node("g", gpus=2)], "placed"),
    ("gpu by model", with_tg(BASE, Tasks=[gpu_task(name="nvidia/gpu/A100")]), [node("g", gpus=1)], "placed"),
    ("gpu wrong model", with_tg(BASE, Tasks=[gpu_task(name="nvidia/gpu/H100")]), [node("g", gpus=1)],
     {"ConstraintFiltered": {"missing devices": 1}}),
    ("gpu type only", with_tg(BASE, Tasks=[gpu_task(name="gpu")]), [node("g", gpus=1)], "placed"),
    ("gpu count too high", with_tg(BASE, Tasks=[gpu_task(3)]), [node("g", gpus=2)],
     {"ConstraintFiltered": {"missing devices": 1}}),
    ("gpu memory units", with_tg(BASE, Tasks=[gpu_task(constraints=[c("${device.attr.memory}", ">=", "16 GiB")])]),
     [node("g", gpus=1, gpu_memory="40 GiB")], "placed"),
    ("gpu memory too small",
     with_tg(BASE, Tasks=[gpu_task(constraints=[c("${device.attr.memory}", ">=", "80 GiB")])]),
     [node("g", gpus=1, gpu_memory="40 GiB")], {"ConstraintFiltered": {"missing devices": 1}}),
    ("gpu memory MiB vs GiB", with_tg(BASE, Tasks=[gpu_task(constraints=[c("${device.attr.memory}", ">", "40000 MiB")])]),
     [node("g", gpus=1, gpu_memory="40 GiB")], "placed"),
    ("gpu model constraint", with_tg(BASE, Tasks=[gpu_task(constraints=[c("${device.model}", "=", "A100")])]),
     [node("g", gpus=1)], "placed"),
    ("gpu unhealthy instance", with_tg(BASE, Tasks=[gpu_task()]),
     [{**node("g", gpus=1), "NodeResources": {**node("g", gpus=1)["NodeResources"], "Devices": [
         {**node("g", gpus=1)["NodeResources"]["Devices"][0], "Instances": [{"ID": "x", "Healthy": False}]}]}}],
     {"ConstraintFiltered": {"missing devices": 1}}),
    ("other pool", {**BASE, "NodePool": "gpu"}, [N1], {"NodesInPool": 0, "NodesEvaluated": 0, "NodesAvailable": {}}),
    ("pool all", {**BASE, "NodePool": "all"}, [node("p", pool="gpu")], "placed"),
    ("named pool", {**BASE, "NodePool": "gpu"}, [node("p", pool="gpu"), N1], "placed"),
    ("dc glob", {**BASE, "Datacenters": ["dc*"]}, [N1], "placed"),
    ("dc mismatch", {**BASE, "Datacenters": ["eu-*"]}, [N1],
     {"NodesInPool": 1, "NodesEvaluated": 0, "NodesAvailable": {}}),
    ("node down", BASE, [{**N1, "Status": "down"}], {"NodesEvaluated": 0, "NodesAvailable": {}}),
    ("node ineligible", BASE, [{**N1, "SchedulingEligibility": "ineligible"}], {"NodesEvaluated": 0}),
]


@pytest.mark.parametrize("name,j,nodes,expected", FEASIBILITY, ids=[f[0] for f in FEASIBILITY])
def test_feasibility(name: str, j: dict[str, Any], nodes: list[dict[str, Any]], expected: Any) -> None:
    p = plan(j, nodes)
    if expected == "placed":
        assert len(p.placed) == 1 and not p.failed_tg_allocs, p.failed_tg_allocs
        return
    assert not p.placed
    m = p.failed_tg_allocs["g"]
    for key, want in expected.items():
        assert m[key] == want, (key, m)
    # Nomad's AllocMetric counts each evaluated node once, under one reason.
    assert sum((m["ConstraintFiltered"] or {}).values()) == m["NodesFiltered"], m
    assert sum((m["DimensionExhausted"] or {}).values()) == m["NodesExhausted"], m
    assert m["NodesFiltered"] + m["NodesExhausted"] == m["NodesEvaluated"], m
    assert p.queued == {"g": 1}


def test_metric_counts_every_node_and_coalesces_failures() -> None:
    nodes = [node("a", dc="dc1"), node("b", dc="dc2", drivers=("docker",)), node("c", dc="dc2", mem=32)]
    p = plan(with_tg(BASE, Count=3), nodes + [node("d", pool="other")])
    # a takes all three (4 GiB / 64 MiB each), b lacks raw_exec, c lacks memory
    assert len(p.placed) == 3 and {x.node["Name"] for x in p.placed} == {"a"}
    p = plan(with_task(with_tg(BASE, Count=2), Resources={"CPU": 100, "MemoryMB": 3000}), nodes)
    assert len(p.placed) == 1
    m = p.failed_tg_allocs["g"]
    assert m["NodesEvaluated"] == 3 and m["NodesInPool"] == 3
    assert m["NodesAvailable"] == {"dc1": 1, "dc2": 2}
    assert m["ConstraintFiltered"] == {"missing drivers": 1}
    assert m["DimensionExhausted"] == {"memory": 2} and m["NodesExhausted"] == 2
    assert m["CoalescedFailures"] == 0 and m["AllocationTime"] > 0
    p = plan(with_task(with_tg(BASE, Count=4), Resources={"CPU": 100, "MemoryMB": 3000}), nodes)
    assert p.failed_tg_allocs["g"]["CoalescedFailures"] == 2 and p.queued == {"g": 3}


def _alloc(j: dict[str, Any], i: int, n: dict[str, Any], *, status: str = "running", desired: str = "run",
           cpu: int = 100, mem: int = 64, ports: tuple[int, ...] = (), devices: list[str] | None = None,
           version: int | None = None, **extra: Any) -> dict[str, Any]:
    jj = copy.deepcopy(j)
    if version is not None:
        jj["Version"] = version
    return {
        "ID": f"a{i}-{j['ID']}-{jj['Version']}", "Name": f"{j['ID']}.g[{i}]", "Namespace": "default",
        "JobID": j["ID"], "Job": jj, "TaskGroup": "g", "NodeID": n["ID"], "DesiredStatus": desired,
        "ClientStatus": status, "CreateIndex": 10 + i, "DeploymentID": "", "DeploymentStatus": None,
        "AllocatedResources": {
            "Tasks": {"web": {"Cpu": {"CpuShares": cpu}, "Memory": {"MemoryMB": mem},
                              "Devices": [{"Vendor": "nvidia", "Type": "gpu", "Name": "A100",
                                           "DeviceIDs": devices}] if devices else None}},
            "Shared": {"Ports": [{"Label": "http", "Value": p, "To": 0, "HostIP": "127.0.0.1"} for p in ports]},
        },
        **extra,
    }


def test_resources_are_summed_over_live_allocs_on_the_node() -> None:
    n = node("n", cpu=1000, mem=1000, gpus=2)
    other = job("other", checks=False)
    j = with_task(BASE, Resources={"CPU": 300, "MemoryMB": 300, "Devices": [{"Name": "nvidia/gpu", "Count": 1}]})
    busy = [_alloc(other, 0, n, cpu=400, mem=400, devices=["GPU-n-0"]),
            _alloc(other, 1, n, cpu=400, mem=100, status="complete", devices=["GPU-n-1"])]  # terminal: free
    p = plan(j, [n], busy)
    assert len(p.placed) == 1
    assert p.placed[0].offer.tasks["web"]["Devices"][0]["DeviceIDs"] == ["GPU-n-1"]
    busy.append(_alloc(other, 2, n, cpu=400, mem=100))
    p = plan(j, [n], busy)
    assert p.failed_tg_allocs["g"]["DimensionExhausted"] == {"cpu": 1}
    busy[-1] = _alloc(other, 2, n, cpu=10, mem=10, devices=["GPU-n-1"])
    p = plan(j, [n], busy)
    # One exhausted node, one dimension, under Nomad's key.
    assert p.failed_tg_allocs["g"]["DimensionExhausted"] == {"devices: no devices match request": 1}


def test_dynamic_ports_avoid_ports_in_use_and_the_port_check() -> None:
    n = node("n")
    other = job("other", checks=False)
    taken = tuple(range(20000, 32001))[:-3]  # leave 31998..32000
    busy = [_alloc(other, 0, n, ports=taken)]
    p = plan(with_tg(BASE, Count=2), [n], busy, port_ok=lambda port: port != 31999)
    got = sorted(x.offer.ports[0]["Value"] for x in p.placed)
    assert got == [31998, 32000]
    assert all(x.offer.ports[0]["HostIP"] == "127.0.0.1" for x in p.placed)
    p = plan(with_tg(BASE, Count=3), [n], busy, port_ok=lambda port: port != 31999)
    assert p.failed_tg_allocs["g"]["DimensionExhausted"] == {"network: dynamic port selection failed": 1}


def test_reserved_port_collision() -> None:
    n = node("n")
    j = with_tg(BASE, Networks=[{"Mode": "host", "ReservedPorts": [{"Label": "http", "Value": 8080}]}])
    busy = [_alloc(job("other"), 0, n, ports=(8080,))]
    p = plan(j, [n], busy)
    assert p.failed_tg_allocs["g"]["DimensionExhausted"] == {"network: reserved port collision http=8080": 1}


def test_distinct_hosts() -> None:
    j = with_tg(BASE, Count=3, Constraints=[{"Operand": "distinct_hosts", "RTarget": "true", "LTarget": ""}])
    p = plan(j, [node("a"), node("b")])
    assert sorted(x.node["Name"] for x in p.placed) == ["a", "b"]
    assert p.failed_tg_allocs["g"]["ConstraintFiltered"] == {"distinct_hosts": 2}


# ---- reconcile -----------------------------------------------------------------------------------
N = node("n", cpu=100000, mem=100000)


def names(items: list[Any]) -> list[str]:
    return sorted(x.request.name for x in items)


def test_count_up_fills_lowest_free_indexes() -> None:
    j = with_tg(BASE, Count=4)
    allocs = [_alloc(j, 0, N), _alloc(j, 2, N)]
    p = plan(j, [N], allocs)
    assert names(p.placed) == ["web.g[1]", "web.g[3]"]
    assert p.desired_tg_updates["g"] == {"Place": 2, "Stop": 0, "Migrate": 0, "InPlaceUpdate": 0,
                                         "DestructiveUpdate": 0, "Canary": 0, "Ignore": 2, "Preemptions": 0}


def test_count_down_stops_highest_indexes() -> None:
    j = with_tg(BASE, Count=1)
    allocs = [_alloc(j, i, N) for i in range(3)]
    p = plan(j, [N], allocs)
    assert sorted(s.alloc_id for s in p.stops) == [allocs[1]["ID"], allocs[2]["ID"]]
    assert {s.description for s in p.stops} == {"alloc not needed due to job update"}
    assert p.desired_tg_updates["g"]["Stop"] == 2 and not p.placed


def test_job_stop_stops_everything() -> None:
    j = {**with_tg(BASE, Count=2), "Stop": True}
    allocs = [_alloc(j, 0, N), _alloc(j, 1, N), _alloc(j, 2, N, status="complete", desired="stop")]
    p = plan(j, [N], allocs)
    assert sorted(s.alloc_id for s in p.stops) == [allocs[0]["ID"], allocs[1]["ID"]]
    assert not p.create_deployment


def test_inplace_vs_destructive() -> None:
    old = {**with_tg(BASE, Count=2), "Version": 0}
    meta_only = {**copy.deepcopy(old), "Version": 1}
    meta_only["TaskGroups"][0]["Update"] = {"MaxParallel": 1}
    assert not tasks_updated(old, meta_only, "g")
    env_change = with_task(meta_only, Env={"X": "1"})
    assert tasks_updated(old, env_change, "g")
    svc_change = with_task(meta_only, Services=[{"Name": "x"}])
    assert not tasks_updated(old, svc_change, "g")
    allocs = [_alloc(old, 0, N), _alloc(old, 1, N)]
    p = plan(meta_only, [N], allocs)
    assert sorted(p.inplace) == sorted(a["ID"] for a in allocs) and not p.placed
    assert p.create_deployment  # an update block and a spec change
    p = plan(env_change, [N], allocs)
    # MaxParallel 1: one destructive update now (stop + place with the same name), one waits
    assert len(p.placed) == 1 and p.placed[0].request.destructive
    assert p.placed[0].request.previous_alloc == allocs[0]["ID"] and p.placed[0].request.name == "web.g[0]"
    assert [s.description for s in p.stops] == ["alloc is being updated due to job update"]
    assert p.desired_tg_updates["g"]["DestructiveUpdate"] == 1 and p.desired_tg_updates["g"]["Ignore"] == 1


def _dep(j: dict[str, Any], **state: Any) -> dict[str, Any]:
    st = {"Promoted": False, "DesiredCanaries": 0, "DesiredTotal": j["TaskGroups"][0]["Count"], **state}
    return {"ID": "dep1", "JobVersion": j["Version"], "Status": "running", "TaskGroups": {"g": st}}


def test_max_parallel_counts_unhealthy_new_allocs() -> None:
    old = {**with_tg(BASE, Count=3), "Version": 0}
    new = with_task({**old, "Version": 1}, Env={"X": "1"})
    new["TaskGroups"][0]["Update"] = {"MaxParallel": 2}
    dep = _dep(new)
    allocs = [_alloc(old, 0, N), _alloc(old, 1, N),
              _alloc(new, 2, N, version=1, DeploymentID="dep1", DeploymentStatus={"Healthy": None})]
    p = plan(new, [N], allocs, dep)
    assert len(p.placed) == 1  # 2 parallel minus 1 still unhealthy
    allocs[2]["DeploymentStatus"] = {"Healthy": True}
    p = plan(new, [N], allocs, dep)
    assert len(p.placed) == 2
    p = plan(new, [N], allocs, {**dep, "Status": "failed"})
    assert not p.placed  # a failed deployment stops the rollout


def test_canaries_then_promotion() -> None:
    old = {**with_tg(BASE, Count=2), "Version": 0}
    new = with_task({**old, "Version": 1}, Env={"X": "1"})
    new["TaskGroups"][0]["Update"] = {"MaxParallel": 1, "Canary": 1}
    allocs = [_alloc(old, 0, N), _alloc(old, 1, N)]
    p = plan(new, [N], allocs)
    assert p.create_deployment and p.desired_canaries == {"g": 1}
    assert len(p.placed) == 1 and p.placed[0].request.canary and not p.stops
    assert p.desired_tg_updates["g"]["Canary"] == 1
    dep = _dep(new, DesiredCanaries=1)
    canary = _alloc(new, 0, N, version=1, DeploymentID="dep1", DeploymentStatus={"Healthy": True, "Canary": True})
    canary["ID"] = "canary"
    p = plan(new, [N], allocs + [canary], dep)
    assert not p.placed and not p.stops  # waiting for promotion
    dep["TaskGroups"]["g"]["Promoted"] = True
    p = plan(new, [N], allocs + [canary], dep)
    # the old alloc sharing the canary's name stops; the other is replaced destructively
    assert [s.alloc_id for s in p.stops if s.description == "alloc not needed due to job update"] == [allocs[0]["ID"]]
    assert [x.request.previous_alloc for x in p.placed] == [allocs[1]["ID"]]


def test_reschedule_now_later_and_exhausted() -> None:
    pol = {"Attempts": 1, "Interval": int(3600 * S), "Delay": int(5 * S), "DelayFunction": "constant",
           "MaxDelay": 0, "Unlimited": False}
    j = with_tg(BASE, ReschedulePolicy=pol)
    failed = _alloc(j, 0, N, status="failed", ModifyTime=int((NOW - 10) * S))
    p = plan(j, [N], [failed])
    assert len(p.placed) == 1 and p.placed[0].request.reschedule
    assert p.placed[0].request.reschedule_events[0]["PrevAllocID"] == failed["ID"]
    assert [s.description for s in p.stops] == ["alloc was rescheduled because it failed"]
    recent = _alloc(j, 0, N, status="failed", ModifyTime=int((NOW - 1) * S))
    p = plan(j, [N], [recent])
    assert not p.placed and p.reschedule_later == [(recent["ID"], NOW - 1 + 5)]
    spent = _alloc(j, 0, N, status="failed", ModifyTime=int((NOW - 10) * S),
                   RescheduleTracker={"Events": [{"RescheduleTime": int((NOW - 100) * S)}]})
    p = plan(j, [N], [spent])
    assert not p.placed and not p.reschedule_later and not p.stops
    replaced = _alloc(j, 0, N, status="failed", NextAllocation="x")
    p = plan(j, [N], [replaced])
    assert names(p.placed) == ["web.g[0]"] and not p.placed[0].request.reschedule


@pytest.mark.parametrize("fn,events,want", [
    ("constant", 3, 5.0), ("exponential", 0, 5.0), ("exponential", 3, 40.0), ("exponential", 10, 60.0),
    ("fibonacci", 0, 5.0), ("fibonacci", 1, 5.0), ("fibonacci", 2, 10.0), ("fibonacci", 4, 25.0),
])
def test_reschedule_delay_functions(fn: str, events: int, want: float) -> None:
    pol = {"Delay": int(5 * S), "DelayFunction": fn, "MaxDelay": int(60 * S)}
    assert next_delay_s(pol, [{}] * events) == want


@pytest.mark.parametrize("op,lv,rv,ok", [
    ("=", "16 GiB", "16384 MiB", True), ("<", "8 GiB", "16 GiB", True), (">=", "1.5 GHz", "1500 MHz", True),
    ("version", "1.9.3", "~> 1.9", True), ("version", "2.0.0", "~> 1.9", False),
    ("set_contains_any", "a,b", "x,b", True), ("regexp", "abc", "[", False), ("!=", "a", "b", True),
])
def test_operands(op: str, lv: str, rv: str, ok: bool) -> None:
    assert fz.check_operand(op, lv, rv, True, True) is ok


@pytest.mark.parametrize("unlimited", [False, True])
def test_a_new_version_replaces_a_failed_alloc_of_the_old_one(unlimited: bool) -> None:
    """A fix or a revert after a failed rollout places again: the failed old-version alloc (never
    rescheduled, or not due yet) gets the new version's destructive update, as in Nomad."""
    n = node("n")
    policy = {"Attempts": 0, "Interval": 0, "Delay": int(3600 * S), "DelayFunction": "constant", "MaxDelay": 0,
              "Unlimited": unlimited}
    old = with_tg(BASE, ReschedulePolicy=policy, Update={"MaxParallel": 1})
    failed = _alloc(old, 0, n, status="failed", ModifyTime=int(NOW * S))  # failed just now
    same = plan(old, [n], [failed])
    assert same.placed == []  # the failed alloc's own version: not replaced before its reschedule time
    new = with_task(old, Env={"RELEASE": "fixed"})
    new["Version"] = 1
    p = plan(new, [n], [failed])
    assert len(p.placed) == 1 and p.create_deployment
    assert [s.alloc_id for s in p.stops] == [failed["ID"]]
