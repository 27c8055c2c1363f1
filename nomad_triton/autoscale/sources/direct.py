"""The direct source: scrape each allocation's Triton (health, readiness, /metrics) ourselves.

No Prometheus needed. Allocations come from Nomad (their `http`/`metrics` ports, see
probe.discovery), probes run concurrently with per-probe deadlines (probe.triton.Prober), and
counters become rates between successive scrapes of the same allocation. One Prober can serve many
targets: its rate tracker is keyed by allocation ID, and this source forgets an allocation only
when the target it belonged to stops listing it.
"""

from __future__ import annotations

import asyncio

from nomad_triton.autoscale.sources import Target
from nomad_triton.probe.discovery import AllocSource, job_endpoints
from nomad_triton.probe.observations import Observation
from nomad_triton.probe.triton import Prober


class DirectSource:
    def __init__(self, client: AllocSource, prober: Prober) -> None:
        self.client = client
        self.prober = prober
        self._ports: dict[str, dict[str, dict[str, str]]] = {}  # target key -> alloc id -> ports
        self._allocs: dict[str, set[str]] = {}  # target key -> alloc ids probed last round

    async def observe(self, target: Target) -> list[Observation]:
        cache = self._ports.setdefault(target.key, {})
        # python-nomad is synchronous: keep the event loop (and other targets' probes) responsive.
        endpoints = await asyncio.to_thread(job_endpoints, self.client, target.job, target.group,
                                            target.models, cache=cache)
        known = {e.alloc_id for e in endpoints}
        self.prober.forget(self._allocs.get(target.key, set()) - known)
        self._allocs[target.key] = known
        return await self.prober.probe_all(endpoints)

    def forget(self, target: Target) -> None:
        self.prober.forget(self._allocs.pop(target.key, set()))
        self._ports.pop(target.key, None)

    async def aclose(self) -> None:
        await self.prober.aclose()
