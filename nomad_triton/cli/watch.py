"""`nomad-triton watch JOB`: live allocations until Ctrl-C or --timeout.

Why blocking queries rather than polling: Nomad answers `GET /v1/job/:id/allocations?index=N`
only when something changed (or after `wait`), so watching costs about one request per change.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from nomad_triton.cli.common import JSON_OPT, wait_seconds_or_exit
from nomad_triton.cli.connection import Connection, nomad_errors, with_connection


def alloc_rows(allocs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for a in sorted(allocs, key=lambda a: (a.get("TaskGroup", ""), a.get("CreateIndex", 0))):
        rows.append(
            {
                "id": a.get("ID", ""),
                "group": a.get("TaskGroup", ""),
                "version": a.get("JobVersion"),
                "node": a.get("NodeName") or (a.get("NodeID") or "")[:8],
                "client_status": a.get("ClientStatus"),
                "desired_status": a.get("DesiredStatus"),
                "healthy": (a.get("DeploymentStatus") or {}).get("Healthy"),
            }
        )
    return rows


def _table(job: str, rows: list[dict[str, Any]], elapsed: float) -> Table:
    table = Table(title=f"{job} allocations [{elapsed:.0f}s] (Ctrl-C to stop)")
    for col in ("id", "group", "ver", "node", "status", "healthy"):
        table.add_column(col)
    for r in rows:
        healthy = "-" if r["healthy"] is None else ("yes" if r["healthy"] else "no")
        table.add_row(
            r["id"][:8],
            r["group"],
            str(r["version"]),
            r["node"],
            f"{r['client_status']}/{r['desired_status']}",
            healthy,
        )
    return table


@with_connection
def watch(
    job: str = typer.Argument(..., help="Job ID."),
    timeout: str = typer.Option(
        "0s", "--timeout", help="Stop after this long (Go duration; 0 = until Ctrl-C)."
    ),
    as_json: bool = JSON_OPT,
    conn: Connection | None = None,
) -> None:
    """Follow JOB's allocations live (one JSON line per change with --json)."""
    assert conn is not None
    limit = wait_seconds_or_exit(timeout, as_json, allow_zero=True)
    t0 = time.monotonic()
    deadline = t0 + limit if limit > 0 else float("inf")
    tty = sys.stdout.isatty() and not as_json
    live = Live(_table(job, [], 0), console=Console(), refresh_per_second=4) if tty else None
    index = 0
    last: list[dict[str, Any]] | None = None
    try:
        if live:
            live.__enter__()
        with nomad_errors(as_json):
            conn.client.job(job)  # Nomad lists [] allocations for an unknown job: fail like `nomad job status`
            while time.monotonic() < deadline:
                wait = min(30.0, max(0.05, deadline - time.monotonic()))
                allocs, index = conn.client.blocking_get(f"job/{job}/allocations", index, wait)
                rows = alloc_rows(allocs or [])
                if rows == last:
                    continue
                last = rows
                elapsed = time.monotonic() - t0
                if live:
                    live.update(_table(job, rows, elapsed))
                elif as_json:
                    import json

                    print(
                        json.dumps({"t": round(elapsed, 3), "index": index, "allocations": rows}), flush=True
                    )
                else:
                    summary = ", ".join(
                        f"{r['id'][:8]} {r['group']} v{r['version']} {r['client_status']}"
                        + ("" if r["healthy"] is None else (" healthy" if r["healthy"] else " unhealthy"))
                        for r in rows
                    )
                    typer.echo(
                        f"[{elapsed:5.1f}s] {summary or 'no allocations'}",
                    )
    except KeyboardInterrupt:
        pass
    finally:
        if live:
            live.__exit__(None, None, None)


def register(app: typer.Typer) -> None:
    app.command("watch")(watch)
