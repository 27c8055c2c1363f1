"""`nomad-triton rollback JOB [--version N]`.

Why revert to the last *stable* version: Nomad marks a version stable once its deployment
succeeded, so that is the last version known to have served; "the previous version" may be the
broken one. The revert is guarded with EnforcePriorVersion so it never undoes someone else's
newer deploy.
"""

from __future__ import annotations

import typer

from nomad_triton.cli.common import EXIT_FAILED, JSON_OPT, emit_json, fail
from nomad_triton.cli.connection import Connection, nomad_errors, with_connection
from nomad_triton.nomad.versions import last_stable


@with_connection
def rollback(
    job: str = typer.Argument(..., help="Job ID."),
    version: int | None = typer.Option(None, "--version", help="Revert to this version instead."),
    as_json: bool = JSON_OPT,
    conn: Connection | None = None,
) -> None:
    """Revert JOB to its last stable version (Nomad's /revert)."""
    assert conn is not None
    with nomad_errors(as_json):
        current = int(conn.client.job(job).get("Version") or 0)
        if version is None:
            target = last_stable(conn.client.versions(job), current)
            if target is None:
                fail(
                    f"job {job!r} has no stable version older than {current} to roll back to",
                    EXIT_FAILED,
                    as_json,
                )
            version = int(target["Version"])
        reply = conn.client.revert(job, version, enforce_prior_version=current)
    if as_json:
        emit_json(
            {"job": job, "from_version": current, "to_version": version, "eval_id": reply.get("EvalID")}
        )
    else:
        typer.echo(
            f"{job}: reverting version {current} to version {version} "
            f"(evaluation {str(reply.get('EvalID', ''))[:8]}); follow with: nomad-triton watch {job}"
        )


def register(app: typer.Typer) -> None:
    app.command("rollback")(rollback)
