"""Discrete-time replay of a load trace through a queueing model of replicas and a policy.

Why a model and not the real thing: comparing policies needs the *same* load many times, minutes
of it, on a 2-core machine. The model is small and documented so its numbers can be judged:
replicas become ready `startup_s` after being placed (and cost replica-seconds from placement);
arrivals (Gaussian approximation of Poisson, seeded) join one shared backlog; each ready replica
serves `service_rate` req/s; waiting time is M/D/1's rho/(2(1-rho)) service times (inference is
close to deterministic) plus the backlog divided by throughput. Every tick it emits the same
Observation records the live prober produces, so the policy under test runs exactly as in
production.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from nomad_triton.autoscale.baseline import BaselineConfig, decide_baseline
from nomad_triton.autoscale.policy import Decision, PolicyState, ScalingPolicyConfig, commit, decide
from nomad_triton.autoscale.trace import LoadTrace
from nomad_triton.probe.observations import ModelRates, Observation, ProbeState

Policy = Callable[[list[Observation], PolicyState, float], Decision]


@dataclass(frozen=True)
class Tick:
    t: float
    load_rps: float  # arrivals this tick, per second
    capacity_rps: float  # ready replicas x service rate
    replicas: int  # placed (ready or starting): what costs replica-seconds
    latency_ms: float
    violating: bool  # latency above the SLO while there is work


@dataclass
class SimResult:
    policy: str
    replica_seconds: float = 0.0
    slo_violation_s: float = 0.0
    scale_actions: int = 0
    reversals: int = 0
    max_replicas: int = 0
    dropped_or_late: float = 0.0
    actions: list[tuple[float, int, str, str]] = field(default_factory=list)  # (t, count, dir, reason)
    # One row per tick, for plots (autoscale.report): what arrived, what could be served, who ran.
    timeline: list[Tick] = field(default_factory=list)

    def summary(self) -> dict[str, float | int | str]:
        return {
            "policy": self.policy,
            "replica_seconds": round(self.replica_seconds, 1),
            "slo_violation_s": round(self.slo_violation_s, 1),
            "scale_actions": self.scale_actions,
            "reversals": self.reversals,
            "max_replicas": self.max_replicas,
        }


def ours_policy(trace: LoadTrace, config: ScalingPolicyConfig | None = None) -> tuple[Policy, float]:
    cfg = config or ScalingPolicyConfig(
        min_count=trace.min_count, max_count=trace.max_count, latency_slo_ms=trace.slo_ms
    )
    return (lambda obs, st, now: decide(obs, st, cfg, now)), cfg.interval_s


def baseline_policy(trace: LoadTrace, config: BaselineConfig | None = None) -> tuple[Policy, float]:
    cfg = config or BaselineConfig(min_count=trace.min_count, max_count=trace.max_count)
    return (lambda obs, st, now: decide_baseline(obs, st, cfg, now)), cfg.evaluation_interval_s


@dataclass
class _Replica:
    rid: str
    ready_at: float


def simulate(trace: LoadTrace, policy: Policy, interval_s: float, name: str, history_s: float = 60.0) -> SimResult:
    """Run `trace` under `policy` evaluated every `interval_s`; deterministic for a given trace."""
    rng = random.Random(trace.seed)
    dt = trace.tick_s
    svc = 1.0 / trace.service_rate
    replicas = [_Replica(f"r{i}", 0.0) for i in range(trace.initial_replicas)]
    next_id = len(replicas)
    state = PolicyState(desired=len(replicas))
    history: deque[Observation] = deque()
    backlog = 0.0
    res = SimResult(policy=name)
    next_eval = interval_s
    steps = int(round(trace.duration_s / dt))
    for k in range(1, steps + 1):
        t = k * dt
        lam = trace.rate_at(t - dt / 2)
        mean = lam * dt
        arrivals = max(0.0, rng.gauss(mean, math.sqrt(mean))) if trace.noise and mean > 0 else mean
        ready = [r for r in replicas if r.ready_at <= t]
        nready = len(ready)
        res.replica_seconds += len(replicas) * dt
        res.max_replicas = max(res.max_replicas, len(replicas))
        total = backlog + arrivals
        cap = nready * trace.service_rate * dt
        served = min(total, cap)
        backlog = total - served
        if nready == 0:
            latency = math.inf
            rho = 1.0
        else:
            rho = served / cap if cap else 0.0
            rc = min(rho, 0.98)
            wait = rc / (2 * (1 - rc)) * svc + backlog / (nready * trace.service_rate)
            latency = svc + wait
        violating = latency * 1000.0 > trace.slo_ms and (arrivals > 0 or backlog > 0)
        if violating:
            res.slo_violation_s += dt
        res.timeline.append(Tick(t, arrivals / dt, nready * trace.service_rate, len(replicas),
                                 latency * 1000.0 if math.isfinite(latency) else math.inf, violating))
        for r in replicas:
            history.append(_observe(r, t, nready, served, dt, svc, latency, backlog, rho))
        while history and history[0].ts < t - history_s:
            history.popleft()
        if t + 1e-9 >= next_eval:
            next_eval += interval_s
            d = policy(list(history), state, t)
            state = d.state
            if d.new_count is not None and d.new_count != state.desired:
                if res.actions and res.actions[-1][2] != d.direction:
                    res.reversals += 1
                res.actions.append((t, d.new_count, d.direction, d.reason))
                res.scale_actions += 1
                state = commit(d, t)
                while len(replicas) < d.new_count:
                    replicas.append(_Replica(f"r{next_id}", t + trace.startup_s))
                    next_id += 1
                while len(replicas) > d.new_count:
                    # Nomad stops the newest allocations first; a starting one is the cheapest loss.
                    replicas.pop()
    return res


def _observe(
    r: _Replica, t: float, nready: int, served: float, dt: float, svc: float, latency: float, backlog: float, rho: float
) -> Observation:
    if r.ready_at > t:
        return Observation(ts=t, alloc_id=r.rid, address=r.rid, state=ProbeState.REACHABLE, live=True, ready=False)
    x = served / nready / dt  # requests/s completed by this replica
    rc = min(rho, 0.98)
    wait = latency - svc
    m = ModelRates(
        ready=True,
        success_per_s=x,
        failure_per_s=0.0,
        inferences_per_s=x,
        executions_per_s=x,
        queue_us_per_s=x * wait * 1e6,
        compute_infer_us_per_s=x * svc * 1e6,
        request_us_per_s=x * latency * 1e6,
        pending=backlog / nready + rc * rc / (2 * (1 - rc)),
        avg_latency_us=latency * 1e6,
    )
    return Observation(
        ts=t, alloc_id=r.rid, address=r.rid, state=ProbeState.REACHABLE, live=True, ready=True,
        models={"model": m}, metrics_ok=True,
    )


def run_both(trace: LoadTrace, which: str = "both") -> list[SimResult]:
    out = []
    if which in ("ours", "both"):
        pol, iv = ours_policy(trace)
        out.append(simulate(trace, pol, iv, "ours"))
    if which in ("baseline", "both"):
        pol, iv = baseline_policy(trace)
        out.append(simulate(trace, pol, iv, "baseline"))
    return out


def replay_observations(
    observations: list[Observation], config: ScalingPolicyConfig, initial: int | None = None
) -> list[tuple[float, Decision]]:
    """Run the policy over a recorded observation trace, one evaluation per recorded round.

    Decisions are assumed applied (the desired count follows them) since a recording cannot show
    what the cluster would have done instead.
    """
    if not observations:
        return []
    obs = sorted(observations, key=lambda o: o.ts)
    first_round = [o for o in obs if o.ts == obs[0].ts]
    state = PolicyState(desired=initial if initial is not None else len({o.alloc_id for o in first_round}))
    out: list[tuple[float, Decision]] = []
    rounds = sorted({o.ts for o in obs})
    lo = 0
    for now in rounds:
        while obs[lo].ts < now - config.window_s:
            lo += 1
        hi = bisect_right_ts(obs, now)
        d = decide(obs[lo:hi], state, config, now)
        state = commit(d, now) if d.new_count is not None else d.state
        out.append((now, d))
    return out


def bisect_right_ts(obs: list[Observation], ts: float) -> int:
    lo, hi = 0, len(obs)
    while lo < hi:
        mid = (lo + hi) // 2
        if obs[mid].ts <= ts:
            lo = mid + 1
        else:
            hi = mid
    return lo
