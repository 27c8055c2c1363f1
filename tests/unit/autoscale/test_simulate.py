"""Simulator determinism and sanity, the target-value baseline, and trace I/O."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nomad_triton.autoscale.baseline import BaselineConfig, decide_baseline
from nomad_triton.autoscale.policy import PolicyState, ScalingPolicyConfig
from nomad_triton.autoscale.simulate import (
    baseline_policy,
    ours_policy,
    replay_observations,
    run_both,
    simulate,
)
from nomad_triton.autoscale.trace import (
    LoadTrace,
    TraceError,
    append_observations,
    load_trace,
    read_observations,
)
from nomad_triton.probe.observations import ModelRates, Observation, ProbeState

TRACES = Path(__file__).parents[3] / "bench" / "traces"


def util_obs(aid: str, ts: float, util: float) -> Observation:
    m = ModelRates(ready=True, success_per_s=util * 50, compute_infer_us_per_s=util * 1e6, queue_us_per_s=0.0,
                   request_us_per_s=util * 50 * 20_000, pending=0.0)
    return Observation(ts=ts, alloc_id=aid, address=aid, state=ProbeState.REACHABLE, live=True, ready=True,
                       models={"m": m}, metrics_ok=True)


@pytest.mark.parametrize("name", ["step", "ramp", "oscillating"])
def test_shipped_traces_load_and_simulation_is_deterministic(name: str) -> None:
    trace = load_trace(TRACES / f"{name}.json")
    a = [r.summary() for r in run_both(trace)]
    b = [r.summary() for r in run_both(trace)]
    assert a == b
    assert [r["policy"] for r in a] == ["ours", "baseline"]
    for r in a:
        assert r["replica_seconds"] >= trace.duration_s * trace.min_count


def test_more_replicas_means_fewer_violations() -> None:
    """Model sanity: a fixed, ample count never violates; a starved one violates most of the time."""
    trace = LoadTrace(name="flat", duration_s=120, arrivals=[(0, 100)], service_rate=50, startup_s=5,
                      initial_replicas=4, min_count=1, max_count=20, slo_ms=100, noise=False)
    def hold(_o, st, _n):
        from nomad_triton.autoscale.policy import Decision
        return Decision(None, "none", "hold", {}, st)
    ample = simulate(trace, hold, 1.0, "hold")
    starved = simulate(LoadTrace(**{**trace.__dict__, "initial_replicas": 1}), hold, 1.0, "hold")
    assert ample.slo_violation_s == 0 and ample.replica_seconds == pytest.approx(4 * 120)
    assert starved.slo_violation_s > 100


def test_ours_reacts_to_a_step_within_seconds_and_never_reverses_on_oscillation() -> None:
    step = load_trace(TRACES / "step.json")
    pol, iv = ours_policy(step)
    res = simulate(step, pol, iv, "ours")
    jump_at = 121.0
    first_up_after = min(t for t, _, d, _ in res.actions if d == "up" and t >= jump_at)
    assert first_up_after - jump_at <= 3.0
    osc = load_trace(TRACES / "oscillating.json")
    pol, iv = ours_policy(osc)
    assert simulate(osc, pol, iv, "ours").reversals == 0


def test_baseline_runs_every_10s_with_5m_cooldown() -> None:
    step = load_trace(TRACES / "step.json")
    pol, iv = baseline_policy(step)
    assert iv == 10.0
    res = simulate(step, pol, iv, "baseline")
    times = [t for t, *_ in res.actions]
    assert all(t % 10 == 0 for t in times)
    assert all(b - a >= 300 for a, b in zip(times, times[1:], strict=False))


def test_baseline_target_value_arithmetic() -> None:
    cfg = BaselineConfig(target=0.5, min_count=1, max_count=20)
    window = [util_obs("a", 100.0 - i, 0.75) for i in range(10)]
    d = decide_baseline(window, PolicyState(desired=4), cfg, 100.0)
    assert d.signals["factor"] == pytest.approx(1.5) and (d.new_count, d.direction) == (6, "up")
    d = decide_baseline([util_obs("a", 100.0, 0.502)], PolicyState(desired=4), cfg, 100.0)
    assert d.direction == "none"  # within the 0.01 threshold
    d = decide_baseline([util_obs("a", 100.0, 0.25)], PolicyState(desired=4), cfg, 100.0)
    assert (d.new_count, d.direction) == (2, "down")
    d = decide_baseline([util_obs("a", 100.0, 0.25)], PolicyState(desired=4, last_up_at=0.0), cfg, 100.0)
    assert d.reason == "cooldown"
    d = decide_baseline([util_obs("a", 100.0, 0.3)], PolicyState(desired=0), cfg, 100.0)
    assert d.new_count == 1  # from zero: ceil(factor), clamped to min


def test_load_trace_errors_name_the_file_and_field(tmp_path: Path) -> None:
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"name": "x", "duration_s": 10, "arrivals": [[0, 1]], "service_rate": 1,
                             "startup_s": 1}))
    with pytest.raises(TraceError, match=r"t\.json: field 'initial_replicas' is required"):
        load_trace(p)
    p.write_text("{not json")
    with pytest.raises(TraceError, match="cannot read trace"):
        load_trace(p)
    p.write_text(json.dumps({"name": "x", "duration_s": 10, "arrivals": [[0, -1]], "service_rate": 1,
                             "startup_s": 1, "initial_replicas": 1}))
    with pytest.raises(TraceError, match="'arrivals'"):
        load_trace(p)


def test_rate_at_interpolates() -> None:
    t = LoadTrace(name="x", duration_s=10, arrivals=[(0, 0), (10, 100)], service_rate=1, startup_s=0,
                  initial_replicas=1)
    assert t.rate_at(5) == 50 and t.rate_at(-1) == 0 and t.rate_at(20) == 100


def test_recorded_observations_round_trip_and_replay(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    with path.open("a") as fh:
        for k in range(30):
            append_observations(fh, [util_obs(f"a{i}", float(k), 1.0) for i in range(2)])
    back = read_observations(path)
    assert len(back) == 60 and back[0] == util_obs("a0", 0.0, 1.0)
    decisions = replay_observations(back, ScalingPolicyConfig(min_count=1, max_count=10))
    ups = [d for _, d in decisions if d.direction == "up"]
    assert ups and ups[0].new_count == 3  # 2 fully busy replicas at target 0.7 -> 3
    path.write_text("garbage\n")
    with pytest.raises(TraceError, match="line 1"):
        read_observations(path)
