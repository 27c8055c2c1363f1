"""Stage gates are pure functions of observations: breaches, p95, and rounds without traffic."""

from __future__ import annotations

from nomad_triton.fleet.gates import (
    SoakJudge,
    Thresholds,
    error_ratio,
    mean_latency_ms,
    p95,
    queue_compute_ratio,
)
from nomad_triton.probe.observations import ModelRates, Observation, ProbeState


def obs(alloc: str = "a1", *, ok: float = 100.0, bad: float = 0.0, queue: float = 0.0, compute: float = 1000.0,
        request_us: float | None = None, reachable: bool = True, first: bool = False) -> Observation:
    """One probe of one allocation: per-second rates as probe computes them from Triton's counters."""
    if not reachable:
        return Observation(ts=0.0, alloc_id=alloc, address="127.0.0.1:1", state=ProbeState.UNREACHABLE,
                           error="connection refused")
    rates = ModelRates(ready=True, success_per_s=ok, failure_per_s=bad,
                       queue_us_per_s=queue, compute_infer_us_per_s=None if first else compute,
                       request_us_per_s=request_us if request_us is not None else ok * 10_000.0)
    return Observation(ts=0.0, alloc_id=alloc, address="127.0.0.1:1", state=ProbeState.REACHABLE, ready=True,
                       models={"m": rates}, metrics_ok=True)


def test_signals_from_rates() -> None:
    o = obs(ok=90, bad=10, queue=3000, compute=1000, request_us=90 * 20_000)
    assert error_ratio(o) == 0.1
    assert queue_compute_ratio(o) == 3.0
    assert mean_latency_ms(o) == 20.0
    # The first sample of an allocation has no rates: no signal, never a pass or a breach.
    assert error_ratio(obs(first=True)) is None and mean_latency_ms(obs(first=True)) is None
    # No traffic: no ratio and no latency.
    idle = obs(ok=0, bad=0, queue=0, compute=0)
    assert error_ratio(idle) is None and queue_compute_ratio(idle) is None and mean_latency_ms(idle) is None


def test_p95_nearest_rank() -> None:
    assert p95([]) is None
    assert p95([5.0]) == 5.0
    assert p95([float(i) for i in range(1, 101)]) == 95.0
    assert p95([1.0] * 19 + [100.0]) == 1.0
    assert p95([1.0] * 18 + [100.0, 100.0]) == 100.0


def test_error_ratio_breach_names_job_and_allocation() -> None:
    judge = SoakJudge("svc-gpu-l4", Thresholds(max_error_ratio=0.05))
    assert judge.observe([obs("a1", ok=100, bad=1), obs("a2", ok=100, bad=0)]) is None
    breach = judge.observe([obs("a1", ok=100, bad=0), obs("a2", ok=80, bad=20)])
    assert breach is not None and breach.job == "svc-gpu-l4" and breach.alloc_id == "a2"
    assert "error ratio 0.200 above max_error_ratio 0.05" in breach.reason


def test_queue_compute_breach_and_no_limit_no_breach() -> None:
    assert SoakJudge("j", Thresholds()).observe([obs(queue=10_000, compute=1000, bad=50)]) is None
    breach = SoakJudge("j", Thresholds(max_queue_compute_ratio=2.0)).observe([obs(queue=2500, compute=1000)])
    assert breach is not None and "queue/compute ratio 2.50 above max_queue_compute_ratio 2.0" in breach.reason


def test_unreachable_or_missing_allocations_fail_the_soak() -> None:
    judge = SoakJudge("j", Thresholds())
    breach = judge.observe([obs("a1"), obs("a2", reachable=False)])
    assert breach is not None and breach.alloc_id == "a2" and "did not answer" in breach.reason
    empty = SoakJudge("j", Thresholds()).observe([])
    assert empty is not None and "no running allocation" in empty.reason


def test_p95_latency_is_judged_over_the_whole_soak() -> None:
    judge = SoakJudge("j", Thresholds(max_p95_latency_ms=50.0))
    for _ in range(19):
        assert judge.observe([obs("a1", ok=10, request_us=10 * 20_000)]) is None  # 20 ms
    assert judge.observe([obs("a2", ok=10, request_us=10 * 400_000)]) is None  # one 400 ms round
    assert judge.finish() is None  # one slow round in twenty is the 5 % the p95 allows
    assert judge.observe([obs("a2", ok=10, request_us=10 * 400_000)]) is None
    breach = judge.finish()
    assert breach is not None and breach.alloc_id == "a2" and "p95 latency 400.0 ms above" in breach.reason


def test_idle_soak_passes_thresholds_it_cannot_measure() -> None:
    judge = SoakJudge("j", Thresholds(max_p95_latency_ms=1.0, max_error_ratio=0.0, max_queue_compute_ratio=0.1))
    for _ in range(5):
        assert judge.observe([obs(ok=0, bad=0, queue=0, compute=0)]) is None
    assert judge.finish() is None and judge.rounds == 5
