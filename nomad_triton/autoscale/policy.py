"""The autoscaling policy: a pure function from a window of observations to a decision.

Pure (no clock, no I/O, no mutation) so it is table-testable and replayable on recorded traces; the
controller and the simulator own time and side effects. What it does differently from the Nomad
Autoscaler's target-value strategy (see baseline.py), each point a complaint from its users:

* the base is the *desired* count, so allocations that are still starting count as capacity and
  a burst does not trigger a second scale-up before the first one has started (overshoot, #540);
* scale-up and scale-down have separate cooldowns (#272), and scale-in takes the highest
  recommendation over a stabilisation window, so an oscillating load does not make it flap;
* a fast path reacts to a sudden jump at the next evaluation (no cooldown) and holds off scale-in
  for `fast_hold_s` afterwards;
* missing data (unreachable allocation, no metrics yet, a counter reset) never looks like low load:
  it blocks scale-in instead of counting as zero;
* demand is estimated from Triton's own counters (busy time, queue growth), so no Prometheus;
* with a latency SLO, replicas are sized for the utilisation the SLO allows (M/D/1 on the measured
  service time, with headroom), not a fixed 0.7: holding the peak of an oscillating load then
  costs what the best non-flapping policy costs (docs/benchmarks.md, P3).

Demand is measured in "replica units": the number of fully busy execution slots (compute time per
second), plus the growth of the pending queue and a term to drain the backlog. The hysteresis band
is sized on what the smaller count would see: scale in to k only if demand/k stays below
target*(1-band), scale out only if demand/desired exceeds target*(1+band).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from nomad_triton.probe.observations import Observation

Direction = Literal["up", "down", "none"]


@dataclass(frozen=True)
class ScalingPolicyConfig:
    """Tuning knobs; defaults are the ones the P3 bench measures. Times in seconds."""

    min_count: int = 1
    max_count: int = 10
    target_utilization: float = 0.7  # busy fraction per replica we size for
    target_saturation: float = 1.0  # queue_us / compute_us (NVIDIA's signal)
    target_pending_per_replica: float | None = None
    latency_slo_ms: float | None = None
    band: float = 0.1
    up_cooldown_s: float = 3.0
    down_cooldown_s: float = 20.0
    down_stabilization_s: float = 60.0
    fast_factor: float = 1.5  # demand/(desired*target) at or above this -> fast path
    fast_hold_s: float = 60.0
    max_step_up: int = 8
    max_step_down: int = 2
    window_s: float = 3.0
    instances_per_replica: int = 1
    drain_s: float = 60.0
    interval_s: float = 1.0
    slo_headroom: float = 0.6  # size for this fraction of the latency SLO (see slo_utilization)
    max_slo_utilization: float = 0.85

    def __post_init__(self) -> None:
        if not 0 <= self.min_count <= self.max_count:
            raise ValueError("min_count must be between 0 and max_count")
        if not 0 < self.target_utilization <= 1:
            raise ValueError("target_utilization must be in (0, 1]")
        if not 0 <= self.band < 1:
            raise ValueError("band must be in [0, 1)")
        if not 0 <= self.slo_headroom <= 1:
            raise ValueError("slo_headroom must be in [0, 1] (0 turns SLO sizing off)")
        if not 0 < self.max_slo_utilization <= 1:
            raise ValueError("max_slo_utilization must be in (0, 1]")
        if self.max_step_up < 1 or self.max_step_down < 1:
            raise ValueError("max steps must be >= 1")

    @classmethod
    def from_spec(cls, scaling: Any) -> ScalingPolicyConfig:
        """From a deployment spec's `scaling` section (nomad_triton.spec ScalingSpec).

        The spec's `drain` is the time a scaled-in allocation gets to finish its requests (a job
        setting), not this policy's backlog-drain horizon, so it is deliberately not mapped.
        """
        kwargs = dict(scaling.policy_config_kwargs())
        kwargs.pop("drain_s", None)
        return cls(**kwargs)


@dataclass(frozen=True)
class PolicyState:
    """What the policy remembers between decisions (carried by the caller)."""

    desired: int
    last_up_at: float | None = None
    last_down_at: float | None = None
    fast_until: float | None = None
    last_direction: Direction = "none"
    # (ts, scale-in recommendation) pairs inside the stabilisation window.
    recommendations: tuple[tuple[float, int], ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Decision:
    new_count: int | None
    direction: Direction
    reason: str
    signals: dict[str, float | int | None]
    state: PolicyState  # state after this evaluation, *without* the action applied
    fast_path: bool = False


def commit(decision: Decision, now: float) -> PolicyState:
    """State after the decision's scale action succeeded (the controller calls this only then)."""
    s = decision.state
    if decision.new_count is None or decision.direction == "none":
        return s
    if decision.direction == "up":
        fast_until = now + _hold(decision) if decision.fast_path else s.fast_until
        return replace(s, desired=decision.new_count, last_up_at=now, last_direction="up", fast_until=fast_until)
    return replace(s, desired=decision.new_count, last_down_at=now, last_direction="down")


