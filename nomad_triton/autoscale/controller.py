"""The autoscaling loop: observe a task group, ask the pure policy, act through Nomad's scale API.

Everything the policy needs to be pure lives here: the clock, the observation history, the
PolicyState carried between steps, and the side effects. Design points, each from an anchor's
known failure:

* Nomad is the authority on the desired count: every step re-reads `GET /v1/job/:id/scale`, so a
  manual scale or a re-submitted job (Nomad Autoscaler #527) is adopted, not fought.
* Deployment-aware: while a deployment is active Nomad refuses to scale ("job scaling blocked due
  to active deployment"); the decision is logged as deferred instead of erroring every second.
* Every scale request carries a Message and Meta with the signals and a compact summary of the
  observations behind it, so `nomad job scaling-events` explains each change. `dry_run` records
  the same event without a Count (Nomad's record-only scaling event).
* Errors never kill it (#410, evaluation silently stopping): a failed step is logged, counted on
  /metrics and the next step runs on schedule.
* Its own Prometheus /metrics (loopback by default) and one JSON log line per action.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from nomad_triton.autoscale.lock import LeaderLock
from nomad_triton.autoscale.policy import Decision, PolicyState, ScalingPolicyConfig, commit, decide
from nomad_triton.autoscale.sources import ObservationSource, Target
from nomad_triton.autoscale.sources.direct import DirectSource
from nomad_triton.probe.observations import Observation
from nomad_triton.probe.triton import Prober

log = logging.getLogger("nomad_triton.autoscale")
ACTIVE_DEPLOYMENT = {"running", "pending", "paused", "blocked", "unblocking", "initializing"}


class ScaleTarget(Protocol):
    """The slice of nomad_triton.nomad.client.NomadClient the controller uses."""

    def scale_status(self, job_id: str) -> dict[str, Any]: ...

    def scale(self, job_id: str, group: str, count: int | None, message: str,
              meta: dict[str, Any] | None = None, error: bool = False,
              policy_override: bool = False) -> dict[str, Any]: ...

    def latest_deployment(self, job_id: str) -> dict[str, Any] | None: ...

    def job_allocations(self, job_id: str, all_versions: bool = False) -> list[dict[str, Any]]: ...

    def allocation(self, alloc_id: str) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ControllerSettings:
    job: str
    group: str
    models: tuple[str, ...] = ()
    interval_s: float = 1.0
    probe_timeout_s: float = 0.8
    dry_run: bool = False
    history_s: float = 120.0


def log_event(event: str, **fields: Any) -> None:
    """One JSON object per line; values that are not JSON become strings."""
    log.info(json.dumps({"ts": round(time.time(), 3), "event": event, **fields}, default=str, sort_keys=True))


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


def _summary(observations: list[Observation]) -> list[dict[str, Any]]:
    """Compact per-allocation view for the scaling event's Meta (latest observation each)."""
    latest: dict[str, Observation] = {}
    for o in observations:
        if o.alloc_id not in latest or o.ts >= latest[o.alloc_id].ts:
            latest[o.alloc_id] = o
    out = []
    for o in sorted(latest.values(), key=lambda o: o.alloc_id):
        busy = o.total("compute_infer_us_per_s") / 1e6 if o.has_rates() else None
        out.append({"alloc": o.alloc_id[:8], "state": o.state.value, "ready": o.ready,
                    "busy": None if busy is None else round(busy, 3),
                    "pending": o.total("pending") if o.metrics_ok else None})
    return out


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
        self.config = config
        self.registry = registry or CollectorRegistry()
        self.metrics = _Metrics(self.registry)
        self.leader_gauge = Gauge("nomad_triton_autoscaler_leader", "1 when this replica holds the lock",
                                  registry=self.registry)
        self.state: PolicyState | None = None
        self.history: deque[Observation] = deque()
        self.last_decision: Decision | None = None
        self._clock = clock
        self.target = Target(job=settings.job, group=settings.group, models=settings.models)
        self.source: ObservationSource = source or DirectSource(
            client, Prober(timeout_s=settings.probe_timeout_s, clock=clock))

    async def aclose(self) -> None:
        await self.source.aclose()

    async def _call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        # python-nomad is synchronous; keep the event loop (and the probes) responsive.
        return await asyncio.to_thread(fn, *args, **kw)

    async def _desired(self) -> int:
        status = await self._call(self.client.scale_status, self.settings.job)
        groups = status.get("TaskGroups") or {}
        if self.settings.group not in groups:
            raise LookupError(f"job {self.settings.job!r} has no task group {self.settings.group!r}")
        return int(groups[self.settings.group].get("Desired") or 0)

    async def step(self) -> Decision:
        """One observe -> decide -> act round. Raises on Nomad trouble (run() counts and survives it)."""
        s = self.settings
        with self.metrics.step_seconds.time():
            desired = await self._desired()
            self.state = PolicyState(desired=desired) if self.state is None else replace(self.state, desired=desired)
            observations = await self.source.observe(self.target)
            now = self._clock()
            self.history.extend(observations)
            while self.history and self.history[0].ts < now - s.history_s:
                self.history.popleft()
            decision = decide(list(self.history), self.state, self.config, now)
            await self._act(decision, observations, now)
            self._export(decision, observations)
            self.last_decision = decision
            return decision

    async def _act(self, d: Decision, observations: list[Observation], now: float) -> None:
        s = self.settings
        assert self.state is not None
        self.metrics.decisions.labels(direction=d.direction).inc()
        if d.new_count is None:
            self.state = d.state
            return
        dep = await self._call(self.client.latest_deployment, s.job)
        if dep and dep.get("Status") in ACTIVE_DEPLOYMENT:
            self.state = d.state
            self.metrics.scale_requests.labels(result="deferred").inc()
            log_event("deferred", job=s.job, group=s.group, to=d.new_count, reason="active deployment",
                      deployment=dep.get("ID"))
            return
        meta = {
            "nomad_triton.policy": "nomad-triton",
            "nomad_triton.direction": d.direction,
            "nomad_triton.from": self.state.desired,
            "nomad_triton.to": d.new_count,
            "nomad_triton.fast_path": d.fast_path,
            "nomad_triton.signals": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.signals.items()},
            "nomad_triton.observations": _summary(observations),
        }
        if s.dry_run:
            message = f"dry-run: would scale {d.direction} to {d.new_count}: {d.reason}"
            await self._call(self.client.scale, s.job, s.group, None, message, meta)
            # Cooldowns apply as if it had acted, so a dry run records one event per cooldown.
            self.state = replace(commit(d, now), desired=self.state.desired)
            self.metrics.scale_requests.labels(result="dry_run").inc()
            log_event("dry_run", job=s.job, group=s.group, to=d.new_count, reason=d.reason)
            return
        message = f"nomad-triton: scale {d.direction} {self.state.desired} -> {d.new_count}: {d.reason}"
        try:
            await self._call(self.client.scale, s.job, s.group, d.new_count, message, meta)
        except Exception:
            self.state = d.state
            self.metrics.scale_requests.labels(result="error").inc()
            raise
        self.state = commit(d, now)
        self.metrics.scale_requests.labels(result="ok").inc()
        log_event("scaled", job=s.job, group=s.group, direction=d.direction, to=d.new_count, reason=d.reason,
                  fast_path=d.fast_path)

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
                self.state, self.history = None, deque()
        self.leading = leading
        self.leader_gauge.set(1 if leading else 0)
        return leading
