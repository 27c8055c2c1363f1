"""Deployment follower: from a registration's evaluation to the deployment's end, with a deadline.

Why this shape: Levant and Nomad Pack hung forever on pending canaries or missing capacity, and
polled Nomad hard while waiting. Here every wait is bounded by one overall deadline; the
evaluation is awaited with a blocking query (a blocked evaluation — no capacity — ends the wait at
once with the scheduler's reasons); the deployment is then followed on the event stream
(`Deployment:<job>`, `Allocation:<job>`), resuming by index, and falls back to blocking queries
on the deployment if the stream drops. Losing Nomad entirely (e.g. the cluster restarts) is
retried for a bounded grace period and then reported, never waited on forever.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from nomad_triton.nomad import errors
from nomad_triton.nomad.client import NomadClient

EVAL_TERMINAL = {"complete", "failed", "canceled", "blocked"}
ROLLBACK_RE = re.compile(r"rolling back to job version (\d+)")


class Outcome(StrEnum):
    SUCCESSFUL = "successful"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    BLOCKED = "blocked"  # the scheduler could not place (no capacity / infeasible)
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"  # superseded by a newer deployment
    LOST = "lost"  # Nomad unreachable for longer than the grace period, or state vanished
    NO_DEPLOYMENT = "no_deployment"  # nothing to roll out (no change, or job type without deployments)
    AWAITING_PROMOTION = "awaiting_promotion"  # canaries healthy; nobody asked us (or Nomad) to promote
    # set by nomad.rollout.follow, which judges what really runs once the deployment ended:
    NOT_RUNNING = "not_running"  # succeeded / no deployment, but the version does not run healthy
    REVERT_NOT_RUNNING = "revert_not_running"  # auto-reverted, but the stable version does not run healthy


@dataclass
class GroupProgress:
    """Per task group counters of a deployment, as `nomad deployment status` shows them."""

    name: str
    desired: int = 0
    placed: int = 0
    healthy: int = 0
    unhealthy: int = 0
    desired_canaries: int = 0
    placed_canaries: list[str] = field(default_factory=list)
    promoted: bool = False
    auto_promote: bool = False

    @property
    def canaries_healthy(self) -> bool:
        return self.desired_canaries > 0 and not self.promoted and self.healthy >= self.desired_canaries


@dataclass
class DeploymentState:
    id: str
    status: str
    description: str
    job_version: int
    groups: dict[str, GroupProgress]
    modify_index: int = 0
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_api(cls, dep: dict[str, Any]) -> DeploymentState:
        groups = {
            name: GroupProgress(
                name=name,
                desired=int(g.get("DesiredTotal") or 0),
                placed=int(g.get("PlacedAllocs") or 0),
                healthy=int(g.get("HealthyAllocs") or 0),
                unhealthy=int(g.get("UnhealthyAllocs") or 0),
                desired_canaries=int(g.get("DesiredCanaries") or 0),
                placed_canaries=list(g.get("PlacedCanaries") or []),
                promoted=bool(g.get("Promoted")),
                auto_promote=bool(g.get("AutoPromote")),
            )
            for name, g in sorted((dep.get("TaskGroups") or {}).items())
        }
        return cls(
            id=dep.get("ID", ""),
            status=dep.get("Status", ""),
            description=dep.get("StatusDescription", ""),
            job_version=int(dep.get("JobVersion") or 0),
            groups=groups,
            modify_index=int(dep.get("ModifyIndex") or 0),
            raw=dep,
        )

    @property
    def terminal(self) -> bool:
        return self.status in ("successful", "failed", "cancelled")

    @property
    def awaiting_promotion(self) -> bool:
        return any(g.canaries_healthy for g in self.groups.values())

    def summary(self) -> str:
        parts = []
        for g in self.groups.values():
            canary = f" canaries {len(g.placed_canaries)}/{g.desired_canaries}" if g.desired_canaries else ""
            promoted = " promoted" if g.promoted else ""
            parts.append(
                f"{g.name}: desired {g.desired} placed {g.placed} healthy {g.healthy} "
                f"unhealthy {g.unhealthy}{canary}{promoted}"
            )
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "description": self.description,
            "job_version": self.job_version,
            "groups": {n: {**g.__dict__} for n, g in self.groups.items()},
        }


@dataclass
class WatchResult:
    outcome: Outcome
    message: str
    deployment: DeploymentState | None = None
    evaluation: dict[str, Any] | None = None
    failed_tg_allocs: dict[str, Any] = field(default_factory=dict)
    rollback_version: int | None = None
    finished_at: float = 0.0  # time.monotonic() when the end was observed
    finished_wall: float = 0.0  # time.time() of the same moment (to compare with server timestamps)
    requests: int = 0  # HTTP requests made while waiting
    running: Any = None  # nomad.rollout.RunningState: what runs, judged after the end (rollout.follow)


def classify(state: DeploymentState) -> tuple[Outcome, int | None]:
    """Map a terminal deployment to an outcome; a failure with an auto-revert is ROLLED_BACK."""
    if state.status == "successful":
        return Outcome.SUCCESSFUL, None
    if state.status == "cancelled":
        return Outcome.CANCELLED, None
    match = ROLLBACK_RE.search(state.description)
    if match:
        return Outcome.ROLLED_BACK, int(match.group(1))
    return Outcome.FAILED, None


ProgressFn = Callable[[DeploymentState], None]
PromoteFn = Callable[[DeploymentState], None]


class DeploymentWatcher:
    """Follow one registration to its end. Construct, then call `run()` once."""

    def __init__(
        self,
        client: NomadClient,
        job_id: str,
        *,
        deadline: float,
        on_progress: ProgressFn | None = None,
        on_canaries_healthy: PromoteFn | None = None,
        lost_grace_s: float = 30.0,
        blocking_wait_s: float = 30.0,
    ) -> None:
        self.client = client
        self.job_id = job_id
        self.deadline = deadline
        self.on_progress = on_progress
        self.on_canaries_healthy = on_canaries_healthy
        self.lost_grace_s = lost_grace_s
        self.blocking_wait_s = blocking_wait_s
        self._last_summary = ""
        self._promote_called = False
        self._start_requests = client.request_count
        self._stream_retry_at = 0.0  # after a stream failure, use blocking queries until then

    # -------------------------------------------------------------- public

    def run(self, eval_id: str, start_index: int = 0) -> WatchResult:
        """Wait for the evaluation, then the deployment it created, until an outcome or the deadline.

        With `start_index` (the register reply's EvalCreateIndex) everything — evaluation updates
        and deployment changes — comes over ONE event stream opened at that index, so nothing can
        be missed and waiting costs a single request. If the stream is unavailable or drops, the
        wait continues with blocking queries.
        """
        try:
            if start_index:
                try:
                    return self._run_stream(eval_id, start_index)
                except _StreamFailed:
                    pass  # fall back below; blocking queries re-read the current state first
            evaluation = self._await_evaluation(eval_id)
            if evaluation is None:
                return self._result(
                    Outcome.TIMEOUT, f"evaluation {eval_id[:8]} still pending at the deadline"
                )
            ended = self._eval_outcome(evaluation)
            if ended is not None:
                return ended
            return self.follow(evaluation["DeploymentID"], evaluation=evaluation)
        except _Lost as lost:
            return self._result(Outcome.LOST, str(lost))

    def _eval_outcome(self, evaluation: dict[str, Any]) -> WatchResult | None:
        """The result a terminal evaluation decides by itself (None: follow its deployment)."""
        eval_id = evaluation.get("ID", "")
        failed = evaluation.get("FailedTGAllocs") or {}
        if evaluation.get("Status") in ("failed", "canceled"):
            return self._result(
                Outcome.FAILED,
                f"evaluation {eval_id[:8]} {evaluation.get('Status')}: {evaluation.get('StatusDescription', '')}",
                evaluation=evaluation,
            )
        if failed or evaluation.get("Status") == "blocked":
            return self._result(
                Outcome.BLOCKED,
                "the scheduler could not place all allocations (blocked evaluation)",
                evaluation=evaluation,
                failed_tg_allocs=failed,
            )
        if not evaluation.get("DeploymentID"):
            return self._result(Outcome.NO_DEPLOYMENT, "no deployment was needed", evaluation=evaluation)
        return None

    def _run_stream(self, eval_id: str, start_index: int) -> WatchResult:
        """Evaluation and deployment from one event stream opened at the evaluation's create index."""
        topics = [f"Evaluation:{self.job_id}", f"Deployment:{self.job_id}", f"Allocation:{self.job_id}"]
        evaluation: dict[str, Any] | None = None
        dep_id = ""
        seen: dict[str, dict[str, Any]] = {}  # latest payload of each deployment of this job
        frames = self.client.events(topics, index=start_index, deadline=self.deadline)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                break
            except errors.NomadError as exc:  # only stream failures: promotion errors propagate
                raise _StreamFailed(str(exc)) from None
            for event in frame.get("Events") or []:
                payload = event.get("Payload") or {}
                if event.get("Topic") == "Evaluation":
                    ev = payload.get("Evaluation") or {}
                    if ev.get("ID") != eval_id or ev.get("Status") not in EVAL_TERMINAL or dep_id:
                        continue
                    evaluation = ev
                    ended = self._eval_outcome(ev)
                    if ended is not None:
                        return ended
                    dep_id = ev["DeploymentID"]
                    dep = seen.get(dep_id)
                    if dep is None:  # created before our index: read it once
                        dep = self._read_deployment(dep_id, 0)[0].raw
                    done = self._step(DeploymentState.from_api(dep), evaluation)
                    if done:
                        return done
                elif event.get("Topic") == "Deployment":
                    dep = payload.get("Deployment") or {}
                    seen[dep.get("ID", "")] = dep
                    if dep_id and dep.get("ID") == dep_id:
                        done = self._step(DeploymentState.from_api(dep), evaluation)
                        if done:
                            return done
        what = (
            f"deployment {dep_id[:8]} still running" if dep_id else f"evaluation {eval_id[:8]} still pending"
        )
        return self._result(Outcome.TIMEOUT, f"{what} at the deadline", evaluation=evaluation)

    def follow(self, deployment_id: str, evaluation: dict[str, Any] | None = None) -> WatchResult:
        """Follow an existing deployment to its end (also used by `watch` and after a promote)."""
        try:
            state, index = self._read_deployment(deployment_id, 0)
            while True:
                done = self._step(state, evaluation)
                if done:
                    return done
                state, index = self._next_state(deployment_id, state, index)
                if state is None:
                    return self._result(
                        Outcome.TIMEOUT, f"deployment {deployment_id[:8]} still running at the deadline"
                    )
        except _Lost as lost:
            return self._result(Outcome.LOST, str(lost))

    # -------------------------------------------------------------- internals

    def _result(self, outcome: Outcome, message: str, **kw: Any) -> WatchResult:
        return WatchResult(
            outcome=outcome,
            message=message,
            finished_at=time.monotonic(),
            finished_wall=time.time(),
            requests=self.client.request_count - self._start_requests,
            **kw,
        )

    def _remaining(self) -> float:
        return self.deadline - time.monotonic()

    def _step(self, state: DeploymentState, evaluation: dict[str, Any] | None) -> WatchResult | None:
        """Report progress; trigger promotion once; return a result when the deployment ended."""
        summary = f"{state.status} {state.summary()}"
        if summary != self._last_summary:
            self._last_summary = summary
            if self.on_progress:
                self.on_progress(state)
        if state.terminal:
            outcome, version = classify(state)
            return self._result(
                outcome,
                state.description or state.status,
                deployment=state,
                evaluation=evaluation,
                rollback_version=version,
            )
        if state.awaiting_promotion and not self._promote_called:
            if self.on_canaries_healthy is not None:
                self._promote_called = True
                self.on_canaries_healthy(state)
            elif not any(g.auto_promote for g in state.groups.values() if g.canaries_healthy):
                return self._result(
                    Outcome.AWAITING_PROMOTION,
                    f"canaries are healthy and wait for promotion (nomad deployment promote {state.id})",
                    deployment=state,
                    evaluation=evaluation,
                )
        return None

    def _with_reconnect(self, fn: Callable[[], Any]) -> Any:
        """Run fn; while Nomad is unreachable keep retrying within the grace period and the deadline."""
        lost_since: float | None = None
        while True:
            try:
                return fn()
            except errors.Unreachable as exc:
                now = time.monotonic()
                lost_since = lost_since or now
                if now - lost_since >= self.lost_grace_s or self._remaining() <= 0:
                    raise _Lost(
                        f"lost contact with Nomad at {self.client.address} for {now - lost_since:.0f}s: {exc}"
                    ) from None
                time.sleep(min(1.0, max(0.05, self._remaining())))

    def _await_evaluation(self, eval_id: str) -> dict[str, Any] | None:
        index = 0
        while self._remaining() > 0:
            wait = min(self.blocking_wait_s, self._remaining())
            try:
                ev, index = self._with_reconnect(
                    lambda i=index, w=wait: self.client.blocking_get(f"evaluation/{eval_id}", i, w)
                )
            except errors.NotFound:
                raise _Lost(
                    f"evaluation {eval_id[:8]} no longer exists (was the cluster restarted?)"
                ) from None
            if ev and ev.get("Status") in EVAL_TERMINAL:
                if ev.get("Status") == "complete" and ev.get("BlockedEval") and not ev.get("FailedTGAllocs"):
                    ev = self._with_reconnect(lambda: self.client.evaluation(eval_id))
                return ev
        return None

    def _read_deployment(self, dep_id: str, index: int, wait: float = 0.0) -> tuple[DeploymentState, int]:
        try:
            dep, new_index = self._with_reconnect(
                lambda: self.client.blocking_get(f"deployment/{dep_id}", index, wait)
            )
        except errors.NotFound:
            raise _Lost(f"deployment {dep_id[:8]} no longer exists (was the cluster restarted?)") from None
        return DeploymentState.from_api(dep), new_index

    def _next_state(
        self, dep_id: str, state: DeploymentState, index: int
    ) -> tuple[DeploymentState | None, int]:
        """Wait for the deployment to change: event stream first, blocking query if it drops."""
        if self._remaining() <= 0:
            return None, index
        topics = [f"Deployment:{self.job_id}", f"Allocation:{self.job_id}"]
        if time.monotonic() >= self._stream_retry_at:
            try:
                return self._stream_next(dep_id, index, topics)
            except errors.NomadError:
                # Dropped, refused, or not offered (404/403): blocking queries carry on; retry later.
                self._stream_retry_at = time.monotonic() + 10.0
        if self._remaining() <= 0:
            return None, index
        wait = min(self.blocking_wait_s, max(0.05, self._remaining()))
        return self._read_deployment(dep_id, index or state.modify_index, wait)

    def _stream_next(self, dep_id: str, index: int, topics: list[str]) -> tuple[DeploymentState | None, int]:
        """The next change of this deployment from the event stream, or (None, index) at the deadline.

        Allocation events carry health before the deployment counters move; the Deployment event
        that follows (DeploymentAllocHealth) brings the counters, so only Deployment events count.
        """
        for frame in self.client.events(topics, index=index + 1 if index else 0, deadline=self.deadline):
            for event in frame.get("Events") or []:
                dep = (event.get("Payload") or {}).get("Deployment")
                if event.get("Topic") == "Deployment" and dep and dep.get("ID") == dep_id:
                    return DeploymentState.from_api(dep), max(index, int(event.get("Index") or 0))
        return None, index


class _StreamFailed(Exception):
    """Internal: the event stream could not be opened or dropped; continue with blocking queries."""


class _Lost(Exception):
    """Internal: Nomad gone for longer than the grace period, or our objects vanished."""
