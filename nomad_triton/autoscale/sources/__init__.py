"""Where the autoscaler's observations come from, behind one seam.

Every source answers the same question for a target (job, task group, models): "what does each of
its allocations look like right now?", as a list of `nomad_triton.probe.observations.Observation`.
Because the shape is the same whatever the source (a direct scrape of Triton, or PromQL against
the Prometheus a team already runs), the decision core (`autoscale.policy.decide`) never knows
which one fed it, and a recorded trace replays the same way. Sources never scale anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from nomad_triton.probe.observations import Observation


@dataclass(frozen=True)
class Target:
    """One scalable task group: the unit every source observes and every decision is about."""

    job: str
    group: str
    models: tuple[str, ...] = ()
    namespace: str | None = None

    @property
    def key(self) -> str:
        """Stable identity for logs, metrics labels and per-target state."""
        return f"{self.namespace or 'default'}/{self.job}/{self.group}"


class ObservationSource(Protocol):
    """A provider of per-allocation observations for a target.

    `observe` must not raise for one allocation's trouble (a dead or hung allocation is an
    Observation in state UNREACHABLE, never an exception); it may raise when the source itself is
    unusable (Nomad or Prometheus not answering), which callers treat as "no data: hold".
    """

    async def observe(self, target: Target) -> list[Observation]: ...

    def forget(self, target: Target) -> None:
        """Drop whatever the source keeps for a target that went away (counters, caches)."""
        ...

    async def aclose(self) -> None: ...
