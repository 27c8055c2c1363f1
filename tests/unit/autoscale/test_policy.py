"""Table-driven tests of the pure scaling policy: every rule, including what must NOT happen."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from nomad_triton.autoscale.policy import (
    Decision,
    PolicyState,
    ScalingPolicyConfig,
    commit,
    decide,
    slo_utilization,
)
from nomad_triton.probe.observations import ModelRates, Observation, ProbeState

NOW = 1000.0
# The table's arithmetic is at the configured target (0.7); SLO sizing, which would size these
# 20 ms requests under a 100 ms SLO for 0.8, has its own tests below (test_slo_*).
CFG = ScalingPolicyConfig(min_count=1, max_count=10, latency_slo_ms=100.0, slo_headroom=0.0)


def obs(aid: str, util: float = 0.5, sat: float = 0.2, latency_ms: float = 30.0, pending: float = 0.0,
        ts: float = NOW, ready: bool = True, reachable: bool = True, rates: bool = True,
        reset: bool = False) -> Observation:
    """One allocation's observation with utilisation `util` (busy fraction) at a 20 ms service time."""
    if not reachable:
        return Observation(ts=ts, alloc_id=aid, address=aid, state=ProbeState.UNREACHABLE, error="timeout")
    if not ready:
        return Observation(ts=ts, alloc_id=aid, address=aid, state=ProbeState.REACHABLE, live=True, ready=False)
    success = util * 50.0
    m = ModelRates(
        ready=True, success_per_s=success if rates else None, compute_infer_us_per_s=util * 1e6 if rates else None,
        queue_us_per_s=sat * util * 1e6 if rates else None, request_us_per_s=success * latency_ms * 1000 if rates else None,
        pending=pending, reset=reset,
    )
    return Observation(ts=ts, alloc_id=aid, address=aid, state=ProbeState.REACHABLE, live=True, ready=True,
                       models={"m": m}, metrics_ok=True)


def group(n: int, **kw: object) -> list[Observation]:
    return [obs(f"a{i}", **kw) for i in range(n)]  # type: ignore[arg-type]


@dataclass
class Case:
    name: str
    observations: list[Observation]
    state: PolicyState
    expect_count: int | None
    expect_direction: str
    reason_has: str = ""
    cfg: ScalingPolicyConfig = field(default=CFG)


