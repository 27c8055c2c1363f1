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
_COUNTER_KEYS = tuple(COUNTERS.values())
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


_GPU_UTIL, _GPU_MEM_USED, _GPU_MEM_TOTAL = "nv_gpu_utilization", "nv_gpu_memory_used_bytes", "nv_gpu_memory_total_bytes"
_WANTED_SET = frozenset((*COUNTERS, GAUGE_PENDING, SUMMARY_REQUEST, _GPU_UTIL, _GPU_MEM_USED, _GPU_MEM_TOTAL))

# What one series contributes to a MetricsSample: (kind, model, counter key, version).
_Route = tuple[int, str, str, str | None]
_UNUSED, _COUNTER, _PENDING, _P95, _UTIL, _MEM_USED, _MEM_TOTAL = range(7)
_SKIP: _Route = (_UNUSED, "", "", None)

# Series text (`name{labels}`) -> its route, decided once from prometheus_client's parse of it. A
# cluster serves a few hundred distinct series (models x versions x Triton's counters) however
# many allocations it has, and a later scrape of a series changes only its value: parsing each
# series once takes the parser (~45 us per sample, ~0.5 ms per page) off the per-scrape path, which
# at 10,000 allocations a round was 5 s of one core. Bounded: cleared when churn outgrows it.
_ROUTES: dict[str, _Route] = {}
_ROUTES_MAX = 20_000

# Every sample line of Triton's own families (`nv_inference_*`, `nv_gpu_*`) as (series, value), found
# by one C-level scan of the page (a Triton page is mostly HELP/TYPE lines and families we skip).
_TRITON_SAMPLE = re.compile(r"\n(nv_(?:inference|gpu)_[^ \t{\n]*(?:\{[^\n]*\})?)[ \t]+([^ \t\n]+)")


def _route(key: str) -> _Route:
    """First sight of a series: prometheus_client parses it (and refuses it when malformed)."""
    brace = key.find("{")
    family = key[:brace] if brace >= 0 else key
    family = family[:-6] if family.endswith("_total") else family
    route = _SKIP
    if family in _WANTED_SET:
        families = list(text_string_to_metric_families(key + " 0\n"))
        if len(families) != 1 or len(families[0].samples) != 1:
            raise ValueError(f"not one Prometheus sample: {key[:80]!r}")
        labels = families[0].samples[0].labels
        model, version = labels.get("model"), labels.get("version")
        if family in COUNTERS and model is not None:
            route = (_COUNTER, model, COUNTERS[family], version)
        elif family == GAUGE_PENDING and model is not None:
            route = (_PENDING, model, "", version)
        elif family == SUMMARY_REQUEST and model is not None and labels.get("quantile") == "0.95":
            route = (_P95, model, "", version)
        elif family in (_GPU_UTIL, _GPU_MEM_USED, _GPU_MEM_TOTAL):
            route = ({_GPU_UTIL: _UTIL, _GPU_MEM_USED: _MEM_USED}.get(family, _MEM_TOTAL), "", "", None)
    if len(_ROUTES) >= _ROUTES_MAX:
        _ROUTES.clear()
    _ROUTES[key] = route
    return route


def _sample_lines(text: str) -> list[tuple[str, str]]:
    """(series, value text) of every sample line of Triton's families, in page order."""
    page = "\n" + text
    found: list[tuple[str, str]] = _TRITON_SAMPLE.findall(page)
    if len(found) == page.count("\nnv_inference_") + page.count("\nnv_gpu_"):
        return found
    # Some line of ours did not scan: go line by line so the bad one is named.
    found = []
    for line in text.splitlines():
        if line.startswith(("nv_inference_", "nv_gpu_")):
            close = line.rfind("}")
            key, rest = (line[: close + 1], line[close + 1:].split()) if close > 0 else (line.split()[0], line.split()[1:])
            if (_ROUTES.get(key) or _route(key))[0] == _UNUSED:
                continue
            if not 1 <= len(rest) <= 2:
                raise ValueError(f"not a Prometheus sample line: {line[:80]!r}")
            found.append((key, rest[0]))
    return found


