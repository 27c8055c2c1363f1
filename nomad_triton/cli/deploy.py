"""`nomad-triton deploy SPEC`: validate, render, server parse, plan, GPU pre-flight, register, follow.

Why this order (Levant's deploy journey, minus its hangs): bad input exits 2 before anything is
contacted; the job is parsed by the server that will run it; registration is guarded by the plan's
JobModifyIndex (EnforceIndex), so of two concurrent deploys one wins and the other gets a clear
conflict; the wait is bounded by --timeout and ends at once on a blocked evaluation; a failure is
explained (placement reasons, task events, last log lines). "ok" means the registered version runs
its desired count healthy, and exit 3 means the auto-revert brought the stable version back: both
judged by nomad.rollout, the rule every rollout command shares.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from nomad_triton.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_ROLLED_BACK,
    JSON_OPT,
    SET_OPT,
    SPEC_ARG,
    VALUES_OPT,
    emit_json,
    fail,
    load_spec_or_exit,
    wait_seconds_or_exit,
)
from nomad_triton.cli.connection import Connection, nomad_errors, with_connection
from nomad_triton.cli.validate_plan import server_job
from nomad_triton.nomad import canary, errors, failures, preflight, rollout
from nomad_triton.nomad.watch import DeploymentState, Outcome, WatchResult
from nomad_triton.spec import DeploymentSpec

EXIT_BY_OUTCOME = {
    Outcome.SUCCESSFUL: EXIT_OK,
    Outcome.NO_DEPLOYMENT: EXIT_OK,
    Outcome.AWAITING_PROMOTION: EXIT_OK,
    Outcome.ROLLED_BACK: EXIT_ROLLED_BACK,
}


class ProgressView:
    """Live table on a terminal; one line per change otherwise; silent with --json."""

    def __init__(self, as_json: bool, title: str) -> None:
        self.as_json = as_json
        self.title = title
        self.t0 = time.monotonic()
        self.live: Live | None = None
        self.state: DeploymentState | None = None
        if not as_json and sys.stdout.isatty():
            # get_renderable: the table (and its elapsed time) is rebuilt on every refresh.
            self.live = Live(
                console=Console(),
                refresh_per_second=4,
                transient=False,
                get_renderable=lambda: self._table(self.state),
            )

    def __enter__(self) -> ProgressView:
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.live.__exit__(None, None, None)

    def _table(self, state: DeploymentState | None) -> Table:
        elapsed = time.monotonic() - self.t0
        status = f"{state.status} {state.description}".strip() if state else "waiting for evaluation"
        table = Table(title=f"{self.title}  [{elapsed:.0f}s]  {status}")
        for col in ("group", "desired", "placed", "healthy", "unhealthy", "canaries", "promoted"):
            table.add_column(col)
        for g in state.groups.values() if state else []:
            canaries = f"{len(g.placed_canaries)}/{g.desired_canaries}" if g.desired_canaries else "-"
            table.add_row(
                g.name,
                str(g.desired),
                str(g.placed),
                str(g.healthy),
                str(g.unhealthy),
                canaries,
                "yes" if g.promoted else ("no" if g.desired_canaries else "-"),
            )
        return table

    def update(self, state: DeploymentState) -> None:
        if self.as_json:
            return
        self.state = state
        if self.live:
            self.live.refresh()
        else:
            elapsed = time.monotonic() - self.t0
            typer.echo(f"[{elapsed:5.1f}s] deployment {state.id[:8]} {state.status}: {state.summary()}")

    def note(self, line: str) -> None:
        if self.as_json:
            return
        if self.live:
            self.live.console.print(line, markup=False, highlight=False)
        else:
            typer.echo(line)


def make_promoter(conn: Connection, spec: DeploymentSpec, view: ProgressView, record: dict[str, Any]):
    """The on_canaries_healthy callback: verify each canary with inference, then promote or fail."""

    def promote(state: DeploymentState) -> None:
        ids = [a for g in state.groups.values() if g.canaries_healthy for a in g.placed_canaries]
        checks = canary.verify_canaries(conn.client, ids, spec.model_repository.models[0])
        record["canary_checks"] = [c.__dict__ for c in checks]
        for c in checks:
            view.note(f"canary {c.alloc_id[:8]} at {c.url or '?'}: {'ok' if c.ok else 'FAILED'}: {c.detail}")
        try:
            if checks and all(c.ok for c in checks):
                conn.client.promote(state.id)
                view.note(f"promoted deployment {state.id[:8]}")
            else:
                view.note(f"canary verification failed: failing deployment {state.id[:8]}")
                conn.client.fail_deployment(state.id)
        except errors.NomadError as exc:
            if isinstance(exc, errors.Unreachable | errors.PermissionDenied):
                raise
            # e.g. Nomad's own auto_promote got there first, or the deployment just ended: the
            # watcher reports the deployment's real outcome, so note it and keep following.
            view.note(f"{'promote' if checks and all(c.ok for c in checks) else 'fail'} refused: {exc}")

    return promote


def _preflight(conn: Connection, spec: DeploymentSpec, strict: bool, as_json: bool, record: dict) -> None:
    if spec.gpus.count <= 0:
        return
    result = preflight.gather(
        conn.client,
        device=spec.gpus.device,
        per_alloc=spec.gpus.count,
        count=spec.count + spec.rollout.canary,
        pool=spec.node_pool,
        job_id=None if spec.rollout.canary else spec.name,
    )
    record["preflight"] = result.to_dict()
    if result.ok:
        return
    if strict:
        fail(f"pre-flight: {result.message()}", EXIT_FAILED, as_json, preflight=result.to_dict())
    print(f"warning: pre-flight: {result.message()}", file=sys.stderr)


def _report_failure(
    conn: Connection, job_id: str, res: WatchResult, view: ProgressView, record: dict
) -> None:
    try:
        report = failures.inspect(
            conn.client,
            job_id,
            deployment_id=res.deployment.id if res.deployment else None,
            failed_tg_allocs=res.failed_tg_allocs,
            include_not_healthy=res.outcome
            in (Outcome.TIMEOUT, Outcome.FAILED, Outcome.NOT_RUNNING, Outcome.REVERT_NOT_RUNNING),
        )
    except errors.NomadError as exc:
        view.note(f"(could not inspect the failure: {exc})")
        return
    record["failure"] = report.to_dict()
    for line in report.lines():
        view.note(line)


@with_connection
def deploy(
    spec: Path = SPEC_ARG,
    sets: list[str] = SET_OPT,
    values: list[Path] = VALUES_OPT,
    timeout: str = typer.Option("10m", "--timeout", help="Give up waiting after this long (Go duration)."),
    auto_promote: bool = typer.Option(
        False, "--auto-promote", help="Promote canaries once healthy AND a test inference succeeded."
    ),
    strict: bool = typer.Option(False, "--strict", help="Fail (instead of warn) when GPU pre-flight fails."),
    detach: bool = typer.Option(False, "--detach", help="Register and return without waiting."),
    as_json: bool = JSON_OPT,
    conn: Connection | None = None,
) -> None:
    """Deploy SPEC and follow the rollout. Exit 0 ok, 1 failed, 2 bad input, 3 failed and rolled back."""
    assert conn is not None
    loaded = load_spec_or_exit(spec, sets, values, as_json)
    wait_s = wait_seconds_or_exit(timeout, as_json)
    record: dict[str, Any] = {"job": loaded.name}
    t0 = time.monotonic()
    deadline = t0 + wait_s
    with nomad_errors(as_json):
        job = server_job(conn.client, loaded, spec, as_json, EXIT_BAD_INPUT)
        try:
            plan = conn.client.plan(job)
        except errors.BadRequest as exc:  # Nomad's job validation: the spec asks for something invalid
            fail(f"{spec}: Nomad rejected the job: {exc}", EXIT_BAD_INPUT, as_json)
        record["job_modify_index"] = plan.job_modify_index
        _preflight(conn, loaded, strict, as_json, record)
        reg = conn.client.register(job, enforce_index=True, job_modify_index=plan.job_modify_index)
    record["eval_id"] = reg.eval_id
    if detach:
        record.update(outcome="registered", exit_code=EXIT_OK)
        if as_json:
            emit_json(record)
        else:
            typer.echo(f"registered job {loaded.name!r}: evaluation {reg.eval_id}")
        return
    view = ProgressView(as_json, f"deploy {loaded.name}")
    if not as_json and not view.live:
        typer.echo(f"registered job {loaded.name!r} (evaluation {reg.eval_id[:8]}); following the deployment")
    promoter = make_promoter(conn, loaded, view, record) if auto_promote else None
    wait_t0 = time.monotonic()
    try:
        with view, nomad_errors(as_json):
            res = rollout.follow(
                conn.client,
                loaded.name,
                reg.eval_id,
                reg.eval_create_index,
                deadline=deadline,
                job_modify_index=reg.job_modify_index,
                on_progress=view.update,
                on_canaries_healthy=promoter,
            )
            record["waited_s"] = round(res.finished_at - wait_t0, 3)
            record["observed_end_at"] = res.finished_wall
            code = EXIT_BY_OUTCOME.get(res.outcome, EXIT_FAILED)
            if code != EXIT_OK:
                _report_failure(conn, loaded.name, res, view, record)
    except KeyboardInterrupt:
        fail("interrupted: stopped watching (the deployment goes on in Nomad)", EXIT_FAILED, as_json)
    _finish(res, code, record, as_json, time.monotonic() - t0)


def _finish(res: WatchResult, code: int, record: dict, as_json: bool, elapsed: float) -> None:
    record.update(
        outcome=res.outcome.value,
        message=res.message,
        deployment=res.deployment.to_dict() if res.deployment else None,
        rollback_version=res.rollback_version,
        running=res.running.to_dict() if res.running is not None else None,
        elapsed_s=round(elapsed, 3),
        requests_while_waiting=res.requests,
        exit_code=code,
    )
    if as_json:
        emit_json(record)
    elif res.outcome is Outcome.ROLLED_BACK:
        typer.echo(f"deployment failed: {res.message}")
    elif code == EXIT_OK:
        typer.echo(f"deployment {res.outcome.value}: {res.message}")
    else:
        typer.echo(f"deployment {res.outcome.value}: {res.message}", err=True)
    fast_exit(code)


def fast_exit(code: int) -> NoReturn:
    """Exit now, skipping interpreter teardown.

    Why: the promise is that `deploy` returns within 100 ms of the deployment's end (CI pipelines
    chain on it), and tearing down the CLI's imported modules alone costs ~100 ms of garbage
    collection on a small machine. Everything is finished here: output is flushed below, no child
    process was started, and sockets are closed by the OS. Only in the real CLI process: when
    deploy runs in-process (typer's CliRunner, another program) it raises typer.Exit as usual.
    """
    argv0 = Path(sys.argv[0]).name if sys.argv else ""
    if argv0 not in ("nomad-triton", "main.py"):
        raise typer.Exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy)
