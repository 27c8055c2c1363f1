"""`nomad-triton fleet plan|deploy|status FLEET`: thin formatting over nomad_triton.fleet.

The work (fleet file, stage runner, gates, cluster view) lives in nomad_triton/fleet/; this module
only prints and picks exit codes: plan as `plan` (0 no change, 1 changes, 255 error), deploy as
`deploy` (0 ok, 1 failed, 3 failed and rolled back), 2 for bad input everywhere.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from nomad_triton.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, JSON_OPT, emit_json, fail, table_console
from nomad_triton.cli.connection import Connection, nomad_errors, with_connection
from nomad_triton.fleet.model import Fleet, FleetError, load_fleet
from nomad_triton.fleet.runner import FleetEvent, FleetInputError, FleetResult, FleetRunner
from nomad_triton.fleet.status import ClusterView
from nomad_triton.nomad import errors

PLAN_ERROR = 255
FLEET_ARG = typer.Argument(..., help="Fleet file (.toml/.yaml/.json): ordered [[stages]] of specs.", show_default=False)

fleet_app = typer.Typer(help="Roll specs out to several pools in ordered, gated stages.", no_args_is_help=True)


def load_fleet_or_exit(path: Path, as_json: bool) -> Fleet:
    try:
        return load_fleet(path)
    except FleetError as exc:
        fail(exc.line(), EXIT_BAD_INPUT, as_json, source=exc.source, field=exc.where)


# ---------------------------------------------------------------------------------- plan


@with_connection
def plan(
    fleet: Path = FLEET_ARG,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show unchanged fields too."),
    as_json: bool = JSON_OPT,
    conn: Connection | None = None,
) -> None:
    """Plan every job of FLEET: diff and scheduler outcome per job, placement failures first.

    Exit codes as `plan`: 0 no change, 1 changes, 255 error (2: bad fleet or spec).
    """
    from nomad_triton.fleet.plan import plan_fleet

    assert conn is not None
    loaded = load_fleet_or_exit(fleet, as_json)
    plans = plan_fleet(conn.settings, loaded)
    down = next((p.error for p in plans if isinstance(p.error, errors.Unreachable | errors.PermissionDenied)), None)
    if down is not None:  # the same for every job: say it once
        fail(str(down), PLAN_ERROR, as_json, kind=type(down).__name__)
    code = PLAN_ERROR if any(p.error for p in plans) else (1 if any(p.changed for p in plans) else 0)
    if as_json:
        emit_json({"fleet": loaded.spec.name, "changes": any(p.changed for p in plans),
                   "jobs": [p.to_dict() for p in plans], "exit_code": code})
        raise typer.Exit(code)
    for p in plans:
        head = "PLACEMENT FAILS" if p.placement_fails else ("ERROR" if p.error else
                                                            ("changes" if p.changed else "no change"))
        stage = loaded.stages[p.job.stage_index].name
        typer.echo(f"=== {p.job.name} (stage {stage}, pool {p.job.spec.node_pool}): {head}")
        typer.echo("\n".join(p.lines(verbose)))
        typer.echo("")
    failing = [p.job.name for p in plans if p.placement_fails]
    typer.echo(f"{len(plans)} job(s); {sum(p.changed for p in plans)} with changes"
               + (f"; placement would fail for: {', '.join(failing)}" if failing else ""))
    raise typer.Exit(code)


# ---------------------------------------------------------------------------------- deploy


class EventPrinter:
    """One JSON object per line with --json; otherwise a timestamped line per event as it happens."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.t0 = time.monotonic()

    def __call__(self, ev: FleetEvent) -> None:
        if self.as_json:
            print(json.dumps(ev.to_dict(), default=str), flush=True)
            return
        where = " ".join(x for x in (f"[{ev.stage}]" if ev.stage else "", ev.job or "") if x)
        head = f"[{time.monotonic() - self.t0:6.1f}s] {where}".rstrip()
        typer.echo(f"{head} {ev.kind.replace('_', ' ')}: {ev.message}")
        if ev.kind == "stage_failed":
            for line in ev.data.get("details") or []:
                typer.echo(f"    {line}")


def print_summary(result: FleetResult) -> None:
    console = table_console()
    failed = next((s.stage.name for s in result.stages if s.state.value in ("failed", "rolled_back")), None)
    verdict = "ok" if result.exit_code == 0 else (f"stage {failed} failed" if failed else "interrupted")
    table = Table(title=f"fleet: {verdict}  [{result.elapsed_s:.1f}s, {result.requests} Nomad requests]")
    for col in ("stage", "state", "job", "pool", "outcome", "version", "allocation", "reason / rollback"):
        table.add_column(col)
    for sr in result.stages:
        if not sr.runs:
            for job in sr.stage.jobs:
                table.add_row(sr.stage.name, sr.state.value, job.name, job.spec.node_pool, "-", "-", "-", "")
            continue
        for r in sr.runs:
            note = "; ".join(x for x in (r.reason, f"rollback: {r.rollback}" if r.rollback else "") if x)
            table.add_row(sr.stage.name, sr.state.value, r.job.name, r.job.spec.node_pool,
                          r.outcome.value if r.outcome else r.state,
                          "-" if r.version is None else str(r.version), r.alloc_id[:8] or "-", note)
    console.print(table)