LONG_AGO = NOW - 10_000
CASES = [
    Case("below min scales to min without data", [], PolicyState(desired=0), 1, "up", "below min"),
    Case("above max scales to max", group(12, util=0.9), PolicyState(desired=12), 10, "down", "above max"),
    Case("no observations holds", [], PolicyState(desired=3), None, "none", "no metrics"),
    Case("only first samples (no rates) holds", group(3, rates=False), PolicyState(desired=3), None, "none",
         "no metrics"),
    Case("steady inside band", group(4, util=0.7), PolicyState(desired=4), None, "none", "within band"),
    Case("slightly above target but inside band", group(4, util=0.75), PolicyState(desired=4), None, "none"),
    # 4 replicas at 0.9 -> demand 3.6 -> ceil(3.6/0.7) = 6
    Case("above band scales up proportionally", group(4, util=0.9), PolicyState(desired=4), 6, "up", "load"),
    Case("up cooldown blocks a normal scale-up", group(4, util=0.9), PolicyState(desired=4, last_up_at=NOW - 1),
         None, "none", "cooldown"),
    # 4 replicas saturated with a growing queue -> fast path ignores the cooldown, max_step_up caps it
    Case("fast path ignores up cooldown", group(4, util=1.0, sat=5, latency_ms=500),
         PolicyState(desired=2, last_up_at=NOW - 1), 6, "up", "fast path"),
    # 1 saturated replica whose queue grows by 100 req/s -> demand 3 -> would be 5, capped to 1+2
    Case("max step up caps a huge jump", [obs("a", util=1.0, ts=NOW - 2), obs("a", util=1.0, pending=200)],
         PolicyState(desired=1), 3, "up", "fast path", cfg=replace(CFG, max_step_up=2)),
    Case("at max with overload holds", group(10, util=1.0), PolicyState(desired=10), None, "none", "at max"),
    # 2 ready at 0.8 (demand 1.6) + 2 starting: 4 desired is enough; ready-based would say 3
    Case("starting allocations count as capacity", group(2, util=0.8) + [obs("s1", ready=False), obs("s2", ready=False)],
         PolicyState(desired=4), None, "none"),
    Case("starting allocations block scale-in", group(2, util=0.1) + [obs("s1", ready=False)],
         PolicyState(desired=3), None, "none", "starting"),
    Case("unreachable allocation blocks scale-in", group(2, util=0.1) + [obs("dead", reachable=False)],
         PolicyState(desired=3), None, "none", "unreachable"),
    Case("killed allocation (no observation) is not low load", group(2, util=0.1), PolicyState(desired=3),
         None, "none", "starting"),
    Case("allocation without metrics blocks scale-in", group(2, util=0.1) + [obs("x", rates=False)],
         PolicyState(desired=3), None, "none", "without metrics"),
    Case("counter reset blocks scale-in", group(2, util=0.1) + [obs("x", util=0.1, reset=True)],
         PolicyState(desired=3), None, "none", "without metrics"),
    # 6 at 0.2 -> demand 1.2 -> ceil(1.2/0.63)=2, but max_step_down=2 -> 4
    Case("scale-in limited by max step", group(6, util=0.2), PolicyState(desired=6), 4, "down", "below the band"),
    Case("scale-in to the recommendation", group(3, util=0.2), PolicyState(desired=3), 1, "down"),
    Case("scale-in respects min", group(3, util=0.0), PolicyState(desired=3), 1, "down",
         cfg=replace(CFG, min_count=1)),
    Case("down cooldown after a scale-up", group(6, util=0.2), PolicyState(desired=6, last_up_at=NOW - 5),
         None, "none", "scale-down cooldown"),
    Case("down cooldown after a scale-down", group(6, util=0.2), PolicyState(desired=6, last_down_at=NOW - 5),
         None, "none", "scale-down cooldown"),
    Case("stabilisation window keeps the highest recent recommendation",
         group(6, util=0.2), PolicyState(desired=6, recommendations=((NOW - 30, 6),)), None, "none", "within band"),
    Case("old recommendations expire", group(6, util=0.2),
         PolicyState(desired=6, recommendations=((NOW - 120, 6),)), 4, "down"),
    Case("fast-path hold blocks scale-in", group(6, util=0.2), PolicyState(desired=6, fast_until=NOW + 10),
         None, "none", "fast-path hold"),
    # hysteresis: 4 at 0.6 -> demand 2.4 -> ceil(2.4/0.63) = 4 -> no scale-in although 0.6 < 0.7
    Case("hysteresis: below target but n-1 would be above the lower band", group(4, util=0.6),
         PolicyState(desired=4), None, "none", "within band"),
    Case("queueing hurting latency nudges +1 when settled", group(4, util=0.7, sat=3.0, latency_ms=150),
         PolicyState(desired=4), 5, "up", "saturation"),
    Case("queueing within SLO does not nudge", group(4, util=0.7, sat=3.0, latency_ms=50),
         PolicyState(desired=4), None, "none"),
    Case("no nudge while capacity is starting", group(3, util=0.7, sat=3.0, latency_ms=150) + [obs("s", ready=False)],
         PolicyState(desired=4), None, "none"),
    Case("latency above SLO blocks scale-in", group(4, util=0.1, latency_ms=150), PolicyState(desired=4),
         None, "none", "latency above SLO"),
    Case("pending per replica over target scales up", group(2, util=0.6, pending=30),
         PolicyState(desired=2), 6, "up", "pending",
         cfg=replace(CFG, target_pending_per_replica=10.0)),
    Case("observations outside the window are ignored", group(4, util=1.0, ts=NOW - 30), PolicyState(desired=4),
         None, "none", "no metrics"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_policy_table(case: Case) -> None:
    d = decide(case.observations, case.state, case.cfg, NOW)
    assert (d.new_count, d.direction) == (case.expect_count, case.expect_direction), d.reason
    assert case.reason_has in d.reason
    if d.new_count is not None:
        assert case.cfg.min_count <= d.new_count <= case.cfg.max_count


def test_queue_growth_counts_as_demand() -> None:
    """Saturated replicas show busy=1.0; the growing queue is what reveals the real arrival rate."""
    before = [obs(f"a{i}", util=1.0, pending=0, ts=NOW - 2) for i in range(2)]
    after = [obs(f"a{i}", util=1.0, pending=100, ts=NOW) for i in range(2)]
    d = decide(before + after, PolicyState(desired=2), CFG, NOW)
    # busy 2 + growth 100/s * 0.02 s = 4 replica units -> ceil(4/0.7) = 6
    assert d.signals["demand"] == pytest.approx(4.0, rel=0.05)
    assert d.new_count == 6 and d.fast_path


def test_draining_queue_is_not_demand() -> None:
    before = [obs(f"a{i}", util=1.0, pending=100, ts=NOW - 2) for i in range(4)]
    after = [obs(f"a{i}", util=1.0, pending=20, ts=NOW) for i in range(4)]
    d = decide(before + after, PolicyState(desired=6), CFG, NOW)
    assert d.signals["demand"] is not None and d.signals["demand"] < 4.0
    assert d.direction != "up"


def test_commit_sets_cooldowns_and_fast_hold() -> None:
    d = decide(group(4, util=1.0), PolicyState(desired=2, last_up_at=NOW - 1), CFG, NOW)
    assert d.fast_path and d.direction == "up"
    st = commit(d, NOW)
    assert st.desired == d.new_count and st.last_up_at == NOW and st.fast_until == NOW + CFG.fast_hold_s
    assert st.last_direction == "up"
    down = decide(group(6, util=0.2), PolicyState(desired=6), CFG, NOW)
    st2 = commit(down, NOW)
    assert st2.last_down_at == NOW and st2.desired == 4 and st2.last_up_at is None
    none = decide(group(4, util=0.7), PolicyState(desired=4), CFG, NOW)
    assert commit(none, NOW) == none.state


def test_decide_is_pure_and_deterministic() -> None:
    o = group(4, util=0.9)
    st = PolicyState(desired=4, recommendations=((NOW - 5, 4),))
    a: Decision = decide(o, st, CFG, NOW)
    b: Decision = decide(o, st, CFG, NOW)
    assert a == b
    assert st.recommendations == ((NOW - 5, 4),)  # input state untouched
    assert a.state.recommendations[-1][0] == NOW


def test_recommendation_history_is_pruned() -> None:
    st = PolicyState(desired=4, recommendations=tuple((NOW - 500 + i, 4) for i in range(100)))
    d = decide(group(4, util=0.7), st, CFG, NOW)
    assert all(t > NOW - CFG.down_stabilization_s for t, _ in d.state.recommendations)


@pytest.mark.parametrize("kw", [dict(min_count=5, max_count=2), dict(target_utilization=0.0),
                                dict(band=1.0), dict(max_step_up=0)])
def test_bad_config_rejected(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ScalingPolicyConfig(**kw)  # type: ignore[arg-type]


def test_config_from_deployment_spec_scaling_section() -> None:
    from datetime import timedelta

    from nomad_triton.spec.models import ScalingPolicySpec, ScalingSpec

    spec = ScalingSpec(enabled=True, min=2, max=9, policy=ScalingPolicySpec(
        evaluation_interval=timedelta(seconds=1), window=timedelta(seconds=3), latency_slo_ms=80,
        cooldown_up=timedelta(seconds=3), cooldown_down=timedelta(seconds=20), tolerance=0.15,
        drain=timedelta(seconds=45)))
    cfg = ScalingPolicyConfig.from_spec(spec)
    assert (cfg.min_count, cfg.max_count, cfg.interval_s, cfg.window_s) == (2, 9, 1.0, 3.0)
    assert (cfg.up_cooldown_s, cfg.down_cooldown_s, cfg.band, cfg.latency_slo_ms) == (3.0, 20.0, 0.15, 80)
    assert cfg.drain_s == ScalingPolicyConfig().drain_s  # the spec's drain is the allocation's, not ours


def test_recommendations_made_while_a_replica_is_missing_never_lower_the_count() -> None:
    """Found on real PyTriton (tests/e2e/test_autoscale_triton.py): while one of two replicas was
    down, the survivor's load alone recommended 1 replica; scale-in was blocked, but those partial
    recommendations filled the stabilisation window, so the first round with the restarted replica
    back (its first, warm-up rate still low) scaled in. Partial data must only ever hold the count."""
    cfg = ScalingPolicyConfig(min_count=1, max_count=3, down_cooldown_s=3, down_stabilization_s=3, fast_hold_s=2)
    state = PolicyState(desired=2, last_up_at=LONG_AGO)
    history: list[Observation] = []
    t = NOW
    for _ in range(10):  # 5 s: a0 carries its share, a1 crashed and restarting
        t += 0.5
        history += [obs("a0", util=0.47, ts=t), obs("a1", reachable=False, ts=t)]
        d = decide(history, state, cfg, t)
        assert d.direction != "down" and "unreachable" in d.reason, d.reason
        state = d.state
    t += 0.5
    history += [obs("a0", util=0.47, ts=t), obs("a1", util=0.1, ts=t)]  # back, first rate from warm-up
    d = decide(history, state, cfg, t)
    assert d.direction == "none", d.reason
    state = d.state
    for _ in range(8):  # a full stabilisation window of complete, low data: now it may scale in
        t += 0.5
        history += [obs("a0", util=0.2, ts=t), obs("a1", util=0.2, ts=t)]
        d = decide(history, state, cfg, t)
        state = d.state
        if d.direction == "down":
            break
    assert d.direction == "down" and d.new_count == 1, d.reason


def _with_p95(observations: list[Observation], p95_ms: float) -> list[Observation]:
    return [replace(o, models={k: replace(m, p95_latency_us=p95_ms * 1000) for k, m in o.models.items()})
            for o in observations]


def test_p95_above_slo_blocks_scale_in_even_when_the_mean_is_within() -> None:
    idle = group(4, util=0.1, latency_ms=30)  # mean 30 ms, well inside the 100 ms SLO
    cfg = replace(CFG, down_cooldown_s=0, down_stabilization_s=0)
    assert decide(idle, PolicyState(desired=4), cfg, NOW).direction == "down"
    d = decide(_with_p95(idle, 250), PolicyState(desired=4), cfg, NOW)
    assert d.new_count is None and "latency above SLO" in d.reason
    assert d.signals["latency_p95_ms"] == pytest.approx(250) and d.signals["latency_ms"] == pytest.approx(30)


def test_p95_above_slo_lets_queueing_nudge_up() -> None:
    busy = group(4, util=0.7, sat=3.0, latency_ms=50)  # mean within the SLO: no nudge on its own
    assert decide(busy, PolicyState(desired=4), CFG, NOW).direction == "none"
    d = decide(_with_p95(busy, 180), PolicyState(desired=4), CFG, NOW)
    assert (d.new_count, d.direction) == (5, "up") and "latency 180ms" in d.reason


def test_slo_sizing_runs_fast_requests_hotter_under_a_loose_slo() -> None:
    cfg = replace(CFG, slo_headroom=0.6)
    # 20 ms service, 100 ms SLO: waiting budget 0.6*100-20 = 40 ms = 2 services -> rho = 4/5.
    assert slo_utilization(cfg, 0.020) == pytest.approx(0.8)
    # 4 replicas at 0.9 busy -> demand 3.6 -> ceil(3.6/0.8) = 5 (at the fixed 0.7 it would be 6)
    d = decide(group(4, util=0.9), PolicyState(desired=4), cfg, NOW)
    assert (d.new_count, d.direction) == (5, "up") and d.signals["target_utilization"] == pytest.approx(0.8)


def test_slo_sizing_never_goes_below_the_target_nor_above_its_cap() -> None:
    cfg = replace(CFG, slo_headroom=0.6)
    assert slo_utilization(cfg, 0.055) == cfg.target_utilization  # slow model: budget 5 ms -> rho 0.15
    assert slo_utilization(cfg, 0.080) == cfg.target_utilization  # no budget left at all
    assert slo_utilization(cfg, 0.001) == cfg.max_slo_utilization  # tiny service time: capped
    assert slo_utilization(replace(cfg, latency_slo_ms=None), 0.001) == cfg.target_utilization
    assert slo_utilization(cfg, None) == cfg.target_utilization  # no measurement yet
    with pytest.raises(ValueError, match="slo_headroom"):
        replace(cfg, slo_headroom=1.5)