def _hold(decision: Decision) -> float:
    return float(decision.signals.get("fast_hold_s") or 0.0)


@dataclass(frozen=True)
class Signals:
    demand: float | None  # replica units
    saturation: float | None
    pending_total: float | None
    latency_ms: float | None
    latency_p95_ms: float | None  # worst allocation's p95 (Triton's summary), when exported
    with_data: int
    unreachable: int
    no_data: int
    not_ready: int
    reset: int
    service_s: float | None = None  # compute time per completed request


def _signals(window: list[Observation], cfg: ScalingPolicyConfig, desired: int) -> Signals:
    by_alloc: dict[str, list[Observation]] = {}
    for o in sorted(window, key=lambda o: o.ts):
        by_alloc.setdefault(o.alloc_id, []).append(o)
    busy = queue = compute = pending = growth = req_us = success = 0.0
    p95s: list[float] = []
    with_data = unreachable = no_data = not_ready = resets = ready_no_data = 0
    for obs in by_alloc.values():
        last = obs[-1]
        if not last.reachable:
            unreachable += 1
            continue
        if not last.ready:
            not_ready += 1
        if any(m.reset for m in last.models.values()):
            resets += 1
        if not last.has_rates():
            no_data += 1
            ready_no_data += 1 if last.ready else 0
            continue
        with_data += 1
        c = last.total("compute_infer_us_per_s")
        compute += c
        busy += c / 1e6 / cfg.instances_per_replica
        queue += last.total("queue_us_per_s")
        pending += last.total("pending")
        req_us += last.total("request_us_per_s")
        success += last.total("success_per_s")
        p95s += [m.p95_latency_us for m in last.models.values() if m.p95_latency_us is not None]
        first = obs[0]
        if first is not last and first.has_rates() and last.ts > first.ts:
            growth += (last.total("pending") - first.total("pending")) / (last.ts - first.ts)
    if with_data == 0:
        return Signals(None, None, None, None, None, 0, unreachable, no_data, not_ready, resets)
    svc_s = compute / 1e6 / success if success > 0 else 0.0
    starting_hint = max(0, desired - (with_data + no_data - not_ready))
    # Draining the backlog is only asked of a settled group: with allocations still starting the
    # backlog is already being answered, and adding replicas for it again overshoots.
    drain = pending / cfg.drain_s if starting_hint == 0 else 0.0
    # Arrivals = completions + queue growth; a draining queue (negative growth) is not demand.
    demand = max(0.0, busy + (growth + drain) * svc_s / cfg.instances_per_replica)
    # Ready allocations whose first sample has no rate yet probably carry load like their peers.
    demand *= (with_data + ready_no_data) / with_data
    latency = req_us / success / 1000.0 if success > 0 else None
    return Signals(
        demand=demand,
        saturation=queue / max(compute, 1.0),
        pending_total=pending,
        latency_ms=latency,
        latency_p95_ms=max(p95s) / 1000.0 if p95s else None,
        with_data=with_data,
        unreachable=unreachable,
        no_data=no_data,
        not_ready=not_ready,
        reset=resets,
        service_s=svc_s if success > 0 else None,
    )


def slo_utilization(cfg: ScalingPolicyConfig, service_s: float | None) -> float:
    """The busy fraction per replica to size for: the configured target, or higher when a latency
    SLO allows it.

    With an SLO and a measured service time, the highest utilisation whose queueing delay stays
    within `slo_headroom` of the SLO's waiting budget follows from M/D/1 (inference at batch 1 is
    close to deterministic): wait = rho / (2 (1 - rho)) * service, so rho = 2k / (1 + 2k) with
    k = budget / service. A fast model under a loose SLO may then run hotter than the default
    0.7; a slow one never runs hotter than the configured target, and never above `max_slo_utilization`.
    """
    target = cfg.target_utilization
    if not cfg.latency_slo_ms or not cfg.slo_headroom or not service_s or service_s <= 0:
        return target
    budget = cfg.latency_slo_ms / 1000.0 * cfg.slo_headroom - service_s
    if budget <= 0:
        return target
    k = budget / service_s
    return max(target, min(cfg.max_slo_utilization, 2 * k / (1 + 2 * k)))