@with_connection
def deploy(
    fleet: Path = FLEET_ARG,
    rollback_on_failure: bool = typer.Option(
        False, "--rollback-on-failure", help="Revert the failed stage's jobs to their last stable version."),
    rollback_all: bool = typer.Option(
        False, "--all", help="With --rollback-on-failure: revert the stages already done too."),
    as_json: bool = JSON_OPT,
    conn: Connection | None = None,
) -> None:
    """Deploy FLEET stage by stage. Exit 0 ok, 1 a stage failed, 2 bad input, 3 failed and rolled back."""
    assert conn is not None
    if rollback_all and not rollback_on_failure:
        fail("--all: only means something with --rollback-on-failure", EXIT_BAD_INPUT, as_json)
    loaded = load_fleet_or_exit(fleet, as_json)
    printer = EventPrinter(as_json)
    runner = FleetRunner(conn.settings, loaded, emit=printer, rollback_on_failure=rollback_on_failure,
                         rollback_all=rollback_all)
    with nomad_errors(as_json):
        try:
            runner.prepare()
        except FleetInputError as exc:
            fail(str(exc), EXIT_BAD_INPUT, as_json)
        except KeyboardInterrupt:
            fail("interrupted before anything was registered", EXIT_FAILED, as_json)
    result = runner.run()
    if as_json:
        print(json.dumps({"event": "summary", **result.to_dict()}, default=str), flush=True)
    else:
        print_summary(result)
        stream = sys.stdout if result.exit_code == 0 else sys.stderr
        print(result.message, file=stream)
    raise typer.Exit(result.exit_code)


# ---------------------------------------------------------------------------------- status


def cluster_tables(view: ClusterView, title: str) -> Any:
    rows, pools = view.rows()
    table = Table(title=title)
    for col in ("job", "pool", "ver", "status", "desired/running/healthy", "deployment", "models ready",
                "gpus", "last scaling event"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.job, r.pool, str(r.version), r.status, f"{r.desired}/{r.running}/{r.healthy}",
                      r.deployment, r.models_ready, str(r.gpus), r.last_scaling)
    ptable = Table(title="GPUs per node pool")
    for col in ("pool", "used", "free", "total"):
        ptable.add_column(col)
    for p in pools:
        ptable.add_row(p.pool, str(p.gpus_used), str(p.gpus_free), str(p.gpus_total))
    from rich.console import Group

    return Group(table, ptable)


def show_cluster(conn: Connection, only: set[str] | None, watch: bool, probe: bool, as_json: bool,
                 title: str) -> None:
    """`status` without JOB and `fleet status`: one table, once or live (--watch)."""
    view = ClusterView(conn.client, only=only, probe=probe)
    try:
        with nomad_errors(as_json):
            view.refresh()
            if as_json and not watch:
                emit_json(view.snapshot())
                return
            if not watch:
                table_console().print(cluster_tables(view, title))
                return
            from rich.live import Live

            view.watch(30.0)
            if as_json:
                while True:
                    print(json.dumps({"ts": round(time.time(), 3), **view.snapshot()}), flush=True)
                    view.wait_change(30.0)
            with Live(cluster_tables(view, title), console=table_console(), refresh_per_second=4) as live:
                while True:
                    # Model readiness is Triton's, not Nomad's: re-probe every few seconds too.
                    view.wait_change(5.0 if probe else 30.0)
                    live.update(cluster_tables(view, f"{title}  (live, {time.strftime('%H:%M:%S')})"))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    finally:
        view.close()


@with_connection
def status(
    fleet: Path = FLEET_ARG,
    watch: bool = typer.Option(False, "--watch", "-w", help="Keep the table live (blocking queries)."),
    no_probe: bool = typer.Option(False, "--no-probe", help="Do not ask Triton which models are ready."),
    as_json: bool = JSON_OPT,
    conn: Connection | None = None,
) -> None:
    """One table of FLEET's jobs: pool, version, desired/running/healthy, deployment, models, GPUs."""
    assert conn is not None
    loaded = load_fleet_or_exit(fleet, as_json)
    show_cluster(conn, {j.name for j in loaded.jobs}, watch, not no_probe, as_json, f"fleet {loaded.spec.name}")


def register(app: typer.Typer) -> None:
    fleet_app.command("plan")(plan)
    fleet_app.command("deploy")(deploy)
    fleet_app.command("status")(status)
    app.add_typer(fleet_app, name="fleet")
