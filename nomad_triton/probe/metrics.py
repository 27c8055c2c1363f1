"""Triton Prometheus metrics: text page -> per-model counters -> rates.

Triton exports cumulative µs/request counters, so load is only visible as deltas between two
scrapes. Parsing uses prometheus_client's own text parser (label escaping and exposition quirks are
its problem, not ours); RateTracker keeps the previous sample per allocation and is reset-aware,
because a restarted server starts its counters from zero and a naive delta would go negative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from nomad_triton.probe.observations import ModelRates

# Triton metric name -> our counter key. All are cumulative counters except `pending` (gauge).
COUNTERS: dict[str, str] = {
    "nv_inference_request_success": "success",
    "nv_inference_request_failure": "failure",
    "nv_inference_count": "inferences",
    "nv_inference_exec_count": "executions",
    "nv_inference_queue_duration_us": "queue_us",
    "nv_inference_compute_infer_duration_us": "compute_infer_us",
    "nv_inference_request_duration_us": "request_us",
}
GAUGE_PENDING = "nv_inference_pending_request_count"
SUMMARY_REQUEST = "nv_inference_request_summary_us"  # quantile="0.95" -> ModelRates.p95_latency_us


@dataclass
class MetricsSample:
    """One scrape: per-model counter totals (summed over versions and failure reasons) and gauges."""

    counters: dict[str, dict[str, float]] = field(default_factory=dict)
    pending: dict[str, float] = field(default_factory=dict)
    p95_us: dict[str, float] = field(default_factory=dict)
    versions: dict[str, set[str]] = field(default_factory=dict)  # loaded versions per model
    gpu_utilization: float | None = None
    gpu_memory_used_bytes: float | None = None
    gpu_memory_total_bytes: float | None = None


def _sample_family_name(sample_name: str, family_name: str) -> str:
    # prometheus_client strips `_total` from counter families; Triton's names have none, but
    # accept both so a future exporter change does not silently zero our rates.
    return family_name if sample_name in (family_name, family_name + "_total") else sample_name


_WANTED_SET = frozenset(
    (*COUNTERS, GAUGE_PENDING, SUMMARY_REQUEST, "nv_gpu_utilization", "nv_gpu_memory_used_bytes", "nv_gpu_memory_total_bytes")
)


def _relevant(text: str) -> str:
    """Only the samples and TYPE lines of families we use (the parser costs ~20 µs per labelled
    sample, and at 1,000 allocations per second that is most of a core). HELP lines are dropped."""
    keep = []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name = line[7:].split(" ", 1)[0]
        elif line.startswith("#") or not line.strip():
            continue
        else:
            name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in _WANTED_SET and (name != SUMMARY_REQUEST or 'quantile="0.95"' in line or line[0] == "#"):
            keep.append(line)  # of the summary only the p95 samples: each parsed sample costs
    return "\n".join(keep) + "\n"


def parse_metrics(text: str) -> MetricsSample:
    """Parse a Triton /metrics page. Raises ValueError on text that is not Prometheus exposition."""
    out = MetricsSample()
    if not text.strip():
        raise ValueError("empty metrics page")
    gpu_util: list[float] = []
    mem_used: list[float] = []
    mem_total: list[float] = []
    for family in text_string_to_metric_families(_relevant(text)):
        for s in family.samples:
            name = _sample_family_name(s.name, family.name)
            model = s.labels.get("model")
            if name in COUNTERS and model is not None:
                per = out.counters.setdefault(model, {})
                key = COUNTERS[name]
                per[key] = per.get(key, 0.0) + float(s.value)
                if "version" in s.labels:
                    out.versions.setdefault(model, set()).add(s.labels["version"])
            elif name == GAUGE_PENDING and model is not None:
                out.pending[model] = out.pending.get(model, 0.0) + float(s.value)
            elif (name == SUMMARY_REQUEST and model is not None and s.labels.get("quantile") == "0.95"
                  and not math.isnan(s.value)):
                out.p95_us[model] = max(out.p95_us.get(model, 0.0), float(s.value))  # worst version
            elif name == "nv_gpu_utilization":
                gpu_util.append(float(s.value))
            elif name == "nv_gpu_memory_used_bytes":
                mem_used.append(float(s.value))
            elif name == "nv_gpu_memory_total_bytes":
                mem_total.append(float(s.value))
    if gpu_util:
        out.gpu_utilization = sum(gpu_util) / len(gpu_util)
    if mem_used:
        out.gpu_memory_used_bytes = sum(mem_used)
    if mem_total:
        out.gpu_memory_total_bytes = sum(mem_total)
    return out


def _rate(cur: float | None, prev: float | None, dt: float) -> tuple[float | None, bool]:
    """Per-second increase; on a negative delta (restart) the increase is the new value."""
    if cur is None or prev is None:
        return None, False
    delta = cur - prev
    if delta < 0:
        return cur / dt, True
    return delta / dt, False


class RateTracker:
    """Turns successive MetricsSamples of many allocations into per-model rates.

    Not thread-safe by design: one event loop owns it. `forget` drops an allocation that went away
    so a later allocation reusing its id does not diff against stale counters.
    """

    def __init__(self) -> None:
        self._prev: dict[str, tuple[float, MetricsSample]] = {}

    def update(self, alloc_id: str, ts: float, sample: MetricsSample) -> dict[str, ModelRates]:
        prev = self._prev.get(alloc_id)
        self._prev[alloc_id] = (ts, sample)
        models = set(sample.counters) | set(sample.pending) | set(sample.p95_us)
        result: dict[str, ModelRates] = {}
        for model in sorted(models):
            cur = sample.counters.get(model, {})
            pending = sample.pending.get(model)
            p95 = sample.p95_us.get(model)
            versions = tuple(sorted(sample.versions.get(model, ()), key=lambda v: (len(v), v)))
            if prev is None or ts <= prev[0] or model not in prev[1].counters:
                result[model] = ModelRates(pending=pending, p95_latency_us=p95, versions=versions)
                continue
            dt = ts - prev[0]
            old = prev[1].counters[model]
            rates: dict[str, float | None] = {}
            reset = False
            for key in COUNTERS.values():
                r, was_reset = _rate(cur.get(key), old.get(key), dt)
                rates[key] = r
                reset = reset or was_reset
            success = rates["success"]
            request_us = rates["request_us"]
            avg = request_us / success if success and request_us is not None else None
            result[model] = ModelRates(
                success_per_s=success,
                failure_per_s=rates["failure"],
                inferences_per_s=rates["inferences"],
                executions_per_s=rates["executions"],
                queue_us_per_s=rates["queue_us"],
                compute_infer_us_per_s=rates["compute_infer_us"],
                request_us_per_s=request_us,
                pending=pending,
                avg_latency_us=avg,
                p95_latency_us=p95,
                reset=reset,
                versions=versions,
            )
        return result

    def forget(self, alloc_id: str) -> None:
        self._prev.pop(alloc_id, None)

    def known(self) -> set[str]:
        return set(self._prev)
