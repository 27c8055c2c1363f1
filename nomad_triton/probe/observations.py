"""Plain, timestamped probe results.

Observations are data, not behaviour: the autoscaling policy is a pure function of a window of them,
and a live run can be recorded as JSON lines and replayed offline (`autoscale simulate`). Keeping
them as frozen dataclasses with an explicit JSON round-trip is what makes that replay faithful.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class ProbeState(StrEnum):
    """Whether the allocation answered at all. Unreachable is a state, not an exception, so a
    dead endpoint is data the policy can reason about (never a low-load signal)."""

    REACHABLE = "reachable"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class ModelRates:
    """Per-model readiness and rates derived from two successive metrics samples.

    Rates are None on the first sample of an allocation (no previous value to diff against).
    `reset` is True when a counter went backwards (server restart): the rates then follow
    Prometheus' convention (the increase since the restart is the new value), but the policy must
    not trust them for scale-in.
    """

    ready: bool | None = None
    success_per_s: float | None = None
    failure_per_s: float | None = None
    inferences_per_s: float | None = None
    executions_per_s: float | None = None
    queue_us_per_s: float | None = None
    compute_infer_us_per_s: float | None = None
    request_us_per_s: float | None = None
    pending: float | None = None
    avg_latency_us: float | None = None
    # Request latency p95 from Triton's own summary (`summary_latencies`, on in `serve`); a gauge,
    # so it is there from the first sample. None without summaries or without recent requests.
    p95_latency_us: float | None = None
    reset: bool = False
    # Versions on the metrics page: Triton lists a model version there only while it is loaded.
    versions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Endpoint:
    """Where to probe one allocation. `http` and `metrics` are host:port (no scheme)."""

    alloc_id: str
    http: str
    metrics: str | None = None
    models: tuple[str, ...] = ()


@dataclass(frozen=True)
class Observation:
    """One probe of one allocation at time `ts` (seconds, time.time() or simulated clock)."""

    ts: float
    alloc_id: str
    address: str
    state: ProbeState
    live: bool | None = None
    ready: bool | None = None
    models: dict[str, ModelRates] = field(default_factory=dict)
    metrics_ok: bool = False
    gpu_utilization: float | None = None
    gpu_memory_used_bytes: float | None = None
    gpu_memory_total_bytes: float | None = None
    error: str | None = None
    probe_ms: float | None = None

    @property
    def reachable(self) -> bool:
        return self.state is ProbeState.REACHABLE

    def has_rates(self) -> bool:
        """True when every model has a trustworthy compute rate (not first sample, no reset)."""
        return (
            self.reachable
            and self.metrics_ok
            and bool(self.models)
            and all(m.compute_infer_us_per_s is not None and not m.reset for m in self.models.values())
        )

    def total(self, name: str) -> float:
        """Sum of one ModelRates field over models (missing values count as 0)."""
        return float(sum(getattr(m, name) or 0.0 for m in self.models.values()))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = self.state.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Observation:
        d = dict(d)
        d["state"] = ProbeState(d["state"])
        d["models"] = {k: ModelRates(**{**v, "versions": tuple(v.get("versions") or ())})
                       for k, v in (d.get("models") or {}).items()}
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> Observation:
        return cls.from_dict(json.loads(line))
