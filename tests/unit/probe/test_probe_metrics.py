"""Metrics parsing against a real PyTriton 0.7 /metrics page, and reset-aware rate tracking."""

from __future__ import annotations

from pathlib import Path

import pytest

from nomad_triton.probe.metrics import MetricsSample, RateTracker, parse_metrics
from nomad_triton.probe.observations import ModelRates, Observation, ProbeState

PAGE = (Path(__file__).parents[2] / "fixtures" / "triton_metrics.txt").read_text()


def test_parses_real_triton_page_per_model() -> None:
    s = parse_metrics(PAGE)
    assert set(s.counters) == {"double"}
    c = s.counters["double"]
    assert c["success"] == 20 and c["inferences"] == 20 and c["executions"] == 20
    assert c["failure"] == 0  # four reason-labelled series summed
    assert c["queue_us"] == 1798 and c["compute_infer_us"] == 67310 and c["request_us"] == 72599
    assert s.pending == {"double": 0}
    assert s.gpu_utilization is None  # CPU-only run exports no nv_gpu_* series


def test_gpu_series_and_versions_are_aggregated() -> None:
    text = (
        "# TYPE nv_inference_count counter\n"
        'nv_inference_count{model="m",version="1"} 5\n'
        'nv_inference_count{model="m",version="2"} 7\n'
        "# TYPE nv_gpu_utilization gauge\n"
        'nv_gpu_utilization{gpu_uuid="a"} 0.5\n'
        'nv_gpu_utilization{gpu_uuid="b"} 1.0\n'
        "# TYPE nv_gpu_memory_used_bytes gauge\n"
        'nv_gpu_memory_used_bytes{gpu_uuid="a"} 100\n'
        'nv_gpu_memory_used_bytes{gpu_uuid="b"} 50\n'
    )
    s = parse_metrics(text)
    assert s.counters["m"]["inferences"] == 12
    assert s.versions == {"m": {"1", "2"}}  # loaded versions, shown by probe as m[1 2]
    rates = RateTracker().update("a", 1.0, s)
    assert rates["m"].versions == ("1", "2")
    obs = Observation(ts=1.0, alloc_id="a", address="h:1", state=ProbeState.REACHABLE, models=rates)
    assert Observation.from_json(obs.to_json()) == obs  # versions survive a recorded trace
    assert s.gpu_utilization == pytest.approx(0.75)
    assert s.gpu_memory_used_bytes == 150


def test_broken_triton_lines_and_empty_pages_are_value_errors() -> None:
    with pytest.raises(ValueError):
        parse_metrics('nv_inference_count{model="m" 5\n')
    with pytest.raises(ValueError):
        parse_metrics("  \n")


def test_unrelated_families_are_ignored() -> None:
    s = parse_metrics("# TYPE other gauge\nother{x=\"1\"} 3\n" + PAGE)
    assert set(s.counters) == {"double"} and s.counters["double"]["success"] == 20


def _sample(success: float, compute: float, request: float, queue: float = 0.0, pending: float = 0.0) -> MetricsSample:
    return MetricsSample(
        counters={"m": {"success": success, "failure": 0.0, "inferences": success, "executions": success,
                        "queue_us": queue, "compute_infer_us": compute, "request_us": request}},
        pending={"m": pending},
    )


def test_first_sample_has_no_rates_then_deltas_over_time() -> None:
    rt = RateTracker()
    first = rt.update("a", 10.0, _sample(100, 1_000_000, 2_000_000, pending=3))["m"]
    assert first.success_per_s is None and first.pending == 3
    r = rt.update("a", 12.0, _sample(300, 2_000_000, 6_000_000, queue=500_000))["m"]
    assert r.success_per_s == pytest.approx(100.0)
    assert r.compute_infer_us_per_s == pytest.approx(500_000.0)
    assert r.queue_us_per_s == pytest.approx(250_000.0)
    assert r.avg_latency_us == pytest.approx(4_000_000 / 200)
    assert r.reset is False


def test_counter_reset_is_flagged_and_uses_new_value() -> None:
    rt = RateTracker()
    rt.update("a", 0.0, _sample(1000, 9_000_000, 9_000_000))
    r = rt.update("a", 2.0, _sample(10, 100_000, 200_000))["m"]
    assert r.reset is True
    assert r.success_per_s == pytest.approx(5.0)  # increase since restart, Prometheus-style
    r2 = rt.update("a", 3.0, _sample(20, 200_000, 400_000))["m"]
    assert r2.reset is False and r2.success_per_s == pytest.approx(10.0)


