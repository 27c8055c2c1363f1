"""Pre-flight GPU capacity check: are there enough free device instances in the pool for this job?

Why before registering: a job asking for GPUs no node can give is accepted by Nomad and then sits
in a blocked evaluation forever (the #1 "deploy hangs" complaint against Levant and Nomad Pack).
Checking first lets `deploy` warn — or refuse with --strict — naming the device and the numbers.
An allocation's devices must all come from one node, so capacity is counted per node.
The arithmetic is pure; `gather()` does the fetching through the client facade.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nomad_triton.nomad.client import NomadClient

LIVE_CLIENT_STATUS = {"pending", "running"}


def device_matches(request: str, vendor: str, dtype: str, name: str) -> bool:
    """Nomad's device name forms: "<type>", "<vendor>/<type>", "<vendor>/<type>/<name>"."""
    parts = request.split("/")
    if len(parts) == 1:
        return parts[0] == dtype
    if len(parts) == 2:
        return parts == [vendor, dtype]
    return parts == [vendor, dtype, name]


def node_device_ids(node: dict[str, Any], request: str) -> set[str]:
    """Healthy instance IDs of the matching device groups on one node."""
    ids: set[str] = set()
    for group in (node.get("NodeResources") or {}).get("Devices") or []:
        if device_matches(request, group.get("Vendor", ""), group.get("Type", ""), group.get("Name", "")):
            ids.update(i["ID"] for i in group.get("Instances") or [] if i.get("Healthy", True))
    return ids


def used_device_ids(allocs: list[dict[str, Any]], request: str, exclude_job: str | None = None) -> set[str]:
    """Instance IDs held by live allocations (optionally ignoring one job's, which a deploy replaces)."""
    used: set[str] = set()
    for alloc in allocs:
        if alloc.get("ClientStatus") not in LIVE_CLIENT_STATUS or alloc.get("DesiredStatus") != "run":
            continue
        if exclude_job and alloc.get("JobID") == exclude_job:
            continue
        tasks = ((alloc.get("AllocatedResources") or {}).get("Tasks")) or {}
        for res in tasks.values():
            for dev in res.get("Devices") or []:
                if device_matches(request, dev.get("Vendor", ""), dev.get("Type", ""), dev.get("Name", "")):
                    used.update(dev.get("DeviceIDs") or [])
    return used


@dataclass
class CapacityResult:
    device: str
    pool: str
    per_alloc: int
    count: int
    free_by_node: dict[str, int] = field(default_factory=dict)

    @property
    def placeable(self) -> int:
        """How many allocations fit, each needing `per_alloc` instances on one node."""
        if self.per_alloc <= 0:
            return self.count
        return sum(free // self.per_alloc for free in self.free_by_node.values())

    @property
    def free_total(self) -> int:
        return sum(self.free_by_node.values())

    @property
    def ok(self) -> bool:
        return self.placeable >= self.count

    def message(self) -> str:
        if self.per_alloc <= 0:
            return "no devices requested"
        need = f"{self.count} allocation(s) x {self.per_alloc} {self.device}"
        have = (
            f"{self.free_total} free {self.device} instance(s) on {len(self.free_by_node)} eligible node(s) "
            f'in node pool "{self.pool}" (room for {self.placeable} allocation(s))'
        )
        return f"{'enough' if self.ok else 'not enough'} {self.device} capacity: need {need}; {have}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "pool": self.pool,
            "per_alloc": self.per_alloc,
            "count": self.count,
            "free_by_node": self.free_by_node,
            "placeable": self.placeable,
            "ok": self.ok,
        }


def eligible(node: dict[str, Any], pool: str) -> bool:
    return (
        node.get("Status") == "ready"
        and node.get("SchedulingEligibility", "eligible") == "eligible"
        and not node.get("Drain")
        and node.get("NodePool", "default") == pool
    )


def capacity(
    nodes: list[dict[str, Any]],
    allocs_by_node: dict[str, list[dict[str, Any]]],
    *,
    device: str,
    per_alloc: int,
    count: int,
    pool: str,
    job_id: str | None = None,
) -> CapacityResult:
    """Pure: free matching instances per eligible node, minus those live allocations hold."""
    result = CapacityResult(device=device, pool=pool, per_alloc=per_alloc, count=count)
    for node in nodes:
        if not eligible(node, pool):
            continue
        have = node_device_ids(node, device)
        if not have:
            continue
        free = have - used_device_ids(allocs_by_node.get(node["ID"], []), device, exclude_job=job_id)
        result.free_by_node[node.get("Name") or node["ID"]] = len(free)
    return result


def gather(
    client: NomadClient, *, device: str, per_alloc: int, count: int, pool: str, job_id: str | None = None
) -> CapacityResult:
    """Fetch the pool's nodes (full records: the list stub lacks device instances) and their allocations."""
    stubs = [n for n in client.nodes(pool) if eligible(n, pool)]
    nodes = [client.node(stub["ID"]) for stub in stubs]
    allocs = {n["ID"]: client.node_allocations(n["ID"]) for n in nodes}
    return capacity(nodes, allocs, device=device, per_alloc=per_alloc, count=count, pool=pool, job_id=job_id)
