"""The Prometheus source's pure parts: same observations as the direct scrape from the same metrics,
missing/stale series never scale in, and malformed answers are errors naming policy and query."""

from __future__ import annotations

from string import Template

import pytest

from nomad_triton.autoscale.policy import PolicyState, ScalingPolicyConfig, decide
from nomad_triton.autoscale.sources import Target
from nomad_triton.autoscale.sources.prometheus import (
    PrometheusSettings,
    QueryError,
    _per_series,
    expand,
    observations_from_vectors,
    parse_check,
)
from nomad_triton.observe.queries import SOURCE_QUERIES
from nomad_triton.probe.metrics import COUNTERS, GAUGE_PENDING, SUMMARY_REQUEST, RateTracker, parse_metrics

P95 = {"mlp": 4200.0, "relu_onnx": 900.0}  # µs, Triton's summary quantile 0.95
TARGET = Target(job="triton-cpu", group="triton", models=("mlp",))
ALLOCS = ("11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222")
FIELD_OF = {"success": "success_per_s", "failure": "failure_per_s", "inferences": "inferences_per_s",
            "executions": "executions_per_s", "queue_us": "queue_us_per_s",
            "compute_infer_us": "compute_infer_us_per_s", "request_us": "request_us_per_s"}


def exposition(counters: dict[str, dict[str, float]], pending: dict[str, float]) -> str:
    """A Triton-shaped /metrics page: counters and the pending gauge per model."""
    lines = []
    for metric, key in COUNTERS.items():
        lines.append(f"# TYPE {metric} counter")
        for model, values in counters.items():
            lines.append(f'{metric}{{model="{model}",version="1"}} {values[key]}')
    lines.append(f"# TYPE {GAUGE_PENDING} gauge")
    lines += [f'{GAUGE_PENDING}{{model="{m}",version="1"}} {v}' for m, v in pending.items()]
    lines.append(f"# TYPE {SUMMARY_REQUEST} summary")
    for m in counters:
        lines += [f'{SUMMARY_REQUEST}{{model="{m}",version="1",quantile="{q}"}} {P95[m] * f}'
                  for q, f in (("0.5", 0.5), ("0.95", 1.0))]
        lines += [f'{SUMMARY_REQUEST}_count{{model="{m}",version="1"}} 10', f'{SUMMARY_REQUEST}_sum{{model="{m}",version="1"}} 1']
    return "\n".join(lines) + "\n"


def sample(scale: float) -> dict[str, dict[str, float]]:
    base = {"success": 100, "failure": 2, "inferences": 180, "executions": 60, "queue_us": 40_000,
            "compute_infer_us": 250_000, "request_us": 330_000}
    return {"mlp": {k: v * scale for k, v in base.items()}, "relu_onnx": {k: v * scale / 4 for k, v in base.items()}}


def prometheus_answer(t0: dict, t1: dict, pending: dict, dt: float, alloc: str) -> dict[str, list]:
    """What Prometheus answers to the default queries for one allocation scraped at t0 and t1
    (two samples, a window covering both: rate() is the increase over their distance)."""
    out: dict[str, list] = {f: [] for f in SOURCE_QUERIES}
    for model in t1:
        for key, field in FIELD_OF.items():
            out[field].append({"metric": {"alloc": alloc, "model": model},
                               "value": [0, str((t1[model][key] - t0[model][key]) / dt)]})
        out["pending"].append({"metric": {"alloc": alloc, "model": model}, "value": [0, str(pending[model])]})
        out["p95_latency_us"].append({"metric": {"alloc": alloc, "model": model}, "value": [0, str(P95[model])]})
    return out


def test_direct_and_prometheus_sources_give_the_same_observations_from_the_same_metrics() -> None:
    dt, now = 5.0, 1000.0
    pending = {"mlp": 3.0, "relu_onnx": 0.0}
    tracker = RateTracker()
    fields: dict[str, dict] = {f: {} for f in SOURCE_QUERIES}
    up, up_ts, direct = [], [], {}
    for i, alloc in enumerate(ALLOCS):
        t0, t1 = sample(1.0 + i), sample(3.0 + 2 * i)
        tracker.update(alloc, now - dt, parse_metrics(exposition(t0, pending)))
        direct[alloc] = tracker.update(alloc, now, parse_metrics(exposition(t1, pending)))
        for field, vec in prometheus_answer(t0, t1, pending, dt, alloc).items():
            fields[field].update(_per_series("p", field, SOURCE_QUERIES[field], vec))
        up.append({"metric": {"alloc": alloc}, "value": [now, "1"]})
        up_ts.append({"metric": {"alloc": alloc}, "value": [now, str(now - 1)]})
    obs = observations_from_vectors(TARGET, list(ALLOCS), up, up_ts, fields, now, max_age_s=10)
    assert [o.alloc_id for o in obs] == list(ALLOCS)
    for o in obs:
        assert o.has_rates() and o.ready and o.live
        for model, rates in direct[o.alloc_id].items():
            got = o.models[model]
            assert rates.p95_latency_us == P95[model]
            for field in (*FIELD_OF.values(), "pending", "avg_latency_us", "p95_latency_us"):
                assert getattr(got, field) == pytest.approx(getattr(rates, field)), (o.alloc_id, model, field)
    # ... and so the decision core decides the same on both.
    from dataclasses import replace

    direct_obs = [replace(o, models={m: replace(r, ready=True) for m, r in direct[o.alloc_id].items()}) for o in obs]
    cfg, st = ScalingPolicyConfig(min_count=1, max_count=5), PolicyState(desired=2)
    a, b = decide(obs, st, cfg, now), decide(direct_obs, st, cfg, now)
    assert (a.new_count, a.direction, a.reason) == (b.new_count, b.direction, b.reason)
    assert a.signals == b.signals


