"""`autoscale agent`: one long-running autoscaler for every task group that has our scaling policy.

How it is built, and why:

* Targets come from Nomad, not from files: a blocking query on `/v1/scaling/policies` wakes the
  agent when a job is registered, changes its policy, disables it or is stopped (Nomad deletes a
  stopped job's policies), and only new or modified policies are read (`/v1/scaling/policy/:id`).
  The pure bookkeeping is autoscale.targets.TargetSet.
* Jobs and allocations come from two cluster-wide blocking queries (autoscale.cluster), not from
  two requests per target per interval: an evaluation reads memory and probes; the scale status
  is re-read when the job changed, and confirmed with Nomad right before any action.
* Each target is its own asyncio task on an absolute schedule (next = previous + interval, start
  offset spread over the interval), stepping the same decision core as `autoscale run`
  (autoscale.core.GroupScaler). There is no worker pool to run dry: a busy target cannot push
  another's evaluation back (Nomad Autoscaler #348, #885), and every step has a deadline, so an
  allocation that hangs, answers 500 or vanishes is an observation for its own target only.
* A stall is visible rather than silent (Nomad Autoscaler #410, #514): `/metrics` carries every
  target's last-evaluation age and `/healthz` fails when any enabled target's last evaluation is
  older than three of its intervals.
* High availability: several agents may run; only the holder of one Nomad variable lock acts, and
  it checks that the lock is still valid right before every scale request. A standby follows the
  policies too, so on take-over it starts stepping at once, seeding each group's cooldowns from
  its scaling events (core.seed_state): nothing is doubled, and nothing is lost because every
  decision is recomputed from fresh observations and Nomad's current count.
* The HTTP side is an aiohttp app in the agent's own loop; `extra_routes` lets other parts of the
  toolkit (e.g. Prometheus service discovery) be served by the same process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

from nomad_triton.autoscale.cluster import ClusterView, daemon_call
from nomad_triton.autoscale.core import GroupScaler, StepOutcome, log_event
from nomad_triton.autoscale.lock import LeaderLock
from nomad_triton.autoscale.policy import ScalingPolicyConfig
from nomad_triton.autoscale.sources import ObservationSource
from nomad_triton.autoscale.sources.watched import WatchedSource
from nomad_triton.autoscale.targets import TargetChanges, TargetSet, TargetSpec
from nomad_triton.nomad.client import NomadClient
from nomad_triton.probe.gc_tuning import tune_for_fanout
from nomad_triton.probe.triton import Prober

AGENT_LOCK_PATH = "nomad-triton/autoscaler/agent"
STALL_INTERVALS = 3.0
LABELS = ("namespace", "job", "group")
DIRECTIONS = ("up", "down", "none")
RESULTS = ("ok", "deferred", "dry_run", "not_leader", "job_stopped", "stale", "error")
_PLACEHOLDER = ScalingPolicyConfig()
_NUMBER = re.compile(r"\d+(?:\.\d+)?")  # the scaler of an invalid policy never steps


@dataclass(frozen=True)
class AgentSettings:
    dry_run: bool = False
    probe_timeout_s: float = 0.8
    lock_path: str | None = AGENT_LOCK_PATH  # None: no HA, always act
    lock_ttl_s: float = 15.0
    watch_wait_s: float = 30.0  # blocking-query wait on the policy list
    history_s: float = 120.0
    nomad_threads: int = 10  # python-nomad is synchronous; its requests pool holds 10 connections
    status_refresh_s: float = 30.0  # re-read a group's scale status at least this often
    # The agent's own process (CLI, bench): collector thresholds for a long-lived fan-out
    # (probe/gc_tuning.py). Off for an Agent embedded in someone else's process, e.g. a test run.
    tune_gc: bool = False


class AgentMetrics:
    """Per-target series (namespace, job, group labels) plus the agent's own."""

    def __init__(self, registry: CollectorRegistry) -> None:
        p = "nomad_triton_agent_"
        self.desired = Gauge(p + "desired_count", "Desired count read from Nomad", LABELS, registry=registry)
        self.current = Gauge(p + "current_count", "Allocations running or starting", LABELS, registry=registry)
        self.last_decision = Gauge(p + "last_decision", "1 for the direction of the last decision",
                                   (*LABELS, "direction"), registry=registry)
        self.decisions = Counter(p + "decisions_total", "Policy decisions", (*LABELS, "direction"),
                                 registry=registry)
        self.scale_requests = Counter(p + "scale_requests_total", "Scale actions by result", (*LABELS, "result"),
                                      registry=registry)
        self.probe_errors = Counter(p + "probe_errors_total", "Allocations that did not answer a probe",
                                    LABELS, registry=registry)
        self.step_errors = Counter(p + "step_errors_total", "Evaluations that failed (Nomad trouble, deadline)",
                                   LABELS, registry=registry)
        self.decision_seconds = Histogram(p + "decision_seconds", "Duration of one evaluation (observe, decide, act)",
                                          LABELS, buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5), registry=registry)
        self.enabled = Gauge(p + "target_enabled", "1 enabled, 0 disabled or invalid policy", LABELS,
                             registry=registry)
        self.lag = Histogram(p + "evaluation_lag_seconds", "How late an evaluation started after its schedule",
                             buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5), registry=registry)
        self.leader = Gauge(p + "leader", "1 when this agent holds the lock and acts", registry=registry)
        self.targets = Gauge(p + "targets", "Targets by state", ["state"], registry=registry)
        self.watch_errors = Counter(p + "policy_watch_errors_total", "Failed reads of the scaling policies",
                                    registry=registry)

    def forget(self, labels: tuple[str, str, str]) -> None:
        for m in (self.desired, self.current, self.probe_errors, self.step_errors, self.decision_seconds,
                  self.enabled):
            _remove(m, labels)
        for d in DIRECTIONS:
            _remove(self.last_decision, (*labels, d))
            _remove(self.decisions, (*labels, d))
        for r in RESULTS:
            _remove(self.scale_requests, (*labels, r))