def parse_metrics(text: str) -> MetricsSample:
    """Parse a Triton /metrics page. Raises ValueError on text that is not Prometheus exposition.

    Counters are summed over versions and failure reasons, p95 is the worst version's, GPU
    utilisation is the mean over GPUs and memory the sum. Other families are skipped unparsed.
    """
    out = MetricsSample()
    if not text.strip():
        raise ValueError("empty metrics page")
    counters, pending, p95, versions = out.counters, out.pending, out.p95_us, out.versions
    gpu: tuple[list[float], list[float], list[float]] = ([], [], [])
    routes = _ROUTES
    for key, value_text in _sample_lines(text):
        kind, model, counter, version = routes.get(key) or _route(key)
        if kind == _UNUSED:
            continue
        value = float(value_text)
        if kind == _COUNTER:
            per = counters.get(model)
            if per is None:
                per = counters[model] = {}
            per[counter] = per.get(counter, 0.0) + value
            if version is not None:
                loaded = versions.get(model)
                if loaded is None:
                    versions[model] = {version}
                else:
                    loaded.add(version)
        elif kind == _PENDING:
            pending[model] = pending.get(model, 0.0) + value
        elif kind == _P95:
            if not math.isnan(value):
                p95[model] = max(p95.get(model, 0.0), value)  # worst version
        else:
            gpu[kind - _UTIL].append(value)
    util, used, total = gpu
    if util:
        out.gpu_utilization = sum(util) / len(util)
    if used:
        out.gpu_memory_used_bytes = sum(used)
    if total:
        out.gpu_memory_total_bytes = sum(total)
    return out


def _version_order(v: str) -> tuple[int, str]:
    return len(v), v  # numeric order for Triton's decimal version directories


class RateTracker:
    """Turns successive MetricsSamples of many allocations into per-model rates.

    Not thread-safe by design: one event loop owns it. `forget` drops an allocation that went away
    so a later allocation reusing its id does not diff against stale counters.
    """

    def __init__(self) -> None:
        # Only the counters are kept (not the whole sample with its gauges and version sets): these
        # outlive a round for every allocation, and each object kept is one more for the garbage
        # collector to walk at 10,000 allocations.
        self._prev: dict[str, tuple[float, dict[str, dict[str, float]]]] = {}

    def update(
        self, alloc_id: str, ts: float, sample: MetricsSample, ready: dict[str, bool | None] | None = None,
    ) -> dict[str, ModelRates]:
        """Rates per model since this allocation's previous sample; `ready` (per model, when the
        probe knows it) is carried into each ModelRates rather than copied in afterwards."""
        ready = ready or {}
        prev = self._prev.get(alloc_id)
        self._prev[alloc_id] = (ts, sample.counters)
        counters, pending_of, p95_of = sample.counters, sample.pending, sample.p95_us
        models = counters.keys() | pending_of.keys() | p95_of.keys()
        result: dict[str, ModelRates] = {}
        for model in sorted(models):
            pending = pending_of.get(model)
            p95 = p95_of.get(model)
            loaded = sample.versions.get(model, ())
            versions = tuple(loaded) if len(loaded) <= 1 else tuple(sorted(loaded, key=_version_order))
            old = prev[1].get(model) if prev is not None and ts > prev[0] else None
            if old is None:
                result[model] = ModelRates(ready=ready.get(model), pending=pending, p95_latency_us=p95,
                                           versions=versions)
                continue
            dt = ts - prev[0]  # type: ignore[index]
            cur = counters.get(model, {})
            rates: dict[str, float | None] = {}
            reset = False
            for key in _COUNTER_KEYS:  # _rate, inlined: this runs for every model of every probe
                now, before = cur.get(key), old.get(key)
                if now is None or before is None:
                    rates[key] = None
                elif now < before:  # restarted: the increase since the restart is the new value
                    rates[key] = now / dt
                    reset = True
                else:
                    rates[key] = (now - before) / dt
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
