"""Stage gates as pure functions of what the rollout observed.

Why pure: whether a stage may pass is the decision a fleet rollout exists to make; keeping it a
function of plain data (job outcomes, verification results, probe observations) makes it testable
without a cluster and identical in every caller.

Soak thresholds are judged on what `probe` measures, per job and per probe round:
- error ratio: failed / (successful + failed) inference requests in the round, over all models;
- queue/compute ratio: rate(queue time) / rate(compute time), NVIDIA's saturation signal;
- p95 latency: the 95th percentile, over the whole soak, of each allocation's mean request latency
  per round (Triton exports cumulative duration counters, not histograms, so a per-round mean is
  the finest latency it gives).
A round without traffic has no ratio and no latency: it neither passes nor fails a threshold.
An allocation that does not answer its probe fails the soak at once: the stage is not serving.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from nomad_triton.probe.observations import Observation


@dataclass(frozen=True)
class Thresholds:
    max_p95_latency_ms: float | None = None
    max_error_ratio: float | None = None
    max_queue_compute_ratio: float | None = None


@dataclass(frozen=True)
class Breach:
    """Why a soak failed: which job, which allocation, what was measured against what limit."""

    job: str
    alloc_id: str
    reason: str


def error_ratio(obs: Observation) -> float | None:
    if not obs.has_rates():
        return None
    ok, bad = obs.total("success_per_s"), obs.total("failure_per_s")
    return bad / (ok + bad) if ok + bad > 0 else None


def queue_compute_ratio(obs: Observation) -> float | None:
    if not obs.has_rates():
        return None
    compute = obs.total("compute_infer_us_per_s")
    return obs.total("queue_us_per_s") / compute if compute > 0 else None


def mean_latency_ms(obs: Observation) -> float | None:
    if not obs.has_rates():
        return None
    done = obs.total("success_per_s")
    return obs.total("request_us_per_s") / done / 1000.0 if done > 0 else None


def p95(values: list[float]) -> float | None:
    """Nearest-rank 95th percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


@dataclass
class SoakJudge:
    """Feed it each probe round of one job; it says at once when a round breaks a threshold."""

    job: str
    limits: Thresholds
    latencies: list[tuple[float, str]] = field(default_factory=list)  # (ms, alloc id)
    rounds: int = 0

    def observe(self, observations: list[Observation]) -> Breach | None:
        """Judge one probe round; the first breach ends the soak."""
        self.rounds += 1
        if not observations:
            return Breach(self.job, "", "no running allocation to probe")
        for obs in observations:
            if not obs.reachable:
                return Breach(self.job, obs.alloc_id, f"allocation did not answer its probe: {obs.error or 'unreachable'}")
            err = error_ratio(obs)
            if self.limits.max_error_ratio is not None and err is not None and err > self.limits.max_error_ratio:
                return Breach(
                    self.job, obs.alloc_id, f"error ratio {err:.3f} above max_error_ratio {self.limits.max_error_ratio}"
                )
            sat = queue_compute_ratio(obs)
            limit = self.limits.max_queue_compute_ratio
            if limit is not None and sat is not None and sat > limit:
                return Breach(
                    self.job, obs.alloc_id, f"queue/compute ratio {sat:.2f} above max_queue_compute_ratio {limit}"
                )
            lat = mean_latency_ms(obs)
            if lat is not None:
                self.latencies.append((lat, obs.alloc_id))
        return None

    def finish(self) -> Breach | None:
        """At the end of the soak: the p95 latency over all rounds."""
        limit = self.limits.max_p95_latency_ms
        value = p95([ms for ms, _ in self.latencies])
        if limit is None or value is None or value <= limit:
            return None
        worst = max(self.latencies)[1]
        return Breach(self.job, worst, f"p95 latency {value:.1f} ms above max_p95_latency_ms {limit}")
