"""`nomad-triton rollback JOB [--version N]`.

Why revert to the last *stable* version: Nomad marks a version stable once its deployment
succeeded, so that is the last version known to have served; "the previous version" may be the
broken one. The revert is guarded with EnforcePriorVersion so it never undoes someone else's
newer deploy. Like `deploy`, it then follows the revert and exits 0 only when the version it
brought back runs its desired count healthy (nomad.rollout, the rule both share).
"""

from __future__ import annotations

import time
from typing import Any

import typer

from nomad_triton.cli.common import EXIT_FAILED, JSON_OPT, fail, wait_seconds_or_exit
from nomad_triton.cli.connection import Connection, nomad_errors, with_connection
from nomad_triton.cli.follow import detach_or_follow
from nomad_triton.nomad.versions import last_stable


@with_connection
def rollback(
    job: str = typer.Argument(..., help="Job ID."),
    version: int | None = typer.Option(None, "--version", help="Revert to this version instead."),
    timeout: str = typer.Option("10m", "--timeout", help="Give up waiting after this long (Go duration)."),
    detach: bool = typer.Option(False, "--detach", help="Revert and return without waiting."),
    as_json: bool = JSON_OPT,
    conn: Connection | None = None,
) -> None:
    """Revert JOB to its last stable version (Nomad's /revert) and follow it until it runs healthy."""
    assert conn is not None
    deadline = time.monotonic() + wait_seconds_or_exit(timeout, as_json)
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
    record: dict[str, Any] = {"job": job, "from_version": current, "to_version": version,
                              "eval_id": str(reply.get("EvalID") or "")}
    detach_or_follow(conn, job, reply, record, detach=detach, as_json=as_json, deadline=deadline,
                     subject=f"rollback {job}", started=f"{job}: reverting version {current} to version {version}",
                     accepted_outcome="reverted")


def register(app: typer.Typer) -> None:
    app.command("rollback")(rollback)
