"""The PromQL the project ships: the autoscaler's Prometheus source and the Grafana dashboard.

One place, so the dashboard shows exactly what the autoscaler decides on. Label names are the ones
the scrape configs' relabelling sets (nomad_triton.observe.prometheus_config): `job` (Nomad job),
`pool`, `group`, `alloc`, `node`, `namespace`; `model` is Triton's own.

Source queries use `string.Template` placeholders (`$job`, `$group`, `$window`): every one must
answer one series per (alloc, model), which is what the direct scrape sees per allocation, so the
same decision core runs on either source.
"""

from __future__ import annotations

# ModelRates field -> PromQL (per allocation and model). Rates of Triton's cumulative counters,
# the gauge as it is: the same numbers probe.metrics.RateTracker derives from two scrapes.
_SEL = '{job="$job", group="$group"}'
SOURCE_QUERIES: dict[str, str] = {
    "success_per_s": f"sum by (alloc, model) (rate(nv_inference_request_success{_SEL}[$window]))",
    "failure_per_s": f"sum by (alloc, model) (rate(nv_inference_request_failure{_SEL}[$window]))",
    "inferences_per_s": f"sum by (alloc, model) (rate(nv_inference_count{_SEL}[$window]))",
    "executions_per_s": f"sum by (alloc, model) (rate(nv_inference_exec_count{_SEL}[$window]))",
    "queue_us_per_s": f"sum by (alloc, model) (rate(nv_inference_queue_duration_us{_SEL}[$window]))",
    "compute_infer_us_per_s": f"sum by (alloc, model) (rate(nv_inference_compute_infer_duration_us{_SEL}[$window]))",
    "request_us_per_s": f"sum by (alloc, model) (rate(nv_inference_request_duration_us{_SEL}[$window]))",
    "pending": f"sum by (alloc, model) (nv_inference_pending_request_count{_SEL})",
    "p95_latency_us": 'max by (alloc, model) (nv_inference_request_summary_us{job="$job", group="$group", '
                      'quantile="0.95"})',
}
# Queries allowed to return no series (a Triton without latency summaries still autoscales).
OPTIONAL_SOURCE_QUERIES = frozenset({"p95_latency_us"})
# Which allocations Prometheus scrapes, and when it last did (stale series never count as data).
UP_QUERY = f"up{_SEL}"
UP_TS_QUERY = f"timestamp(up{_SEL})"

# Dashboard (Grafana variables $pool, $job; $__rate_interval is Grafana's own).
_D = '{pool=~"$pool", job=~"$job"}'
_BY = "by (pool, job)"


def _ratio(num: str, den: str) -> str:
    return f"{num} / clamp_min({den}, 1)"


DASHBOARD: dict[str, dict[str, str]] = {
    "Allocations": {
        "desired (autoscaler)": f"max {_BY} (nomad_triton_autoscaler_desired_count{_D})",
        "running (scraped)": f'count {_BY} (up{{pool=~"$pool", job=~"$job", alloc!=""}})',
        "healthy (answering)": f'count {_BY} (up{{pool=~"$pool", job=~"$job", alloc!=""}} == 1)',
    },
    "Throughput (req/s)": {
        "{{job}}": f"sum {_BY} (rate(nv_inference_request_success{_D}[$__rate_interval]))",
    },
    "Latency (ms)": {
        "p50 {{job}}": f'max {_BY} (nv_inference_request_summary_us{{pool=~"$pool", job=~"$job", quantile="0.5"}}) / 1000',
        "p95 {{job}}": f'max {_BY} (nv_inference_request_summary_us{{pool=~"$pool", job=~"$job", quantile="0.95"}}) / 1000',
    },
    "Queue / compute time": {
        "{{job}}": _ratio(f"sum {_BY} (rate(nv_inference_queue_duration_us{_D}[$__rate_interval]))",
                          f"sum {_BY} (rate(nv_inference_compute_infer_duration_us{_D}[$__rate_interval]))"),
    },
    "Pending requests": {
        "{{job}}": f"sum {_BY} (nv_inference_pending_request_count{_D})",
    },
    "GPU utilisation": {
        "{{job}}": f"avg {_BY} (nv_gpu_utilization{_D})",
    },
    "GPU memory used (bytes)": {
        "{{job}}": f"sum {_BY} (nv_gpu_memory_used_bytes{_D})",
    },
    "CPU utilisation": {
        "{{job}}": f"avg {_BY} (nv_cpu_utilization{_D})",
    },
    "Autoscaler decisions (per 5m)": {
        "{{job}} {{direction}}": f"sum by (job, direction) (increase(nomad_triton_autoscaler_decisions_total{_D}[5m]))",
    },
    "Autoscaler load ratio": {
        "{{job}}": f"max {_BY} (nomad_triton_autoscaler_load_ratio{_D})",
    },
}
# Scaling events as annotations: a scale request that went through (or was recorded, dry run).
ANNOTATION_QUERY = (
    'sum by (job, result) (increase(nomad_triton_autoscaler_scale_requests_total{job=~"$job", '
    'result=~"ok|dry_run"}[1m])) > 0'
)
# Panels whose metric only exists on a GPU host (Triton exports no nv_gpu_* series without one).
GPU_ONLY_PANELS = ("GPU utilisation", "GPU memory used (bytes)")
