"""Triton Prometheus metrics: text page -> per-model counters -> rates.

Triton exports cumulative µs/request counters, so load is only visible as deltas between two
scrapes. Parsing uses prometheus_client's own text parser (label escaping and exposition quirks are
its problem, not ours), once per distinct series; RateTracker keeps the previous sample per allocation and is reset-aware,
because a restarted server starts its counters from zero and a naive delta would go negative.
"""

from __future__ import annotations

import math
import re
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


_WANTED_SET = frozenset(
    (*COUNTERS, GAUGE_PENDING, SUMMARY_REQUEST, "nv_gpu_utilization", "nv_gpu_memory_used_bytes", "nv_gpu_memory_total_bytes")
)

# Series text (`name{labels}`) -> (name, labels) as prometheus_client parsed it. A cluster serves a
# few hundred distinct series (models x versions x Triton's counters) however many allocations it
# has, and a later scrape of a series changes only its value: parsing each series once takes the
# parser (~45 us per sample, ~0.5 ms per page) off the per-scrape path, which at 10,000
# allocations a round was 5 s of one core. Bounded: cleared when a churn of series outgrows it.
_SERIES: dict[str, tuple[str, dict[str, str]]] = {}
_SERIES_MAX = 20_000


def _series(key: str) -> tuple[str, dict[str, str]]:
    """Name and labels of one series, parsed by prometheus_client the first time it is seen."""
    hit = _SERIES.get(key)
    if hit is None:
        families = list(text_string_to_metric_families(key + " 0\n"))
        if len(families) != 1 or len(families[0].samples) != 1:
            raise ValueError(f"not one Prometheus sample: {key[:80]!r}")
        sample = families[0].samples[0]
        if len(_SERIES) >= _SERIES_MAX:
            _SERIES.clear()
        hit = _SERIES[key] = (sample.name, dict(sample.labels))
    return hit


# Every sample line of Triton's own families (`nv_inference_*`, `nv_gpu_*`) as (series, value), found
# by one C-level scan of the page (a Triton page is mostly HELP/TYPE lines and families we skip).
_TRITON_SAMPLE = re.compile(r"\n(nv_(?:inference|gpu)_[^ \t{\n]*(?:\{[^\n]*\})?)[ \t]+([^ \t\n]+)")
_UNUSED: tuple[str, dict[str, str]] = ("", {})  # cached verdict for a series of a family we skip


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of the samples of the families we use, in page order.

    A sample line is `series value [timestamp]`; its series is what prometheus_client parses (and
    refuses when malformed), the value is a Prometheus float (NaN and +Inf included). Other
    families and comment lines are skipped unparsed: one exporter's extra families never cost us.
    """
    page = "\n" + text
    found = _TRITON_SAMPLE.findall(page)
    if len(found) != page.count("\nnv_inference_") + page.count("\nnv_gpu_"):
        return _samples_strict(text)  # some line of ours did not scan: find it and say what is wrong
    out = []
    series = _SERIES
    for key, value in found:
        hit = series.get(key)
        if hit is None:
            hit = _new_series(key)
        if hit is not _UNUSED:
            out.append((hit[0], hit[1], float(value)))
    return out


def _samples_strict(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Line by line, for a page the fast scan could not read: the first bad line of one of our
    families raises ValueError (prometheus_client's parser names its fault)."""
    out = []
    for line in text.splitlines():
        if not line.startswith(("nv_inference_", "nv_gpu_")):
            continue
        close = line.rfind("}")
        key, rest = (line[: close + 1], line[close + 1:].split()) if close > 0 else (line.split()[0], line.split()[1:])
        hit = _new_series(key)
        if hit is _UNUSED:
            continue
        if not 1 <= len(rest) <= 2:
            raise ValueError(f"not a Prometheus sample line: {line[:80]!r}")
        out.append((hit[0], hit[1], float(rest[0])))
    return out


def _new_series(key: str) -> tuple[str, dict[str, str]]:
    """First sight of a series: _UNUSED if its family is not one we use, else parsed and kept."""
    brace = key.find("{")
    name = key[:brace] if brace >= 0 else key
    if (name[:-6] if name.endswith("_total") else name) not in _WANTED_SET:
        if len(_SERIES) >= _SERIES_MAX:
            _SERIES.clear()
        _SERIES[key] = _UNUSED
        return _UNUSED
    return _series(key)


def parse_metrics(text: str) -> MetricsSample:
    """Parse a Triton /metrics page. Raises ValueError on text that is not Prometheus exposition."""
    out = MetricsSample()
    if not text.strip():
        raise ValueError("empty metrics page")
    gpu_util: list[float] = []
    mem_used: list[float] = []
    mem_total: list[float] = []
    for sample_name, labels, value in _samples(text):
        name = sample_name[:-6] if sample_name.endswith("_total") else sample_name
        model = labels.get("model")
        if name in COUNTERS and model is not None:
            per = out.counters.setdefault(model, {})
            key = COUNTERS[name]
            per[key] = per.get(key, 0.0) + value
            if "version" in labels:
                out.versions.setdefault(model, set()).add(labels["version"])
        elif name == GAUGE_PENDING and model is not None:
            out.pending[model] = out.pending.get(model, 0.0) + value
        elif (name == SUMMARY_REQUEST and model is not None and labels.get("quantile") == "0.95"
              and not math.isnan(value)):
            out.p95_us[model] = max(out.p95_us.get(model, 0.0), value)  # worst version
        elif name == "nv_gpu_utilization":
            gpu_util.append(value)
        elif name == "nv_gpu_memory_used_bytes":
            mem_used.append(value)
        elif name == "nv_gpu_memory_total_bytes":
            mem_total.append(value)
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


def _version_order(v: str) -> tuple[int, str]:
    return len(v), v  # numeric order for Triton's decimal version directories


class RateTracker:
    """Turns successive MetricsSamples of many allocations into per-model rates.

    Not thread-safe by design: one event loop owns it. `forget` drops an allocation that went away
    so a later allocation reusing its id does not diff against stale counters.
    """

    def __init__(self) -> None:
        self._prev: dict[str, tuple[float, MetricsSample]] = {}

    def update(
        self, alloc_id: str, ts: float, sample: MetricsSample, ready: dict[str, bool | None] | None = None,
    ) -> dict[str, ModelRates]:
        """Rates per model since this allocation's previous sample; `ready` (per model, when the
        probe knows it) is carried into each ModelRates rather than copied in afterwards."""
        ready = ready or {}
        prev = self._prev.get(alloc_id)
        self._prev[alloc_id] = (ts, sample)
        models = set(sample.counters) | set(sample.pending) | set(sample.p95_us)
        result: dict[str, ModelRates] = {}
        for model in sorted(models):
            cur = sample.counters.get(model, {})
            pending = sample.pending.get(model)
            p95 = sample.p95_us.get(model)
            loaded = sample.versions.get(model, ())
            versions = tuple(loaded) if len(loaded) <= 1 else tuple(sorted(loaded, key=_version_order))
            if prev is None or ts <= prev[0] or model not in prev[1].counters:
                result[model] = ModelRates(ready=ready.get(model), pending=pending, p95_latency_us=p95,
                                           versions=versions)
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
                ready=ready.get(model),
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
