"""Which allocations of a job to probe, and where: running allocations' `http`/`metrics` ports.

Read through the project's Nomad facade (nomad_triton.nomad.client.NomadClient). Allocation ports
are used rather than the service catalogue because they exist as soon as the allocation is placed:
a starting allocation is then observed as "live but not ready", which the policy needs to count it
as capacity on its way, whereas the catalogue only lists it once its service registered.
"""

from __future__ import annotations

from typing import Any, Protocol

from nomad_triton.probe.observations import Endpoint


class AllocSource(Protocol):
    def job_allocations(self, job_id: str, all_versions: bool = False) -> list[dict[str, Any]]: ...

    def allocation(self, alloc_id: str) -> dict[str, Any]: ...


def alloc_ports(alloc: dict[str, Any]) -> dict[str, str]:
    """Label -> "host:port" from an allocation (AllocatedResources.Shared.Ports, then legacy Networks)."""
    out: dict[str, str] = {}
    shared = ((alloc.get("AllocatedResources") or {}).get("Shared") or {})
    for p in shared.get("Ports") or []:
        if p.get("Label") and p.get("Value"):
            out[p["Label"]] = f"{p.get('HostIP') or '127.0.0.1'}:{p['Value']}"
    nets = list(shared.get("Networks") or [])
    for task_res in ((alloc.get("AllocatedResources") or {}).get("Tasks") or {}).values():
        nets.extend(task_res.get("Networks") or [])
    nets.extend((alloc.get("Resources") or {}).get("Networks") or [])
    for net in nets:
        ip = net.get("IP") or "127.0.0.1"
        for p in (net.get("DynamicPorts") or []) + (net.get("ReservedPorts") or []):
            if p.get("Label") and p.get("Value"):
                out.setdefault(p["Label"], f"{ip}:{p['Value']}")
    return out


def job_endpoints(
    client: AllocSource, job_id: str, group: str | None = None, models: tuple[str, ...] = (),
    http_label: str = "http", metrics_label: str = "metrics", cache: dict[str, dict[str, str]] | None = None,
) -> list[Endpoint]:
    """Endpoints of the job's allocations that Nomad wants running (desired=run, not terminal).

    `cache` (alloc id -> ports) spares one request per allocation per round: an allocation's
    ports never change, so a controller polling every second only reads new allocations.
    """
    endpoints = []
    stubs = client.job_allocations(job_id)
    if cache is not None:
        live_ids = {s["ID"] for s in stubs}
        for gone in [a for a in cache if a not in live_ids]:
            del cache[gone]
    for stub in stubs:
        if stub.get("DesiredStatus") != "run" or stub.get("ClientStatus") not in ("pending", "running"):
            continue
        if group and stub.get("TaskGroup") != group:
            continue
        ports = cache.get(stub["ID"]) if cache is not None else None
        if ports is None:
            ports = alloc_ports(client.allocation(stub["ID"]))
            if cache is not None and ports:
                cache[stub["ID"]] = ports
        if http_label not in ports:
            continue
        endpoints.append(Endpoint(alloc_id=stub["ID"], http=ports[http_label], metrics=ports.get(metrics_label), models=models))
    return sorted(endpoints, key=lambda e: e.alloc_id)
