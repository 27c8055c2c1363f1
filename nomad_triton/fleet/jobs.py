"""One job of a fleet: server-side parse, plan, check-and-set register, follow, verify, roll back.

Why here and not a second deploy: a fleet is many single-job deploys with an order and gates. Each
job goes through the same steps as `deploy` (parse on the server, plan for the JobModifyIndex,
register with EnforceIndex) and is followed by the SAME follower (`nomad.rollout.follow`, the
entry point `deploy` calls); the fleet's judgement of the job is whatever that follower returns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nomad_triton.fleet.model import FleetJob
from nomad_triton.nomad import errors, failures, rollout
from nomad_triton.nomad.canary import verify_endpoint
from nomad_triton.nomad.client import NomadClient
from nomad_triton.nomad.versions import last_stable
from nomad_triton.nomad.watch import DeploymentState, DeploymentWatcher, Outcome, WatchResult
from nomad_triton.render import render_job

# What the follower returns that counts as "the job rolled out" (as `deploy` exits 0 on them,
# except canaries left waiting for a promotion: in a fleet the next stage must not start then).
PASSING = {Outcome.SUCCESSFUL, Outcome.NO_DEPLOYMENT}

Verifier = Callable[[str, str], tuple[bool, str]]  # (host:port, model) -> (ok, detail)


@dataclass
class JobRun:
    """Everything the fleet learnt about one job; the summary table and --json read it."""

    job: FleetJob
    state: str = "pending"  # pending|registered|successful|failed|interrupted|rolled_back|...
    plan_index: int = 0  # the JobModifyIndex the registration was checked against (0: new job)
    registered_index: int = 0  # the register reply's JobModifyIndex
    version: int | None = None
    eval_id: str = ""
    outcome: Outcome | None = None
    message: str = ""
    alloc_id: str = ""
    reason: str = ""
    rollback: str = ""
    deployment_id: str = ""
    requests: int = 0
    details: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.outcome in PASSING and not self.reason

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.job.name,
            "stage": self.job.stage_index,
            "pool": self.job.pool,
            "node_pool": self.job.spec.node_pool,
            "state": self.state,
            "outcome": self.outcome.value if self.outcome else None,
            "version": self.version,
            "deployment": self.deployment_id or None,
            "alloc": self.alloc_id or None,
            "reason": self.reason or None,
            "message": self.message,
            "rollback": self.rollback or None,
        }


def server_parse(client: NomadClient, job: FleetJob) -> dict[str, Any]:
    """The rendered job as the server parses it (errors.BadRequest when Nomad refuses it)."""
    return client.parse_hcl(render_job(job.spec))


def _first_failure(client: NomadClient, run: JobRun, res: WatchResult) -> tuple[str, str, list[str]]:
    """(allocation id, one-line reason, report lines) of a failed rollout, from `failures.inspect`."""
    try:
        report = failures.inspect(
            client,
            run.job.name,
            deployment_id=res.deployment.id if res.deployment else None,
            failed_tg_allocs=res.failed_tg_allocs,
            include_not_healthy=res.outcome in (Outcome.TIMEOUT, Outcome.FAILED, Outcome.ROLLED_BACK),
        )
    except errors.NomadError as exc:
        return "", f"{res.message} (could not inspect the failure: {exc})", []
    if report.allocations:
        first = report.allocations[0]
        terminated = [e for e in first.events if "Terminated" in e or "Failed" in e]
        last_event = (terminated or first.events or [first.client_status])[-1]
        reason = f"{res.message}; allocation {first.alloc_id[:8]}: {last_event}"
        last_log = next((log[-1] for log in first.logs.values() if log), "")
        if last_log:
            reason += f"; last log line: {last_log.strip()}"
        return first.alloc_id, reason, report.lines()
    if report.placement:
        return "", f"{res.message}; {report.placement[0].strip()}", report.lines()
    return "", res.message, report.lines()


def deploy_job(
    client: NomadClient,
    run: JobRun,
    parsed: dict[str, Any],
    *,
    deadline: float,
    cancelled: threading.Event,
    on_progress: Callable[[JobRun, DeploymentState], None],
    on_registered: Callable[[JobRun], None],
) -> None:
    """Plan, register (EnforceIndex) and follow one job; fills `run`. Never raises NomadError."""
    start = client.request_count
    try:
        plan = client.plan(parsed)
        if cancelled.is_set():
            run.state, run.reason = "not registered", "interrupted before registration"
            return
        run.plan_index = plan.job_modify_index
        reg = client.register(parsed, enforce_index=True, job_modify_index=plan.job_modify_index)
        run.state, run.eval_id, run.registered_index = "registered", reg.eval_id, reg.job_modify_index
        on_registered(run)
        res = rollout.follow(
            client,
            run.job.name,
            reg.eval_id,
            reg.eval_create_index,
            deadline=deadline,
            job_modify_index=reg.job_modify_index,
            on_progress=lambda st: on_progress(run, st),
        )
    except errors.NomadError as exc:
        run.state, run.reason = "failed", f"{type(exc).__name__}: {exc}"
        run.requests = client.request_count - start
        return
    run.outcome, run.message = res.outcome, res.message
    run.deployment_id = res.deployment.id if res.deployment else ""
    run.version = res.deployment.job_version if res.deployment else None
    if res.outcome in PASSING:
        run.state = "successful"
    else:
        run.state = res.outcome.value
        run.alloc_id, run.reason, run.details = _first_failure(client, run, res)
    run.requests = client.request_count - start


def verify_job(client: NomadClient, run: JobRun, verifier: Verifier = verify_endpoint) -> None:
    """One real inference per model, on instances found through Nomad's service discovery."""
    spec = run.job.spec
    try:
        regs = [r for r in client.service(spec.service_name) if r.get("JobID") == spec.name]
    except errors.NomadError as exc:
        run.reason = f"verification: service {spec.service_name!r}: {exc}"
        return
    if not regs:
        run.reason = f"verification: no instance of service {spec.service_name!r} registered for job {spec.name}"
        return
    for i, model in enumerate(spec.model_repository.models):
        reg = regs[i % len(regs)]
        url = f"{reg.get('Address')}:{reg.get('Port')}"
        ok, detail = verifier(url, model)
        run.details.append(f"verify {model} at {url}: {'ok' if ok else 'FAILED'}: {detail}")
        if not ok:
            run.alloc_id = str(reg.get("AllocID") or "")
            run.reason = f"verification inference failed on allocation {run.alloc_id[:8]} ({url}): {detail}"
            return


