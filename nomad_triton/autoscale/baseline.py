"""The anchor we measure against: Nomad Autoscaler's `target-value` strategy with its defaults.

Reproduced from its documentation and plugin source (hashicorp/nomad-autoscaler,
plugins/builtin/strategy/target-value): factor = metric/target; direction up if factor > 1+t,
down if factor < 1-t (threshold t defaults to 0.01), none otherwise; new count =
ceil(count * factor) (ceil(factor) from zero). Agent defaults: evaluation_interval 10s,
cooldown 5m applied after *any* action, query_window 1m. The metric is the usual APM query for a
Triton job, the average per-allocation utilisation over the query window
(`avg(rate(nv_inference_compute_infer_duration_us[1m]))/1e6`): only allocations that report
metrics are averaged, so starting allocations are invisible, as they are to Prometheus.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from nomad_triton.autoscale.policy import Decision, PolicyState
from nomad_triton.probe.observations import Observation


@dataclass(frozen=True)
class BaselineConfig:
    target: float = 0.7
    threshold: float = 0.01
    evaluation_interval_s: float = 10.0
    cooldown_s: float = 300.0
    query_window_s: float = 60.0
    min_count: int = 1
    max_count: int = 10
    instances_per_replica: int = 1


def decide_baseline(
    observations: list[Observation], state: PolicyState, config: BaselineConfig, now: float
) -> Decision:
    """One target-value evaluation; same Decision shape as our policy so both replay identically."""
    cfg = config
    n = state.desired
    window = [o for o in observations if now - cfg.query_window_s <= o.ts <= now and o.has_rates()]
    signals: dict[str, float | int | None] = {"desired": n, "metric": None, "factor": None}
    last = max((t for t in (state.last_up_at, state.last_down_at) if t is not None), default=None)
    if last is not None and now - last < cfg.cooldown_s:
        return Decision(None, "none", "cooldown", signals, state)
    if not window:
        return Decision(None, "none", "no metric", signals, state)
    # Per-sample utilisation, averaged over the window and over reporting allocations.
    metric = sum(o.total("compute_infer_us_per_s") / 1e6 / cfg.instances_per_replica for o in window) / len(window)
    factor = metric / cfg.target if cfg.target else metric
    signals.update(metric=metric, factor=factor)
    if n == 0:
        direction = "up" if factor > 0 else "down"
        new = math.ceil(factor)
    elif factor < 1 - cfg.threshold:
        direction, new = "down", math.ceil(n * factor)
    elif factor > 1 + cfg.threshold:
        direction, new = "up", math.ceil(n * factor)
    else:
        return Decision(None, "none", f"factor {factor:.3f} within threshold", signals, state)
    new = max(cfg.min_count, min(cfg.max_count, new))
    if new == n:
        return Decision(None, "none", f"factor {factor:.3f} gives the same count", signals, state)
    return Decision(new, direction, f"scaling {direction} because factor is {factor:f}", signals, replace(state))