def _idle_fields(alloc: str) -> dict[str, dict]:
    return {f: {(alloc, "mlp"): 0.0} for f in SOURCE_QUERIES}


def test_missing_or_stale_series_never_scale_in() -> None:
    now = 500.0
    a, b = ALLOCS
    fields = _idle_fields(a)  # a is idle; b has no series at all (Prometheus has not scraped it)
    up = [{"metric": {"alloc": a}, "value": [now, "1"]}]
    obs = observations_from_vectors(TARGET, [a, b], up, [{"metric": {"alloc": a}, "value": [now, str(now)]}],
                                    fields, now, max_age_s=10)
    missing = obs[1]
    assert missing.reachable and not missing.ready and not missing.has_rates()
    assert missing.error == "no series in Prometheus"
    cfg = ScalingPolicyConfig(min_count=1, max_count=5, down_cooldown_s=0, down_stabilization_s=0)
    d = decide(obs, PolicyState(desired=2), cfg, now)
    assert d.new_count is None and "scale-in blocked" in d.reason, d.reason
    # A stale scrape (older than max_age) is no data either, even with values present.
    stale = observations_from_vectors(TARGET, [a], up, [{"metric": {"alloc": a}, "value": [now, str(now - 60)]}],
                                      fields, now, max_age_s=10)
    assert stale[0].error == "stale series in Prometheus" and not stale[0].has_rates()
    assert decide(stale, PolicyState(desired=2), cfg, now).new_count is None
    # The same idle group with fresh series for everyone does scale in: the hold above is the data's doing.
    both = {f: {**_idle_fields(a)[f], **{(b, "mlp"): 0.0}} for f in SOURCE_QUERIES}
    fresh = [{"metric": {"alloc": x}, "value": [now, str(now)]} for x in (a, b)]
    ups = [{"metric": {"alloc": x}, "value": [now, "1"]} for x in (a, b)]
    d = decide(observations_from_vectors(TARGET, [a, b], ups, fresh, both, now, 10), PolicyState(desired=2), cfg, now)
    assert d.direction == "down" and d.new_count == 1, d.reason


def test_up_zero_is_an_unreachable_allocation() -> None:
    a = ALLOCS[0]
    obs = observations_from_vectors(TARGET, [a], [{"metric": {"alloc": a}, "value": [1, "0"]}],
                                    [{"metric": {"alloc": a}, "value": [1, "1"]}], _idle_fields(a), 1.0, 10)
    assert not obs[0].reachable and obs[0].error == "Prometheus: up == 0"


def test_many_series_or_missing_labels_name_the_policy_and_query() -> None:
    q = "x"
    with pytest.raises(QueryError, match=r"^policy p/g: query pending \(x\): many series for alloc a model m"):
        _per_series("p/g", "pending", q, [{"metric": {"alloc": "a", "model": "m"}, "value": [0, "1"]}] * 2)
    with pytest.raises(QueryError, match="lack the alloc and model labels"):
        _per_series("p/g", "pending", q, [{"metric": {"job": "j"}, "value": [0, "1"]}])
    with pytest.raises(QueryError, match=r"does not parse"):
        parse_check("p/g", "pending", "sum by (alloc (x")


def test_default_queries_parse_and_fill_their_placeholders() -> None:
    for name, q in SOURCE_QUERIES.items():
        text = expand(q, TARGET, 30)
        assert '"triton-cpu"' in text and "$" not in text
        parse_check("p", name, text)
    with pytest.raises(KeyError):
        expand('up{job="$jobb"}', TARGET, 30)
    with pytest.raises(ValueError, match="unknown query name"):
        PrometheusSettings(address="http://x", queries={"nope": "up"}).merged()
    assert Template(SOURCE_QUERIES["pending"]).template.startswith("sum by (alloc, model)")