def _remove(metric: Any, labels: tuple[str, ...]) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        pass


def _kind(reason: str) -> str:
    """A reason without its numbers: "within band (load 0.43x target)" -> "within band (load #x target)"."""
    return _NUMBER.sub("#", reason)


def _labels(spec: TargetSpec) -> tuple[str, str, str]:
    t = spec.target
    return (t.namespace or "default", t.job, t.group)


def _offset(key: str, interval_s: float) -> float:
    """A stable start offset within the interval, so 100 targets do not all fire at once."""
    h = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    return (h / 0xFFFFFFFF) * interval_s


@dataclass
class _Runner:
    spec: TargetSpec
    scaler: GroupScaler
    task: asyncio.Task[None] | None = None
    last_eval: float | None = None  # monotonic end of the last completed evaluation
    since: float = field(default_factory=time.monotonic)  # when it became due (added, enabled, led)
    last_reason: str | None = None


class _AgeCollector:
    """`nomad_triton_agent_last_evaluation_age_seconds`, computed at scrape time (a stall shows)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterable[GaugeMetricFamily]:
        g = GaugeMetricFamily("nomad_triton_agent_last_evaluation_age_seconds",
                              "Seconds since the target's last completed evaluation (since it became due if none)",
                              labels=list(LABELS))
        now = time.monotonic()
        for r in self.agent.runners.values():
            if r.spec.active:
                g.add_metric(list(_labels(r.spec)), now - (r.last_eval if r.last_eval is not None else r.since))
        yield g


class Agent:
    def __init__(
        self,
        client: NomadClient,
        settings: AgentSettings | None = None,
        registry: CollectorRegistry | None = None,
        source: ObservationSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.settings = settings or AgentSettings()
        self.registry = registry or CollectorRegistry()
        self.metrics = AgentMetrics(self.registry)
        self.registry.register(_AgeCollector(self))
        self.targets = TargetSet()
        self.runners: dict[str, _Runner] = {}
        self.view = ClusterView(client, wait_s=self.settings.watch_wait_s)
        self.source: ObservationSource = source or WatchedSource(
            self.view, Prober(timeout_s=self.settings.probe_timeout_s, clock=clock))
        self._status_cache: dict[str, tuple[int, float, dict[str, Any]]] = {}
        s = self.settings
        self.lock = LeaderLock(client, s.lock_path, ttl_s=s.lock_ttl_s) if s.lock_path else None
        self.leading = self.lock is None
        self.metrics.leader.set(1 if self.leading else 0)
        self.policies_index = 0
        self.policies_synced = asyncio.Event()
        self.extra_routes: list[web.RouteDef] = []  # mounted by http_app(); e.g. Prometheus SD
        self._clock = clock
        self._stop: asyncio.Event | None = None

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Watch policies, hold or wait for the lock, and evaluate every target until `stop`."""
        self._stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(
            self.settings.nomad_threads, thread_name_prefix="nomad"))
        if self.settings.tune_gc:
            tune_for_fanout()  # one process probes every allocation of the cluster
        log_event("agent_started", lock=self.settings.lock_path, dry_run=self.settings.dry_run)
        tasks = [asyncio.create_task(self._watch_policies(), name="policy-watch"),
                 asyncio.create_task(self.view.run(), name="cluster-view")]
        if self.lock is not None:
            tasks.append(asyncio.create_task(self._hold_lock(), name="lock"))
        try:
            await self._stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            runners = [r.task for r in self.runners.values() if r.task is not None]
            for t in runners:
                t.cancel()
            await asyncio.gather(*tasks, *runners, return_exceptions=True)
            await self.source.aclose()
            if self.lock is not None:
                await asyncio.to_thread(self.lock.release)
            log_event("agent_stopped")

    # ------------------------------------------------------------------ policies

    async def _watch_policies(self) -> None:
        backoff = 0.5
        while True:
            try:
                stubs, index = await daemon_call(lambda: self.client.blocking_get(
                        "scaling/policies", index=self.policies_index, wait_s=self.settings.watch_wait_s,
                        params={"type": "horizontal"}))
                # A return is not a change, and an index that goes backwards means Nomad's state was
                # reset: start over from zero as Nomad's blocking-query docs advise.
                self.policies_index = 0 if index < self.policies_index else index
                await self.sync(stubs or [])
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the watcher must survive Nomad trouble
                self.metrics.watch_errors.inc()
                log_event("policy_watch_failed", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def sync(self, stubs: list[dict[str, Any]]) -> TargetChanges:
        """Read the new or modified policies of one listing and apply the changes."""
        ids = self.targets.to_read(stubs)
        bodies = await asyncio.gather(*(asyncio.to_thread(self._read_policy, pid) for pid in ids),
                                      return_exceptions=True)
        read: dict[str, dict[str, Any] | None] = {}
        for pid, body in zip(ids, bodies, strict=True):
            if isinstance(body, BaseException):
                log_event("policy_read_failed", policy=pid, error=f"{type(body).__name__}: {body}")
                continue  # not marked seen: read again at the next listing
            read[pid] = body
        changes = self.targets.update(stubs, read)
        self._apply(changes)
        self.policies_synced.set()
        return changes

    def _read_policy(self, policy_id: str) -> dict[str, Any] | None:
        from nomad_triton.nomad.errors import NotFound

        try:
            return self.client.request("get", f"scaling/policy/{policy_id}").json()
        except NotFound:
            return None

    def _apply(self, changes: TargetChanges) -> None:
        for spec in changes.removed:
            log_event("target_removed", target=spec.target.key, policy=spec.policy_id)
            runner = self.runners.pop(spec.policy_id, None)
            if runner is not None:
                asyncio.create_task(self._stop_runner(runner))
            self.source.forget(spec.target)
            self._status_cache.pop(spec.target.job, None)
            self.metrics.forget(_labels(spec))
        for spec in changes.added + changes.changed:
            event = "target_added" if spec in changes.added else "target_changed"
            log_event(event, target=spec.target.key, policy=spec.policy_id, enabled=spec.enabled,
                      interval_s=spec.interval_s if spec.config else None, error=spec.error)
            self._upsert(spec)
        counts = {"active": 0, "disabled": 0, "invalid": 0}
        for r in self.runners.values():
            counts["invalid" if r.spec.error else "active" if r.spec.active else "disabled"] += 1
        for k, v in counts.items():
            self.metrics.targets.labels(state=k).set(v)

    def _upsert(self, spec: TargetSpec) -> None:
        runner = self.runners.get(spec.policy_id)
        self.metrics.enabled.labels(*_labels(spec)).set(1 if spec.active else 0)
        if runner is not None and runner.spec.target != spec.target:
            # Same policy, another group: a new target (its state would be another group's).
            self.runners.pop(spec.policy_id)
            if runner.task is not None:
                runner.task.cancel()
            self.source.forget(runner.spec.target)
            self.metrics.forget(_labels(runner.spec))
            runner = None
        if runner is None:
            scaler = GroupScaler(self.client, spec.target, spec.config or _PLACEHOLDER, self.source,
                                 dry_run=self.settings.dry_run, history_s=self.settings.history_s,
                                 clock=self._clock, may_act=self._may_act, status_reader=self._status)
            runner = self.runners[spec.policy_id] = _Runner(spec, scaler)
        else:
            was_active, runner.spec = runner.spec.active, spec
            if spec.config is not None:
                runner.scaler.config = spec.config  # state, history and cooldowns carry over
            if runner.task is not None and (not spec.active or not was_active):
                runner.task.cancel()
                runner.task = None
        if spec.active and runner.task is None:
            runner.since = time.monotonic()
            # The first listing brings every target at once: spread them over their interval. A
            # target that appears later (a new job, a re-enabled policy) is evaluated at once.
            spread = not self.policies_synced.is_set()
            runner.task = asyncio.create_task(self._evaluate_forever(runner, spread), name=spec.target.key)

    async def _status(self, job: str) -> tuple[dict[str, Any], bool]:
        """A job's scale status, re-read from Nomad only when the job changed (its ModifyIndex in
        the cluster view moved: a scale, a re-submit) or the cached read is older than
        `status_refresh_s`. The core confirms any action on a fresh read."""
        index = self.view.job_index.get(job)
        cached = self._status_cache.get(job)
        now = time.monotonic()
        if (cached is not None and index is not None and cached[0] == index
                and now - cached[1] < self.settings.status_refresh_s):
            return cached[2], False
        status = await asyncio.to_thread(self.client.scale_status, job)
        if index is not None:
            self._status_cache[job] = (index, now, status)
        return status, True

    async def _stop_runner(self, runner: _Runner) -> None:
        if runner.task is not None:
            runner.task.cancel()
            await asyncio.gather(runner.task, return_exceptions=True)
            runner.task = None

    # ------------------------------------------------------------------ leadership

    def _may_act(self) -> bool:
        return self.lock is None or (self.leading and self.lock.valid())

    async def _hold_lock(self) -> None:
        assert self.lock is not None
        period = min(1.0, self.lock.ttl_s / 6)
        announced: bool | None = None
        while True:
            leading = bool(await asyncio.to_thread(self.lock.ensure))
            if leading != announced:
                announced = leading
                log_event("leader" if leading else "standby", path=self.lock.path)
                now = time.monotonic()
                for r in self.runners.values():
                    r.scaler.reset()  # leading again starts from Nomad's count and events
                    r.since, r.last_eval = now, None
            self.leading = leading
            self.metrics.leader.set(1 if leading else 0)
            await asyncio.sleep(period)

    # ------------------------------------------------------------------ evaluation

    async def _evaluate_forever(self, runner: _Runner, spread: bool = True) -> None:
        spec = runner.spec
        interval = spec.interval_s
        next_at = time.monotonic() + (_offset(spec.target.key, interval) if spread else 0.0)
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            started = time.monotonic()
            self.metrics.lag.observe(started - next_at)
            if runner.spec.interval_s != interval:  # policy changed its interval: reschedule
                interval = runner.spec.interval_s
            if self.leading:
                await self.evaluate(runner)
            next_at += interval
            now = time.monotonic()
            if next_at < now:  # an evaluation overran: skip the missed slots, keep the phase
                next_at += ((now - next_at) // interval + 1) * interval

    async def evaluate(self, runner: _Runner) -> StepOutcome | None:
        """One evaluation of one target, bounded so a slow one cannot hold its schedule forever."""
        labels = _labels(runner.spec)
        m = self.metrics
        scaler = runner.scaler
        deadline = max(2 * runner.spec.interval_s, self.settings.probe_timeout_s + 2.0)
        failed_before = scaler.scale_errors
        started = time.monotonic()
        try:
            async with asyncio.timeout(deadline):
                out = await scaler.step()
        except Exception as exc:  # noqa: BLE001 - one target's trouble is its own
            if scaler.scale_errors > failed_before:
                m.scale_requests.labels(*labels, "error").inc()
            m.step_errors.labels(*labels).inc()
            reason = "deadline exceeded" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
            if reason != runner.last_reason:
                log_event("evaluation_failed", target=runner.spec.target.key, error=reason)
            runner.last_reason = reason
            return None
        runner.last_eval = time.monotonic()
        m.decision_seconds.labels(*labels).observe(runner.last_eval - started)
        d = out.decision
        m.desired.labels(*labels).set(out.desired)
        t = runner.spec.target
        running = len(self.view.endpoints(t.job, t.group)) if self.view.synced.is_set() else out.running
        if running is not None:
            m.current.labels(*labels).set(running)
        if out.action in ("ok", "stale"):
            self._status_cache.pop(t.job, None)
        m.decisions.labels(*labels, d.direction).inc()
        for direction in DIRECTIONS:
            m.last_decision.labels(*labels, direction).set(1 if direction == d.direction else 0)
        errors = sum(1 for o in out.observations if not o.reachable or o.error)
        if errors:
            m.probe_errors.labels(*labels).inc(errors)
        if out.action is not None:
            m.scale_requests.labels(*labels, out.action).inc()
        elif _kind(d.reason) != runner.last_reason:
            # Every decision is logged with its reason; a hold repeated each interval for the same
            # kind of reason (numbers aside) is logged once.
            log_event("decision", target=runner.spec.target.key, direction=d.direction, desired=out.desired,
                      reason=d.reason)
        runner.last_reason = _kind(d.reason)
        return out

    # ------------------------------------------------------------------ health and HTTP

    def stalled(self) -> list[dict[str, Any]]:
        """Enabled targets whose last evaluation is older than three of their intervals."""
        if not self.leading:
            return []
        now = time.monotonic()
        out = []
        for r in self.runners.values():
            if not r.spec.active:
                continue
            age = now - (r.last_eval if r.last_eval is not None else r.since)
            if age > STALL_INTERVALS * r.spec.interval_s:
                out.append({"target": r.spec.target.key, "age_s": round(age, 3), "interval_s": r.spec.interval_s})
        return out

    def health(self) -> tuple[bool, dict[str, Any]]:
        stalled = self.stalled()
        return not stalled, {
            "status": "stalled" if stalled else "ok",
            "leader": self.leading,
            "targets": sum(1 for r in self.runners.values() if r.spec.active),
            "stalled": stalled,
        }

    def http_app(self) -> web.Application:
        async def metrics(_: web.Request) -> web.Response:
            body = generate_latest(self.registry)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def healthz(_: web.Request) -> web.Response:
            ok, detail = self.health()
            return web.Response(text=json.dumps(detail), status=200 if ok else 503, content_type="application/json")

        app = web.Application()
        app.add_routes([web.get("/metrics", metrics), web.get("/healthz", healthz), *self.extra_routes])
        return app

    async def serve_http(self, host: str, port: int) -> web.AppRunner:
        """Start /metrics and /healthz (and extra_routes) in this loop; the caller cleans up the runner."""
        runner = web.AppRunner(self.http_app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        return runner