def rollback_job(client: NomadClient, run: JobRun, *, deadline: float) -> bool:
    """Put one job back where the fleet found it; True when it is back (and healthy, if it runs).

    The version this fleet registered is the one whose JobModifyIndex is the register reply's (no
    such version: the registration changed nothing). A job the fleet created is stopped. Nomad's own
    auto-revert may already have put it back: that revert is followed to its end. Otherwise the job
    reverts to the version before ours if it was stable, else to the last stable one, guarded by
    EnforcePriorVersion (a newer version someone else registered since is left alone), and the
    revert is followed by the same follower as every deploy. Reading versions only here keeps the
    happy path to the requests `deploy` makes.
    """
    if not run.eval_id:
        run.rollback = "not registered: nothing to undo"
        return True
    name = run.job.name
    try:
        versions = client.versions(name) if run.registered_index != run.plan_index else []
        ours = next((v for v in versions if int(v.get("JobModifyIndex") or 0) == run.registered_index), None)
        if ours is None:
            run.rollback = "unchanged: the registration did not create a new version"
            return True
        our_v = int(ours["Version"])
        if our_v == 0 and run.plan_index == 0:
            client.deregister(name)
            run.rollback = "stopped (the job did not exist before this fleet deploy)"
            return True
        current = max(versions, key=lambda v: int(v.get("Version") or 0))
        if int(current.get("Version") or 0) != our_v:
            if run.outcome is not Outcome.ROLLED_BACK:
                run.rollback = f"FAILED: version {current.get('Version')} was registered since ours ({our_v}); left alone"
                return False
            return _auto_reverted(client, run, int(current["Version"]), bool(current.get("Stable")), deadline)
        before = next((v for v in versions if int(v.get("Version") or -1) == our_v - 1), None)
        target_v = before if before is not None and before.get("Stable") else last_stable(versions, our_v)
        if target_v is None:
            run.rollback = f"FAILED: no stable version older than {our_v}"
            return False
        target = int(target_v["Version"])
        reply = client.revert(name, target, enforce_prior_version=our_v)
        res = rollout.follow(
            client, name, str(reply.get("EvalID") or ""), int(reply.get("EvalCreateIndex") or 0),
            deadline=deadline, job_modify_index=int(reply.get("JobModifyIndex") or 0),
        )
    except errors.NomadError as exc:
        run.rollback = f"FAILED: {exc}"
        return False
    if res.outcome in PASSING:
        run.rollback = f"reverted version {our_v} to version {target}: {res.outcome.value}"
        return True
    run.rollback = f"FAILED: revert to version {target}: {res.outcome.value}: {res.message}"
    return False


def _auto_reverted(client: NomadClient, run: JobRun, version: int, stable: bool, deadline: float) -> bool:
    """Nomad's auto-revert registered `version`: done if stable, else follow its deployment."""
    if not stable:
        dep = client.latest_deployment(run.job.name)
        if dep is None or int(dep.get("JobVersion") or -1) != version:
            run.rollback = f"FAILED: Nomad's auto-revert to version {version} has no deployment to follow"
            return False
        res = DeploymentWatcher(client, run.job.name, deadline=deadline).follow(dep["ID"])
        if res.outcome not in PASSING:
            run.rollback = f"FAILED: Nomad's auto-revert to version {version}: {res.outcome.value}: {res.message}"
            return False
    run.rollback = f"Nomad's auto-revert put it back (version {version})"
    return True
