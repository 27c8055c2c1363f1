"""The stage runner: stages in order, the jobs of a stage in parallel, a gate between stages.

Why threads per job (each with its own Nomad client): a stage's jobs are independent rollouts
whose waits are blocking queries and event streams; one slow pool must not hold another's
progress. Why registration is never interrupted mid-way: on Ctrl-C no new job is registered, the
jobs already registered keep rolling out in Nomad (exactly like `deploy` interrupted), and the
runner says which jobs are in which state, so the cluster is consistent and the half is named.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from nomad_triton.fleet import gates
from nomad_triton.fleet.jobs import JobRun, Verifier, deploy_job, rollback_job, server_parse, verify_job
from nomad_triton.fleet.model import Fleet, FleetJob, Stage
from nomad_triton.nomad import errors
from nomad_triton.nomad.canary import verify_endpoint
from nomad_triton.nomad.client import NomadClient
from nomad_triton.nomad.settings import ConnectionSettings
from nomad_triton.nomad.watch import DeploymentState, Outcome
from nomad_triton.probe.discovery import job_endpoints
from nomad_triton.probe.triton import Prober

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_ROLLED_BACK = 0, 1, 2, 3


class FleetInputError(Exception):
    """A job of the fleet that Nomad refuses to parse: bad input, reported before anything is registered."""

    def __init__(self, job: FleetJob, message: str) -> None:
        super().__init__(f"{job.spec_path} (fleet {job.where}, job {job.name}): Nomad rejected the rendered job: {message}")


@dataclass
class FleetEvent:
    """One line of progress: `--json` prints each as a JSON object, a terminal as a line of text."""

    kind: str
    stage: str | None = None
    job: str | None = None
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.kind, "ts": round(self.ts, 3), "stage": self.stage, "job": self.job,
                "message": self.message, **self.data}


class StageState(StrEnum):
    UNTOUCHED = "untouched"
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    INTERRUPTED = "interrupted"


@dataclass
class StageRun:
    stage: Stage
    state: StageState = StageState.UNTOUCHED
    runs: list[JobRun] = field(default_factory=list)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage.name, "index": self.stage.index, "state": self.state.value,
                "reason": self.reason or None, "jobs": [r.to_dict() for r in self.runs]}


@dataclass
class FleetResult:
    stages: list[StageRun]
    exit_code: int
    message: str
    elapsed_s: float
    requests: int
    interrupted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, "message": self.message, "elapsed_s": round(self.elapsed_s, 3),
                "requests": self.requests, "interrupted": self.interrupted,
                "stages": [s.to_dict() for s in self.stages]}


Emit = Callable[[FleetEvent], None]


class FleetRunner:
    """Construct, `prepare()` (server-side parse of every job: bad input before any change), `run()`."""

    def __init__(
        self,
        settings: ConnectionSettings,
        fleet: Fleet,
        *,
        emit: Emit,
        rollback_on_failure: bool = False,
        rollback_all: bool = False,
        verifier: Verifier = verify_endpoint,
    ) -> None:
        self.settings = settings
        self.fleet = fleet
        self._emit_fn = emit
        self._emit_lock = threading.Lock()
        self.rollback_on_failure = rollback_on_failure
        self.rollback_all = rollback_all
        self.verifier = verifier
        self.cancelled = threading.Event()
        self.client = NomadClient(settings)
        self._clients: list[NomadClient] = [self.client]
        self.parsed: dict[str, dict[str, Any]] = {}
        self.stage_runs = [StageRun(s) for s in fleet.stages]

    # ------------------------------------------------------------------ helpers

    def emit(self, kind: str, stage: Stage | None = None, job: str | None = None, message: str = "", **data: Any) -> None:
        with self._emit_lock:
            self._emit_fn(FleetEvent(kind, stage.name if stage else None, job, message, data))

    def _new_client(self) -> NomadClient:
        client = NomadClient(self.settings)
        self._clients.append(client)
        return client

    @property
    def requests(self) -> int:
        return sum(c.request_count for c in self._clients)

    def _parallel(self, items: list[Any], fn: Callable[[Any], None]) -> None:
        """Run fn(item) in daemon threads; wait in short slices so Ctrl-C reaches this thread."""
        threads = [threading.Thread(target=fn, args=(item,), daemon=True) for item in items]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)

    # ------------------------------------------------------------------ prepare

    def prepare(self) -> None:
        """Parse every job on the server before touching anything (FleetInputError on a refusal)."""
        jobs = self.fleet.jobs
        problems: dict[str, BaseException] = {}

        def parse(job: FleetJob) -> None:
            try:
                self.parsed[job.name] = server_parse(self._new_client(), job)
            except errors.NomadError as exc:
                problems[job.name] = exc

        self._parallel(jobs, parse)
        for job in jobs:  # the first problem in fleet order
            exc = problems.get(job.name)
            if isinstance(exc, errors.BadRequest):
                raise FleetInputError(job, str(exc))
            if exc is not None:
                raise exc

    # ------------------------------------------------------------------ run

    def run(self) -> FleetResult:
        t0 = time.monotonic()
        failed: StageRun | None = None
        try:
            for sr in self.stage_runs:
                self._run_stage(sr)
                if sr.state is not StageState.PASSED:
                    failed = sr
                    break
        except KeyboardInterrupt:
            self.cancelled.set()
            return self._interrupted(t0)
        for sr in self.stage_runs:
            if sr.state is StageState.UNTOUCHED:
                self.emit("stage_skipped", sr.stage, message="not touched: an earlier stage failed")
        if failed is None:
            return self._result(EXIT_OK, f"all {len(self.stage_runs)} stages passed", t0)
        code = EXIT_FAILED
        if self.rollback_on_failure:
            try:
                code = self._roll_back(failed)
            except KeyboardInterrupt:
                self.cancelled.set()
                return self._interrupted(t0)
        elif (changed := [r for r in failed.runs if r.eval_id and r.registered_index != r.plan_index]) and all(
            r.outcome is Outcome.ROLLED_BACK for r in changed
        ):
            code = EXIT_ROLLED_BACK  # Nomad's auto-revert put every changed job of the stage back
        msg = f"stage {failed.stage.name} failed: {failed.reason}"
        if code == EXIT_ROLLED_BACK:
            msg += "; the stage was rolled back to its stable versions"
        return self._result(code, msg, t0)

    def _result(self, code: int, message: str, t0: float, interrupted: bool = False) -> FleetResult:
        return FleetResult(self.stage_runs, code, message, time.monotonic() - t0, self.requests, interrupted)

    def _run_stage(self, sr: StageRun) -> None:
        stage = sr.stage
        sr.state = StageState.RUNNING
        sr.runs = [JobRun(job) for job in stage.jobs]
        self.emit("stage_started", stage, message=f"{len(sr.runs)} job(s): {', '.join(j.name for j in stage.jobs)}")
        deadline = time.monotonic() + self.fleet.spec.timeout.total_seconds()

        def progress(run: JobRun, st: DeploymentState) -> None:
            self.emit("job_progress", stage, run.job.name, f"deployment {st.id[:8]} {st.status}: {st.summary()}",
                      deployment=st.id, status=st.status)

        def registered(run: JobRun) -> None:
            self.emit("job_registered", stage, run.job.name, f"evaluation {run.eval_id[:8]}",
                      eval_id=run.eval_id, job_modify_index=run.registered_index)

        def one(run: JobRun) -> None:
            deploy_job(self._new_client(), run, self.parsed[run.job.name], deadline=deadline,
                       cancelled=self.cancelled, on_progress=progress, on_registered=registered)
            self.emit("job_finished", stage, run.job.name, run.reason or run.message, state=run.state,
                      outcome=run.outcome.value if run.outcome else None, alloc=run.alloc_id or None,
                      version=run.version)

        self._parallel(sr.runs, one)
        bad = next((r for r in sr.runs if not r.passed), None)
        if bad is None and stage.gate.verify:
            self.emit("verify_started", stage, message="one inference per model through service discovery")
            self._parallel(sr.runs, lambda r: verify_job(self._new_client(), r, self.verifier))
            for r in sr.runs:
                for line in r.details:
                    if line.startswith("verify "):
                        self.emit("verified", stage, r.job.name, line)
            bad = next((r for r in sr.runs if not r.passed), None)
        if bad is None and stage.gate.soak.total_seconds() > 0:
            breach = self._soak(sr)
            if breach is not None:
                bad = next(r for r in sr.runs if r.job.name == breach.job)
                bad.alloc_id, bad.reason, bad.state = breach.alloc_id, f"soak: {breach.reason}", "soak_failed"
        if bad is None:
            sr.state = StageState.PASSED
            self.emit("stage_passed", stage, message="every job healthy" + (", verified" if stage.gate.verify else "")
                      + (f", soaked {stage.gate.soak.total_seconds():.0f}s" if stage.gate.soak.total_seconds() else ""))
            return
        sr.state = StageState.FAILED
        where = f" allocation {bad.alloc_id}" if bad.alloc_id else ""
        sr.reason = f"job {bad.job.name}{where}: {bad.reason or bad.message}"
        self.emit("stage_failed", stage, bad.job.name, sr.reason, alloc=bad.alloc_id or None,
                  details=bad.details[-20:])

    def _soak(self, sr: StageRun) -> gates.Breach | None:
        gate = sr.stage.gate
        limits = gates.Thresholds(gate.max_p95_latency_ms, gate.max_error_ratio, gate.max_queue_compute_ratio)
        judges = {r.job.name: gates.SoakJudge(r.job.name, limits) for r in sr.runs}
        self.emit("soak_started", sr.stage, message=f"{gate.soak.total_seconds():.0f}s, probe every "
                  f"{gate.soak_interval.total_seconds():g}s", **limits.__dict__)
        client = self._new_client()
        caches: dict[str, dict[str, dict[str, str]]] = {r.job.name: {} for r in sr.runs}

        async def soak() -> gates.Breach | None:
            end = time.monotonic() + gate.soak.total_seconds()
            async with Prober(timeout_s=min(2.0, gate.soak_interval.total_seconds())) as prober:
                while True:
                    tick = time.monotonic()
                    for r in sr.runs:
                        models = tuple(r.job.spec.model_repository.models)
                        try:
                            eps = await asyncio.to_thread(job_endpoints, client, r.job.name, models=models,
                                                          cache=caches[r.job.name])
                        except errors.NomadError as exc:
                            return gates.Breach(r.job.name, "", f"could not list allocations: {exc}")
                        breach = judges[r.job.name].observe(await prober.probe_all(eps))
                        if breach is not None:
                            return breach
                    if tick >= end:
                        break
                    await asyncio.sleep(max(0.0, min(gate.soak_interval.total_seconds() - (time.monotonic() - tick),
                                                     end - time.monotonic())))
            return next((b for b in (j.finish() for j in judges.values()) if b is not None), None)

        breach = asyncio.run(soak())
        rounds = max((j.rounds for j in judges.values()), default=0)
        self.emit("soak_finished", sr.stage, message="thresholds held" if breach is None else breach.reason,
                  rounds=rounds, ok=breach is None)
        return breach

    # ------------------------------------------------------------------ rollback

    def _roll_back(self, failed: StageRun) -> int:
        targets = [failed]
        if self.rollback_all:
            targets += [s for s in reversed(self.stage_runs[: failed.stage.index]) if s.state is StageState.PASSED]
        all_ok = True
        for sr in targets:
            self.emit("rollback_started", sr.stage, message=f"reverting {len(sr.runs)} job(s)")
            deadline = time.monotonic() + self.fleet.spec.timeout.total_seconds()
            results: dict[str, bool] = {}

            def undo(run: JobRun, deadline: float = deadline, results: dict[str, bool] = results) -> None:
                results[run.job.name] = rollback_job(self._new_client(), run, deadline=deadline)

            self._parallel(sr.runs, undo)
            for run in sr.runs:
                self.emit("job_rolled_back" if results.get(run.job.name) else "job_rollback_failed", sr.stage,
                          run.job.name, run.rollback)
            ok = all(results.get(r.job.name) for r in sr.runs)
            all_ok = all_ok and ok
            if ok:
                sr.state = StageState.ROLLED_BACK
        return EXIT_ROLLED_BACK if all_ok else EXIT_FAILED

    # ------------------------------------------------------------------ Ctrl-C

    def _interrupted(self, t0: float) -> FleetResult:
        half: list[str] = []
        for sr in self.stage_runs:
            if sr.state is StageState.RUNNING:
                sr.state = StageState.INTERRUPTED
                for r in sr.runs:
                    if r.state == "registered":
                        r.state = "interrupted"
                        half.append(f"{r.job.name} (registered; its deployment goes on in Nomad)")
                    elif r.state == "pending":
                        r.state = "not registered"
                    elif r.state == "successful":
                        half.append(f"{r.job.name} (deployed; the stage gate was not decided)")
                untouched = [r.job.name for r in sr.runs if r.state == "not registered"]
                if untouched:
                    half.append(f"not registered: {', '.join(untouched)}")
        later = [sr.stage.name for sr in self.stage_runs if sr.state is StageState.UNTOUCHED]
        msg = "interrupted: no new job was registered after Ctrl-C"
        if half:
            msg += "; half done: " + "; ".join(half)
        if later:
            msg += f"; untouched stages: {', '.join(later)}"
        self.emit("interrupted", message=msg)
        return self._result(EXIT_FAILED, msg, t0, interrupted=True)
