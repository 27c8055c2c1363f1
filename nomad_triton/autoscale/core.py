"""The one decision core: observe a task group, ask the pure policy, act through Nomad's scale API.

`autoscale run` (one group, nomad_triton.autoscale.controller) and `autoscale agent` (every group
that has a scaling policy, nomad_triton.autoscale.agent) both step their targets through
`GroupScaler.step`, so a decision, its reason, its scaling event and its cooldowns mean the same
thing whichever process made it. The policy itself (autoscale.policy.decide) stays a pure
function of observations; this class owns what it must not: the clock, the observation history,
the PolicyState carried between steps, and the side effects. Loops, locks and metrics belong to
the callers, which read what happened from the returned StepOutcome.

Design points, each from an anchor's known failure:

* Nomad is the authority on the desired count: every step re-reads `GET /v1/job/:id/scale`, so a
  manual scale or a re-submitted job (Nomad Autoscaler #527) is adopted, not fought.
* Deployment-aware: while a deployment is active Nomad refuses to scale ("job scaling blocked due
  to active deployment"); the decision is logged as deferred instead of erroring every second.
* Every scale request carries a Message and Meta with the signals and a compact summary of the
  observations behind it, so `nomad job scaling-events` explains each change. `dry_run` records
  the same event without a Count (Nomad's record-only scaling event).
* A process that starts (or takes over from a crashed leader) seeds its cooldowns from the
  group's own nomad-triton scaling events, so a hand-over neither repeats nor undoes the last
  action within its cooldown.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from nomad_triton.autoscale.policy import Decision, PolicyState, ScalingPolicyConfig, commit, decide
from nomad_triton.autoscale.sources import ObservationSource, Target
from nomad_triton.probe.observations import Observation

log = logging.getLogger("nomad_triton.autoscale")
ACTIVE_DEPLOYMENT = {"running", "pending", "paused", "blocked", "unblocking", "initializing"}
POLICY_MARK = "nomad-triton"
Action = Literal["ok", "deferred", "dry_run", "not_leader", "job_stopped", "stale"]
# job ID -> (its `GET /v1/job/:id/scale` reply, whether it was read from Nomad just now)
StatusReader = Callable[[str], Awaitable[tuple[dict[str, Any], bool]]]


class ScaleTarget(Protocol):
    """The slice of nomad_triton.nomad.client.NomadClient the core uses."""

    def scale_status(self, job_id: str) -> dict[str, Any]: ...

    def scale(self, job_id: str, group: str, count: int | None, message: str,
              meta: dict[str, Any] | None = None, error: bool = False,
              policy_override: bool = False) -> dict[str, Any]: ...

    def latest_deployment(self, job_id: str) -> dict[str, Any] | None: ...

    def job_allocations(self, job_id: str, all_versions: bool = False) -> list[dict[str, Any]]: ...

    def allocation(self, alloc_id: str) -> dict[str, Any]: ...


def log_event(event: str, **fields: Any) -> None:
    """One JSON object per line; values that are not JSON become strings."""
    if not log.isEnabledFor(logging.INFO):
        return  # an agent evaluating hundreds of groups should not serialise lines nobody reads
    log.info(json.dumps({"ts": round(time.time(), 3), "event": event, **fields}, default=str, sort_keys=True))


@dataclass(frozen=True)
class StepOutcome:
    """What one step saw, decided and did (callers turn this into metrics)."""

    decision: Decision
    observations: list[Observation]
    desired: int
    running: int | None
    action: Action | None  # None: the decision asked for no change


def summarize(observations: list[Observation]) -> list[dict[str, Any]]:
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


def seed_state(group_status: dict[str, Any], desired: int) -> PolicyState:
    """A fresh PolicyState whose cooldowns continue the group's last nomad-triton actions.

    Scaling events carry Time in Unix nanoseconds and our Meta; record-only (dry-run) events have
    no Count and set no cooldown. Pure, so a hand-over is testable without a cluster.
    """
    last: dict[str, float] = {}
    for ev in group_status.get("Events") or []:
        meta = ev.get("Meta") or {}
        direction = meta.get("nomad_triton.direction")
        if meta.get("nomad_triton.policy") != POLICY_MARK or ev.get("Count") is None or ev.get("Error"):
            continue
        if direction in ("up", "down"):
            t = float(ev.get("Time") or 0) / 1e9
            last[direction] = max(last.get(direction, 0.0), t)
    direction = max(last, key=lambda k: last[k]) if last else "none"
    return PolicyState(desired=desired, last_up_at=last.get("up"), last_down_at=last.get("down"),
                       last_direction=direction)  # type: ignore[arg-type]


class GroupScaler:
    """One task group's state and its observe -> decide -> act step (no loop, no lock, no metrics)."""

    def __init__(
        self,
        client: ScaleTarget,
        target: Target,
        config: ScalingPolicyConfig,
        source: ObservationSource,
        *,
        dry_run: bool = False,
        history_s: float = 120.0,
        clock: Callable[[], float] = time.time,
        may_act: Callable[[], bool] | None = None,
        status_reader: StatusReader | None = None,
    ) -> None:
        self.client = client
        self.target = target
        self.config = config
        self.source = source
        self.dry_run = dry_run
        self.history_s = history_s
        self.state: PolicyState | None = None
        self.history: deque[Observation] = deque()
        self.last_decision: Decision | None = None
        self.scale_errors = 0  # scale requests Nomad refused or never answered
        self.failed_direction = "none"
        self._clock = clock
        # Checked right before a scale request: an agent that lost its lock meanwhile must not act.
        self._may_act = may_act or (lambda: True)
        # Default: read the scale status from Nomad every step. The agent passes a reader that
        # re-reads only when the job changed; an action is then confirmed on a fresh read first.
        self._read_status = status_reader or self._fresh_status

    def reset(self) -> None:
        """Forget state and history (lost leadership): leading again starts from Nomad's count."""
        self.state, self.history = None, deque()

    async def _call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        # python-nomad is synchronous; keep the event loop (and the probes) responsive.
        return await asyncio.to_thread(fn, *args, **kw)

    async def _fresh_status(self, job: str) -> tuple[dict[str, Any], bool]:
        return await self._call(self.client.scale_status, job), True

    def _group(self, status: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        groups = status.get("TaskGroups") or {}
        if self.target.group not in groups:
            raise LookupError(f"job {self.target.job!r} has no task group {self.target.group!r}")
        return groups[self.target.group], bool(status.get("JobStopped"))

    async def step(self) -> StepOutcome:
        """One round. Raises on Nomad trouble (callers count it and go on with the next round)."""
        status, fresh = await self._read_status(self.target.job)
        group, stopped = self._group(status)
        desired = int(group.get("Desired") or 0)
        running = group.get("Running")
        if self.state is None:
            self.state = seed_state(group, desired)
        else:
            self.state = replace(self.state, desired=desired)
        observations = await self.source.observe(self.target)
        now = self._clock()
        self.history.extend(observations)
        while self.history and self.history[0].ts < now - self.history_s:
            self.history.popleft()
        decision = decide(list(self.history), self.state, self.config, now)
        action = await self._act(decision, observations, now, stopped, fresh)
        self.last_decision = decision
        return StepOutcome(decision, observations, desired, None if running is None else int(running), action)

    async def _act(self, d: Decision, observations: list[Observation], now: float, stopped: bool,
                   fresh: bool) -> Action | None:
        t = self.target
        assert self.state is not None
        if d.new_count is None:
            self.state = d.state
            return None
        if not fresh:
            # The count came from a cache: confirm it with Nomad before acting on it.
            group, stopped = self._group((await self._fresh_status(t.job))[0])
            current = int(group.get("Desired") or 0)
            if current != self.state.desired:
                log_event("stale", job=t.job, group=t.group, desired=current, decided_on=self.state.desired)
                self.state = replace(d.state, desired=current)
                return "stale"
        if stopped:
            self.state = d.state
            return "job_stopped"
        dep = await self._call(self.client.latest_deployment, t.job)
        if dep and dep.get("Status") in ACTIVE_DEPLOYMENT:
            self.state = d.state
            log_event("deferred", job=t.job, group=t.group, to=d.new_count, reason="active deployment",
                      deployment=dep.get("ID"))
            return "deferred"
        if not self._may_act():
            self.state = d.state
            return "not_leader"
        meta = {
            "nomad_triton.policy": POLICY_MARK,
            "nomad_triton.direction": d.direction,
            "nomad_triton.from": self.state.desired,
            "nomad_triton.to": d.new_count,
            "nomad_triton.fast_path": d.fast_path,
            "nomad_triton.signals": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.signals.items()},
            "nomad_triton.observations": summarize(observations),
        }
        if self.dry_run:
            message = f"dry-run: would scale {d.direction} to {d.new_count}: {d.reason}"
            await self._call(self.client.scale, t.job, t.group, None, message, meta)
            # Cooldowns apply as if it had acted, so a dry run records one event per cooldown.
            self.state = replace(commit(d, now), desired=self.state.desired)
            log_event("dry_run", job=t.job, group=t.group, to=d.new_count, reason=d.reason)
            return "dry_run"
        message = f"nomad-triton: scale {d.direction} {self.state.desired} -> {d.new_count}: {d.reason}"
        try:
            await self._call(self.client.scale, t.job, t.group, d.new_count, message, meta)
        except Exception:
            self.state = d.state
            self.scale_errors += 1
            self.failed_direction = d.direction
            raise
        self.state = commit(d, now)
        log_event("scaled", job=t.job, group=t.group, direction=d.direction, to=d.new_count, reason=d.reason,
                  fast_path=d.fast_path)
        return "ok"