def test_allocations_are_tracked_separately_and_forgotten() -> None:
    rt = RateTracker()
    rt.update("a", 0.0, _sample(0, 0, 0))
    rt.update("b", 0.0, _sample(50, 0, 0))
    assert rt.update("a", 1.0, _sample(10, 0, 0))["m"].success_per_s == 10
    assert rt.update("b", 1.0, _sample(70, 0, 0))["m"].success_per_s == 20
    rt.forget("a")
    assert rt.known() == {"b"}
    assert rt.update("a", 2.0, _sample(30, 0, 0))["m"].success_per_s is None


def test_non_increasing_timestamp_yields_no_rate() -> None:
    rt = RateTracker()
    rt.update("a", 5.0, _sample(0, 0, 0))
    assert rt.update("a", 5.0, _sample(10, 0, 0))["m"].success_per_s is None


def test_observation_json_round_trip() -> None:
    o = Observation(
        ts=1.5, alloc_id="x", address="127.0.0.1:1", state=ProbeState.REACHABLE, live=True, ready=False,
        models={"m": ModelRates(ready=True, success_per_s=2.0, compute_infer_us_per_s=10.0, reset=True)},
        metrics_ok=True,
    )
    back = Observation.from_json(o.to_json())
    assert back == o
    assert back.has_rates() is False  # reset sample is not trusted
    dead = Observation(ts=2.0, alloc_id="y", address="a", state=ProbeState.UNREACHABLE, error="timeout")
    assert Observation.from_json(dead.to_json()) == dead and not dead.reachable


def test_request_p95_comes_from_the_summary_and_nan_means_none() -> None:
    text = (
        "# TYPE nv_inference_request_summary_us summary\n"
        'nv_inference_request_summary_us{model="a",version="1",quantile="0.5"} 900\n'
        'nv_inference_request_summary_us{model="a",version="1",quantile="0.95"} 4200\n'
        'nv_inference_request_summary_us{model="b",version="1",quantile="0.95"} NaN\n'
        'nv_inference_request_summary_us_count{model="a",version="1"} 10\n'
    )
    sample = parse_metrics(text)
    assert sample.p95_us == {"a": 4200.0}
    rates = RateTracker().update("x", 1.0, sample)
    assert rates["a"].p95_latency_us == 4200.0 and "b" not in rates


def test_a_series_seen_before_is_read_with_its_new_value_not_the_cached_one() -> None:
    # Each distinct series is parsed once; later pages must still yield their own values.
    first = parse_metrics('nv_inference_count{model="m",version="1"} 5\n')
    second = parse_metrics('nv_inference_count{model="m",version="1"} 9 1700000000000\n')
    assert first.counters["m"]["inferences"] == 5 and second.counters["m"]["inferences"] == 9


def test_escaped_label_values_and_total_suffix_come_from_prometheus_client() -> None:
    text = (
        'nv_inference_count{model="a \\"quoted\\" }name",version="1"} 3\n'
        'nv_inference_request_success_total{model="b"} 4\n'
    )
    s = parse_metrics(text)
    assert s.counters == {'a "quoted" }name': {"inferences": 3.0}, "b": {"success": 4.0}}


def test_a_malformed_line_is_refused_even_after_good_pages() -> None:
    parse_metrics('nv_inference_count{model="m",version="1"} 5\n')
    with pytest.raises(ValueError):
        parse_metrics('nv_inference_count{model="m",version="1"} 5\nnv_inference_count{model="m",version="1"} x\n')
    with pytest.raises(ValueError):
        parse_metrics('nv_inference_count{model="m",version="1"}\n')
    with pytest.raises(ValueError):
        parse_metrics('nv_inference_count{model=m} 5\n')


def test_other_exporters_families_with_similar_names_are_skipped() -> None:
    s = parse_metrics('nv_inference_count_other{model="m"} 5\nnv_gpu_power_usage{gpu_uuid="a"} 70\n'
                      'nv_inference_count{model="m"} 2\n')
    assert s.counters == {"m": {"inferences": 2.0}} and s.gpu_utilization is None
