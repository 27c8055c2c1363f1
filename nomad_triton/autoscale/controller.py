"""`autoscale run`: the loop around one task group's GroupScaler (the shared decision core).

The decision core (observe -> pure policy -> scale event) lives in autoscale.core and is the same
one the cluster-wide agent (autoscale.agent) steps; this module adds what a one-group process
needs around it: the interval loop, the optional HA lock, and its own Prometheus /metrics.
Errors never kill it (Nomad Autoscaler #410, evaluation silently stopping): a failed step is
logged, counted on /metrics and the next step runs on schedule.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from nomad_triton.autoscale.core import ACTIVE_DEPLOYMENT, GroupScaler, ScaleTarget, log_event
from nomad_triton.autoscale.core import summarize as _summary
from nomad_triton.autoscale.lock import LeaderLock
from nomad_triton.autoscale.policy import Decision, PolicyState, ScalingPolicyConfig
from nomad_triton.autoscale.sources import ObservationSource, Target
from nomad_triton.autoscale.sources.direct import DirectSource
from nomad_triton.probe.observations import Observation
from nomad_triton.probe.triton import Prober

__all__ = ["ACTIVE_DEPLOYMENT", "Controller", "ControllerSettings", "ScaleTarget", "log_event", "_summary"]


@dataclass(frozen=True)
class ControllerSettings:
    job: str
    group: str
    models: tuple[str, ...] = ()
    interval_s: float = 1.0
    probe_timeout_s: float = 0.8
    dry_run: bool = False
    history_s: float = 120.0


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        p = "nomad_triton_autoscaler_"
        self.desired = Gauge(p + "desired_count", "Desired count read from Nomad", registry=registry)
        self.demand = Gauge(p + "demand_replicas", "Estimated demand in fully busy replicas", registry=registry)
        self.load_ratio = Gauge(p + "load_ratio", "Demand / (desired * target utilisation)", registry=registry)
        self.saturation = Gauge(p + "saturation", "rate(queue_us) / rate(compute_infer_us)", registry=registry)
        self.allocs = Gauge(p + "allocations", "Probed allocations by state", ["state"], registry=registry)
        self.decisions = Counter(p + "decisions_total", "Policy decisions", ["direction"], registry=registry)
        self.scale_requests = Counter(p + "scale_requests_total", "Scale API calls", ["result"], registry=registry)
        self.step_errors = Counter(p + "step_errors_total", "Steps that failed", registry=registry)
        self.step_seconds = Histogram(p + "step_seconds", "Duration of one observe/decide/act step",
                                      buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5), registry=registry)


class Controller:
    def __init__(
        self,
        client: ScaleTarget,
        settings: ControllerSettings,
        config: ScalingPolicyConfig,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
        lock: LeaderLock | None = None,
        source: ObservationSource | None = None,
    ) -> None:
        self.client = client
        self.lock = lock
        self.leading: bool | None = None
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.metrics = _Metrics(self.registry)
        self.leader_gauge = Gauge("nomad_triton_autoscaler_leader", "1 when this replica holds the lock",
                                  registry=self.registry)
        self.target = Target(job=settings.job, group=settings.group, models=settings.models)
        self.source: ObservationSource = source or DirectSource(
            client, Prober(timeout_s=settings.probe_timeout_s, clock=clock))
        self.scaler = GroupScaler(client, self.target, config, self.source, dry_run=settings.dry_run,
                                  history_s=settings.history_s, clock=clock,
                                  may_act=(lambda: lock.held) if lock is not None else None)

    @property
    def config(self) -> ScalingPolicyConfig:
        return self.scaler.config

    @property
    def state(self) -> PolicyState | None:
        return self.scaler.state

    @property
    def history(self) -> deque[Observation]:
        return self.scaler.history

    @property
    def last_decision(self) -> Decision | None:
        return self.scaler.last_decision

    async def aclose(self) -> None:
        await self.source.aclose()

    async def _call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kw)

    async def step(self) -> Decision:
        """One observe -> decide -> act round. Raises on Nomad trouble (run() counts and survives it)."""
        with self.metrics.step_seconds.time():
            failed_before = self.scaler.scale_errors
            try:
                out = await self.scaler.step()
            finally:
                if self.scaler.scale_errors > failed_before:
                    self.metrics.decisions.labels(direction=self.scaler.failed_direction).inc()
                    self.metrics.scale_requests.labels(result="error").inc()
            d = out.decision
            self.metrics.decisions.labels(direction=d.direction).inc()
            if out.action in ("ok", "deferred", "dry_run"):
                self.metrics.scale_requests.labels(result=out.action).inc()
            self._export(d, out.observations)
            return d

    def _export(self, d: Decision, observations: list[Observation]) -> None:
        m = self.metrics
        assert self.state is not None
        m.desired.set(self.state.desired)
        for name, gauge in (("demand", m.demand), ("load_ratio", m.load_ratio), ("saturation", m.saturation)):
            v = d.signals.get(name)
            gauge.set(float(v) if v is not None else float("nan"))
        counts = {"reachable": 0, "unreachable": 0, "not_ready": 0}
        for o in observations:
            counts["reachable" if o.reachable else "unreachable"] += 1
            if o.reachable and not o.ready:
                counts["not_ready"] += 1
        for k, v in counts.items():
            m.allocs.labels(state=k).set(v)

    async def run(self, stop: asyncio.Event | None = None, max_steps: int | None = None,
                  deadline_s: float | None = None) -> int:
        """Step every `interval_s` until `stop` is set, `max_steps` ran or `deadline_s` passed.

        Returns the number of steps that failed; a failure is logged and counted, never fatal.
        """
        stop = stop or asyncio.Event()
        failures = steps = 0
        end = time.monotonic() + deadline_s if deadline_s is not None else None
        try:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    if await self._lead():
                        await self.step()
                except Exception as exc:  # noqa: BLE001 - the loop must survive anything a step hits
                    failures += 1
                    self.metrics.step_errors.inc()
                    log_event("step_failed", job=self.settings.job, error=f"{type(exc).__name__}: {exc}")
                steps += 1
                if max_steps is not None and steps >= max_steps:
                    break
                if end is not None and time.monotonic() >= end:
                    break
                delay = max(0.0, self.settings.interval_s - (time.monotonic() - started))
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                except TimeoutError:
                    pass
        finally:
            await self.aclose()
            if self.lock is not None:
                await self._call(self.lock.release)
        return failures

    async def _lead(self) -> bool:
        """Without a lock always lead; with one, only the holder steps. A replica that loses the lock
        drops its state, so if it leads again it starts from Nomad's desired count, never stale."""
        if self.lock is None:
            return True
        leading = bool(await self._call(self.lock.ensure))
        if leading != self.leading:
            log_event("leader" if leading else "standby", job=self.settings.job, path=self.lock.path)
            if not leading:
                self.scaler.reset()
        self.leading = leading
        self.leader_gauge.set(1 if leading else 0)
        return leading
