"""The watched source: probe the allocations the agent's ClusterView already knows about.

Same probes as the direct source (probe.triton.Prober, concurrent, per-probe deadlines, counters
turned into rates), but the allocations and their ports come from the cluster-wide blocking
queries of autoscale.cluster.ClusterView instead of one Nomad request per target per interval.
"""

from __future__ import annotations

from nomad_triton.autoscale.cluster import ClusterView
from nomad_triton.autoscale.sources import Target
from nomad_triton.probe.observations import Observation
from nomad_triton.probe.triton import Prober


class WatchedSource:
    def __init__(self, view: ClusterView, prober: Prober) -> None:
        self.view = view
        self.prober = prober
        self._allocs: dict[str, set[str]] = {}  # target key -> alloc ids probed last round

    async def observe(self, target: Target) -> list[Observation]:
        await self.view.synced.wait()  # bounded by the caller's evaluation deadline
        endpoints = self.view.endpoints(target.job, target.group, target.models)
        known = {e.alloc_id for e in endpoints}
        self.prober.forget(self._allocs.get(target.key, set()) - known)
        self._allocs[target.key] = known
        return await self.prober.probe_all(endpoints)

    def forget(self, target: Target) -> None:
        self.prober.forget(self._allocs.pop(target.key, set()))

    async def aclose(self) -> None:
        await self.prober.aclose()
