"""`nomad-triton stop JOB [--purge]`: deregister the job (Nomad stops its allocations).

Why a thin wrapper: stop must honour the same connection flags, --json and exit codes as every
other command; a missing job is a clear NotFound (exit 1), not a traceback.
"""

from __future__ import annotations

import typer

from nomad_triton.cli.common import JSON_OPT, emit_json
from nomad_triton.cli.connection import Connection, nomad_errors, with_connection


@with_connection
def stop(
    job: str = typer.Argument(..., help="Job ID."),
    purge: bool = typer.Option(False, "--purge", help="Also remove the job and its history from Nomad."),
    as_json: bool = JSON_OPT,
    conn: Connection | None = None,
) -> None:
    """Stop JOB (deregister), optionally purging it."""
    assert conn is not None
    with nomad_errors(as_json):
        reply = conn.client.deregister(job, purge=purge)
    if as_json:
        emit_json({"job": job, "purged": purge, "eval_id": (reply or {}).get("EvalID")})
    else:
        typer.echo(f"{job}: stopped{' and purged' if purge else ''}")


def register(app: typer.Typer) -> None:
    app.command("stop")(stop)
