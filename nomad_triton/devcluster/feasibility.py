"""Node feasibility and resource fitting: the "which nodes could run this group" half of placement.

Why a separate module: Nomad's scheduler is a pipeline of feasibility checkers (drivers,
constraints, devices, distinct_hosts) followed by a bin-packing ranker (cpu, memory, devices,
ports). Each rejected node is recorded in an AllocMetric whose texts users read in
`nomad job status` / plan output (`Constraint "missing drivers" filtered 1 node`), so the wording
here follows Nomad's: constraint strings are `"<LTarget> <Operand> <RTarget>"`, driver and
device filters are "missing drivers" / "missing devices", exhaustion dimensions are "cpu",
"memory", "devices: no devices match request" and "network: ...".

Everything here is pure: dicts in, decisions out.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

PORT_MIN = 20000
PORT_MAX = 32000

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
    "tb": 1000**4,
    "tib": 1024**4,
    "hz": 1,
    "khz": 1000,
    "mhz": 1000**2,
    "ghz": 1000**3,
    "mw": 0.001,
    "w": 1,
    "kw": 1000,
}
_QTY = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def new_metric() -> dict[str, Any]:
    """An empty Nomad AllocMetric (the JSON shape of FailedTGAllocs values)."""
    return {
        "NodesEvaluated": 0,
        "NodesFiltered": 0,
        "NodesInPool": 0,
        "NodesAvailable": {},
        "ClassFiltered": None,
        "ConstraintFiltered": None,
        "NodesExhausted": 0,
        "ClassExhausted": None,
        "DimensionExhausted": None,
        "QuotaExhausted": None,
        "ResourcesExhausted": None,
        "ScoreMetaData": None,
        "Scores": None,
        "AllocationTime": 0,
        "CoalescedFailures": 0,
    }


def _bump(metric: dict[str, Any], key: str, reason: str) -> None:
    metric[key] = metric[key] or {}
    metric[key][reason] = metric[key].get(reason, 0) + 1


def filter_node(metric: dict[str, Any], node: dict[str, Any], reason: str) -> None:
    """Record a node rejected by a feasibility check (Nomad's FilterNode)."""
    metric["NodesFiltered"] += 1
    cls = node.get("NodeClass") or ""
    if cls:
        _bump(metric, "ClassFiltered", cls)
    _bump(metric, "ConstraintFiltered", reason)


def exhaust_node(metric: dict[str, Any], node: dict[str, Any], dimension: str) -> None:
    """Record a feasible node that lacked free resources (Nomad's ExhaustedNode)."""
    metric["NodesExhausted"] += 1
    cls = node.get("NodeClass") or ""
    if cls:
        _bump(metric, "ClassExhausted", cls)
    _bump(metric, "DimensionExhausted", dimension)


# ---- value parsing ---------------------------------------------------------------------------
def parse_quantity(value: Any) -> float | None:
    """"16 GiB" -> bytes, "1.5 GHz" -> Hz, 7 -> 7.0; None when not a number with a known unit.

    Device attributes in Nomad's API are typed (`{"Int": 40, "Unit": "GiB"}`); devcluster config
    may give them as strings. Both forms compare numerically, as Nomad compares units.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        num = next((value[k] for k in ("Int", "Float") if value.get(k) is not None), None)
        if num is None:
            return None
        return float(num) * _UNITS.get(str(value.get("Unit") or "").lower(), 1)
    if isinstance(value, str):
        m = _QTY.match(value)
        if m and m.group(2).lower() in _UNITS:
            return float(m.group(1)) * _UNITS[m.group(2).lower()]
    return None


_NUMBER = re.compile(r"^\s*([-+]?\d+)(?:(\.\d+))?\s*([A-Za-z/]*)\s*$")


def typed_attribute(text: str) -> dict[str, Any]:
    """A device attribute as Nomad's API carries it (psstructs.Attribute): "40 GiB" ->
    {"Int": 40, "Unit": "GiB"}, "1.5" -> {"Float": 1.5}, "true" -> {"Bool": true}, other text ->
    {"String": ...}; Unit is always present ("" when none), as Nomad's JSON has it."""
    if text in ("true", "false"):
        return {"Bool": text == "true", "Unit": ""}
    m = _NUMBER.match(text)
    if m and (not m.group(3) or m.group(3).lower() in _UNITS):
        if m.group(2):
            return {"Float": float(m.group(1) + m.group(2)), "Unit": m.group(3)}
        return {"Int": int(m.group(1)), "Unit": m.group(3)}
    return {"String": text, "Unit": ""}


def _attr_str(value: Any) -> str:
    if isinstance(value, dict):
        for k in ("String", "Int", "Float", "Bool"):
            if value.get(k) is not None:
                v = value[k]
                unit = value.get("Unit") or ""
                if k in ("Int", "Float"):
                    return f"{v} {unit}".strip()
                return str(v).lower() if k == "Bool" else str(v)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _version_tuple(v: str) -> tuple[int, ...] | None:
    m = re.match(r"^\s*v?(\d+(?:\.\d+)*)", v)
    if not m:
        return None
    return tuple(int(p) for p in m.group(1).split("."))


def _cmp(op: str, a: Any, b: Any) -> bool:
    return {
        "<": a < b,
        "<=": a <= b,
        ">": a > b,
        ">=": a >= b,
        "=": a == b,
        "==": a == b,
        "!=": a != b,
    }[op]


def check_version(lval: str, spec: str) -> bool:
    """Nomad `version`/`semver` operand: every comma-separated clause like ">= 1.2" must hold."""
    lv = _version_tuple(lval)
    if lv is None:
        return False
    for clause in spec.split(","):
        m = re.match(r"^\s*(>=|<=|!=|>|<|=|~>)?\s*(\S+)\s*$", clause)
        if not m:
            return False
        op, ver = m.group(1) or "=", m.group(2)
        rv = _version_tuple(ver)
        if rv is None:
            return False
        n = max(len(lv), len(rv))
        a, b = lv + (0,) * (n - len(lv)), rv + (0,) * (n - len(rv))
        if op == "~>":
            prefix = rv[:-1] if len(rv) > 1 else rv
            if not (a >= b and lv[: len(prefix)] == prefix):
                return False
        elif not _cmp(op, a, b):
            return False
    return True


def check_operand(op: str, lval: Any, rval: Any, lfound: bool, rfound: bool) -> bool:
    """Nomad's checkConstraint for one pair of resolved values."""
    if op in ("distinct_hosts", "distinct_property"):
        return True
    if op in ("!=", "not"):
        if not (lfound or rfound):
            return True
        return _attr_str(lval) != _attr_str(rval) if lfound and rfound else True
    if op == "is_set":
        return lfound
    if op == "is_not_set":
        return not lfound
    if not (lfound and rfound):
        return False
    ls, rs = _attr_str(lval), _attr_str(rval)
    if op in ("=", "==", "is"):
        lq, rq = parse_quantity(lval), parse_quantity(rval)
        return ls == rs or (lq is not None and rq is not None and lq == rq)
    if op in ("<", "<=", ">", ">="):
        lq, rq = parse_quantity(lval), parse_quantity(rval)
        if lq is not None and rq is not None:
            return _cmp(op, lq, rq)
        return _cmp(op, ls, rs)
    if op in ("version", "semver"):
        return check_version(ls, rs)
    if op == "regexp":
        try:
            return re.search(rs, ls) is not None
        except re.error:
            return False
    if op in ("set_contains", "set_contains_all"):
        have = {s.strip() for s in ls.split(",")}
        return all(s.strip() in have for s in rs.split(","))
    if op == "set_contains_any":
        have = {s.strip() for s in ls.split(",")}
        return any(s.strip() in have for s in rs.split(","))
    return False


_NODE_TARGETS = {
    "node.unique.id": "ID",
    "node.unique.name": "Name",
    "node.datacenter": "Datacenter",
    "node.class": "NodeClass",
    "node.pool": "NodePool",
}


def resolve_node_target(target: str, node: dict[str, Any]) -> tuple[Any, bool]:
    """Resolve `${attr.x}` / `${node.*}` / `${meta.x}` against a node; literals resolve to themselves."""
    if not (target.startswith("${") and target.endswith("}")):
        return target, True
    key = target[2:-1]
    if key in _NODE_TARGETS:
        val = node.get(_NODE_TARGETS[key])
        return val, val not in (None, "")
    if key == "node.region":
        return node.get("Region", "global"), True
    if key.startswith("attr."):
        attrs = node.get("Attributes") or {}
        return attrs.get(key[5:]), key[5:] in attrs
    if key.startswith("meta."):
        meta = node.get("Meta") or {}
        return meta.get(key[5:]), key[5:] in meta
    return None, False


def constraint_text(c: dict[str, Any]) -> str:
    """Nomad's Constraint.String(): `${attr.kernel.name} = linux`."""
    if c.get("Operand") == "distinct_hosts":
        return "distinct_hosts"
    return f"{c.get('LTarget', '')} {c.get('Operand', '')} {c.get('RTarget', '')}"


def node_meets(c: dict[str, Any], node: dict[str, Any]) -> bool:
    lval, lfound = resolve_node_target(str(c.get("LTarget") or ""), node)
    rval, rfound = resolve_node_target(str(c.get("RTarget") or ""), node)
    return check_operand(str(c.get("Operand") or "="), lval, rval, lfound, rfound)


# ---- devices ---------------------------------------------------------------------------------
def device_matches_name(req_name: str, dev: dict[str, Any]) -> bool:
    """`gpu`, `nvidia/gpu` and `nvidia/gpu/A100` all name a device group, from general to exact."""
    parts = req_name.split("/")
    vendor, typ, name = dev.get("Vendor", ""), dev.get("Type", ""), dev.get("Name", "")
    if len(parts) == 1:
        return parts[0] == typ
    if len(parts) == 2:
        return parts[0] == vendor and parts[1] == typ
    return parts[0] == vendor and parts[1] == typ and "/".join(parts[2:]) == name


def _resolve_device_target(target: str, dev: dict[str, Any]) -> tuple[Any, bool]:
    if not (target.startswith("${") and target.endswith("}")):
        return target, True
    key = target[2:-1]
    fixed = {"device.model": "Name", "device.vendor": "Vendor", "device.type": "Type"}
    if key in fixed:
        return dev.get(fixed[key]), True
    if key.startswith("device.attr."):
        attrs = dev.get("Attributes") or {}
        return attrs.get(key[12:]), key[12:] in attrs
    return None, False


def device_meets(req: dict[str, Any], dev: dict[str, Any]) -> bool:
    """Does a node device group satisfy a request's name and constraints (ignoring count)?"""
    if not device_matches_name(str(req.get("Name", "")), dev):
        return False
    for c in req.get("Constraints") or []:
        lval, lf = _resolve_device_target(str(c.get("LTarget") or ""), dev)
        rval, rf = _resolve_device_target(str(c.get("RTarget") or ""), dev)
        if not check_operand(str(c.get("Operand") or "="), lval, rval, lf, rf):
            return False
    return True


def healthy_ids(dev: dict[str, Any]) -> list[str]:
    return [i["ID"] for i in dev.get("Instances") or [] if i.get("Healthy", True)]


# ---- usage accounting ------------------------------------------------------------------------
@dataclass
class NodeUsage:
    """What the non-terminal allocations (existing + planned) already hold on one node."""

    cpu: int = 0
    memory_mb: int = 0
    device_ids: set[str] = field(default_factory=set)


def alloc_is_terminal(alloc: dict[str, Any]) -> bool:
    """Nomad's Allocation.TerminalStatus(): desired stop/evict or client complete/failed/lost."""
    return alloc.get("DesiredStatus") in ("stop", "evict") or alloc.get("ClientStatus") in (
        "complete",
        "failed",
        "lost",
    )


def add_usage(usage: NodeUsage, allocated: dict[str, Any]) -> None:
    for tr in (allocated.get("Tasks") or {}).values():
        usage.cpu += int((tr.get("Cpu") or {}).get("CpuShares", 0))
        usage.memory_mb += int((tr.get("Memory") or {}).get("MemoryMB", 0))
        for d in tr.get("Devices") or []:
            usage.device_ids.update(d.get("DeviceIDs") or [])


def used_ports(allocs: Iterable[dict[str, Any]]) -> set[int]:
    """Host ports held by non-terminal allocations (every node shares 127.0.0.1 in devcluster)."""
    out: set[int] = set()
    for a in allocs:
        if alloc_is_terminal(a):
            continue
        shared = (a.get("AllocatedResources") or {}).get("Shared") or {}
        for p in shared.get("Ports") or []:
            out.add(int(p["Value"]))
    return out


# ---- the per-node pipeline -------------------------------------------------------------------
def task_drivers(tg: dict[str, Any]) -> set[str]:
    return {t.get("Driver", "") for t in tg.get("Tasks") or []}


def node_has_drivers(node: dict[str, Any], drivers: set[str]) -> bool:
    have = node.get("Drivers") or {}
    for d in drivers:
        info = have.get(d)
        if not info or not info.get("Detected") or not info.get("Healthy", True):
            return False
    return True


def feasible(
    job: dict[str, Any],
    tg: dict[str, Any],
    node: dict[str, Any],
    metric: dict[str, Any],
    job_nodes_in_use: set[str],
) -> bool:
    """Run Nomad's feasibility checkers in order; on rejection record the reason and say False."""
    if not node_has_drivers(node, task_drivers(tg)):
        filter_node(metric, node, "missing drivers")
        return False
    constraints = list(job.get("Constraints") or []) + list(tg.get("Constraints") or [])
    for t in tg.get("Tasks") or []:
        constraints += list(t.get("Constraints") or [])
    for c in constraints:
        if c.get("Operand") == "distinct_hosts":
            continue
        if not node_meets(c, node):
            filter_node(metric, node, constraint_text(c))
            return False
    devices = (node.get("NodeResources") or {}).get("Devices") or []
    for t in tg.get("Tasks") or []:
        for req in (t.get("Resources") or {}).get("Devices") or []:
            want = int(req.get("Count") or 1)
            if not any(device_meets(req, d) and len(healthy_ids(d)) >= want for d in devices):
                # One node, one reason, under Nomad's own key: the ConstraintFiltered counts add
                # up to NodesFiltered, as every client summing them expects.
                filter_node(metric, node, "missing devices")
                return False
    for c in constraints:
        if c.get("Operand") == "distinct_hosts" and str(c.get("RTarget", "true")).lower() != "false":
            if node["ID"] in job_nodes_in_use:
                filter_node(metric, node, "distinct_hosts")
                return False
    return True


@dataclass
class Offer:
    """Resources granted on one node for one allocation (becomes AllocatedResources)."""

    tasks: dict[str, dict[str, Any]]
    ports: list[dict[str, Any]]
    cpu: int
    memory_mb: int
    device_ids: set[str]


def _assign_ports(
    tg: dict[str, Any],
    taken: set[int],
    pick: Callable[[set[int]], int | None],
) -> tuple[list[dict[str, Any]] | None, str]:
    ports: list[dict[str, Any]] = []
    local = set(taken)
    for net in tg.get("Networks") or []:
        for rp in net.get("ReservedPorts") or []:
            value = int(rp["Value"])
            if value in local:
                return None, f"network: reserved port collision {rp.get('Label')}={value}"
            local.add(value)
            ports.append({"Label": rp["Label"], "Value": value, "To": int(rp.get("To") or 0),
                          "HostIP": "127.0.0.1"})
        for dp in net.get("DynamicPorts") or []:
            value = pick(local)
            if value is None:
                return None, "network: dynamic port selection failed"
            local.add(value)
            ports.append({"Label": dp["Label"], "Value": value, "To": int(dp.get("To") or 0),
                          "HostIP": "127.0.0.1"})
    return ports, ""


def fit(
    tg: dict[str, Any],
    node: dict[str, Any],
    usage: NodeUsage,
    taken_ports: set[int],
    pick_port: Callable[[set[int]], int | None],
    metric: dict[str, Any],
) -> Offer | None:
    """Bin-pack check: cpu, memory, devices, then ports. Records the exhausted dimension."""
    res = node.get("NodeResources") or {}
    reserved = node.get("ReservedResources") or {}
    cap_cpu = int((res.get("Cpu") or {}).get("CpuShares", 0)) - int(
        (reserved.get("Cpu") or {}).get("CpuShares", 0)
    )
    cap_mem = int((res.get("Memory") or {}).get("MemoryMB", 0)) - int(
        (reserved.get("Memory") or {}).get("MemoryMB", 0)
    )
    cpu = sum(int((t.get("Resources") or {}).get("CPU") or 0) for t in tg.get("Tasks") or [])
    mem = sum(int((t.get("Resources") or {}).get("MemoryMB") or 0) for t in tg.get("Tasks") or [])
    if usage.cpu + cpu > cap_cpu:
        exhaust_node(metric, node, "cpu")
        return None
    if usage.memory_mb + mem > cap_mem:
        exhaust_node(metric, node, "memory")
        return None
    taken_ids = set(usage.device_ids)
    tasks: dict[str, dict[str, Any]] = {}
    for t in tg.get("Tasks") or []:
        r = t.get("Resources") or {}
        devs_out: list[dict[str, Any]] = []
        for req in r.get("Devices") or []:
            want = int(req.get("Count") or 1)
            granted = None
            for d in (res.get("Devices") or []):
                if not device_meets(req, d):
                    continue
                free = [i for i in healthy_ids(d) if i not in taken_ids]
                if len(free) >= want:
                    granted = (d, free[:want])
                    break
            if granted is None:
                exhaust_node(metric, node, "devices: no devices match request")
                return None
            d, ids = granted
            taken_ids.update(ids)
            devs_out.append({"Vendor": d.get("Vendor"), "Type": d.get("Type"), "Name": d.get("Name"),
                             "DeviceIDs": ids})
        tasks[t["Name"]] = {
            "Cpu": {"CpuShares": int(r.get("CPU") or 0), "ReservedCores": None},
            "Memory": {"MemoryMB": int(r.get("MemoryMB") or 0),
                       "MemoryMaxMB": int(r.get("MemoryMaxMB") or 0)},
            "Devices": devs_out or None,
            "Networks": None,
        }
    ports, why = _assign_ports(tg, taken_ports, pick_port)
    if ports is None:
        exhaust_node(metric, node, why)
        return None
    return Offer(tasks=tasks, ports=ports, cpu=cpu, memory_mb=mem,
                 device_ids=taken_ids - usage.device_ids)


def node_in_scope(job: dict[str, Any], node: dict[str, Any]) -> tuple[bool, bool]:
    """(in the job's node pool, and also in one of its datacenters) — Nomad's readyNodesInDCs."""
    pool = job.get("NodePool") or "default"
    in_pool = pool == "all" or (node.get("NodePool") or "default") == pool
    dcs = job.get("Datacenters") or ["*"]
    in_dc = any(fnmatch.fnmatchcase(node.get("Datacenter", ""), g) for g in dcs)
    return in_pool, in_pool and in_dc


def node_ready(node: dict[str, Any]) -> bool:
    return node.get("Status", "ready") == "ready" and node.get(
        "SchedulingEligibility", "eligible"
    ) == "eligible"