def decide(
    observations: list[Observation], state: PolicyState, config: ScalingPolicyConfig, now: float
) -> Decision:
    """Decide the next count for one task group from the observations of the last `window_s`."""
    cfg = config
    window = [o for o in observations if now - cfg.window_s <= o.ts <= now]
    sig = _signals(window, cfg, state.desired)
    n = state.desired
    signals: dict[str, float | int | None] = {
        "desired": n,
        "demand": sig.demand,
        "load_ratio": None,
        "saturation": sig.saturation,
        "pending_total": sig.pending_total,
        "latency_ms": sig.latency_ms,
        "latency_p95_ms": sig.latency_p95_ms,
        "allocs_with_data": sig.with_data,
        "allocs_unreachable": sig.unreachable,
        "allocs_no_data": sig.no_data,
        "allocs_not_ready": sig.not_ready,
        "fast_hold_s": cfg.fast_hold_s,
    }

    def out(new: int | None, direction: Direction, reason: str, st: PolicyState, fast: bool = False) -> Decision:
        return Decision(new, direction, reason, signals, st, fast)

    if n < cfg.min_count:
        return out(cfg.min_count, "up", f"below min ({n} < {cfg.min_count})", state)
    if n > cfg.max_count:
        return out(cfg.max_count, "down", f"above max ({n} > {cfg.max_count})", state)
    if sig.demand is None:
        return out(None, "none", "no metrics in window; holding (missing data never scales in)", state)

    target = slo_utilization(cfg, sig.service_s)
    signals["target_utilization"] = target
    load_ratio = sig.demand / (max(n, 1) * target)
    signals["load_ratio"] = load_ratio
    up_rec = math.ceil(sig.demand / target - 1e-9)
    triggers: list[str] = []
    if load_ratio > 1 + cfg.band:
        triggers.append(f"load {load_ratio:.2f}x target")
    # Queue-based nudges (+1) only when nothing is starting: capacity already on its way will
    # relieve the queue, and nudging again every cooldown while it starts is how overshoot happens.
    ready_allocs = sig.with_data + sig.no_data - sig.not_ready
    settled = ready_allocs >= n
    slo = cfg.latency_slo_ms
    # The SLO is judged on p95 where Triton exports it (a mean hides the tail), else on the mean.
    slo_latency = sig.latency_p95_ms if sig.latency_p95_ms is not None else sig.latency_ms
    queueing = sig.saturation is not None and sig.saturation > cfg.target_saturation * (1 + cfg.band)
    late = slo is None or (slo_latency is not None and slo_latency > slo)
    if settled and queueing and late:
        triggers.append(f"saturation {sig.saturation:.2f}" + (f", latency {slo_latency:.0f}ms" if slo else ""))
        up_rec = max(up_rec, n + 1)
    tp = cfg.target_pending_per_replica
    if settled and tp and sig.pending_total is not None and sig.pending_total / max(n, 1) > tp * (1 + cfg.band):
        triggers.append(f"pending/replica {sig.pending_total / max(n, 1):.1f}")
        up_rec = max(up_rec, math.ceil(sig.pending_total / tp))

    # Scale-in recommendation, remembered over the stabilisation window (highest wins).
    down_rec = max(cfg.min_count, math.ceil(sig.demand / (target * (1 - cfg.band)) - 1e-9))
    past = tuple(r for r in state.recommendations if r[0] > now - cfg.down_stabilization_s)
    recs = past + ((now, down_rec),)
    # Demand measured on part of the group is a floor, not an estimate: remembered, it may only
    # hold the count (recorded lower, it would scale in as soon as the missing replica is back).
    # This evaluation still sees it, so its reason names what blocks the scale-in.
    partial = bool(sig.unreachable or sig.no_data or sig.reset or not settled)
    st = replace(state, recommendations=past + ((now, max(down_rec, n) if partial else down_rec),))

    fast_active = st.fast_until is not None and now < st.fast_until
    if triggers and up_rec > n:
        new = min(cfg.max_count, up_rec, n + cfg.max_step_up)
        if new <= n:
            return out(None, "none", f"at max ({cfg.max_count}) despite " + ", ".join(triggers), st)
        fast = load_ratio >= cfg.fast_factor
        if not fast and st.last_up_at is not None and now - st.last_up_at < cfg.up_cooldown_s:
            return out(None, "none", "scale-up cooldown: " + ", ".join(triggers), st)
        return out(new, "up", ("fast path: " if fast else "") + ", ".join(triggers), st, fast)

    stable_rec = max(r for _, r in recs)
    # On partial data that alone would scale in, say what blocks it (partial data always has a
    # blocker below) rather than the held recommendations' "within band".
    if stable_rec >= n and not (partial and down_rec < n):
        return out(None, "none", f"within band (load {load_ratio:.2f}x target)", st)
    blockers = []
    if sig.unreachable:
        blockers.append(f"{sig.unreachable} unreachable")
    if sig.no_data or sig.reset:
        blockers.append(f"{sig.no_data} without metrics")
    if sig.with_data + sig.no_data + sig.unreachable < n or sig.not_ready:
        blockers.append("allocations still starting")
    if fast_active:
        blockers.append("fast-path hold")
    if slo and slo_latency is not None and slo_latency > slo:
        blockers.append("latency above SLO")
    last_action = max(t for t in (st.last_up_at, st.last_down_at, -math.inf) if t is not None)
    if now - last_action < cfg.down_cooldown_s:
        blockers.append("scale-down cooldown")
    if blockers:
        return out(None, "none", "scale-in blocked: " + ", ".join(blockers), st)
    new = max(stable_rec, n - cfg.max_step_down, cfg.min_count)
    return out(new, "down", f"load {load_ratio:.2f}x target; {new} replicas stay below the band", st)
