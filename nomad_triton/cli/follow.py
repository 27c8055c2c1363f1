"""The shared ending of `scale` and `rollback`: return at once with --detach, else follow.

Why one helper: both change a job through one Nomad call whose reply carries the evaluation, and
both must then say "ok" only when what they asked for runs healthy (nomad.rollout.follow, the rule
`deploy` uses too), with the same JSON record, the same exit codes and the same progress view.
"""

from __future__ import annotations

from typing import Any

import typer

from nomad_triton.cli.common import EXIT_FAILED, EXIT_OK, emit_json
from nomad_triton.cli.connection import Connection, nomad_errors
from nomad_triton.cli.deploy import EXIT_BY_OUTCOME, ProgressView
from nomad_triton.nomad import rollout


def detach_or_follow(
    conn: Connection,
    job: str,
    reply: dict[str, Any],
    record: dict[str, Any],
    *,
    detach: bool,
    as_json: bool,
    deadline: float,
    subject: str,
    started: str,
    accepted_outcome: str,
    detail_key: str = "message",
) -> None:
    """Print `started`, follow the rollout of `reply`'s evaluation unless detached, and end with
    one JSON record (`record` plus outcome and exit code) or one line; raises typer.Exit on failure.

    `subject` names the change in progress and result lines ("rollback web", "web/triton").
    """
    eval_id = str(reply.get("EvalID") or "")
    if detach or not eval_id:
        record.update(outcome=accepted_outcome, exit_code=EXIT_OK)
        if as_json:
            emit_json(record)
        else:
            typer.echo(f"{started} (evaluation {eval_id[:8]})")
        return
    if not as_json:
        typer.echo(f"{started} (evaluation {eval_id[:8]}); following the rollout")
    view = ProgressView(as_json, subject)
    with view, nomad_errors(as_json):
        res = rollout.follow(
            conn.client,
            job,
            eval_id,
            int(reply.get("EvalCreateIndex") or 0),
            deadline=deadline,
            job_modify_index=int(reply.get("JobModifyIndex") or 0),
            on_progress=view.update,
        )
    code = EXIT_BY_OUTCOME.get(res.outcome, EXIT_FAILED)
    record.update(outcome=res.outcome.value, exit_code=code)
    record[detail_key] = res.message
    record["running"] = res.running.to_dict() if res.running is not None else None
    if as_json:
        emit_json(record)
    else:
        typer.echo(f"{subject}: {res.outcome.value}: {res.message}", err=code != EXIT_OK)
    if code != EXIT_OK:
        raise typer.Exit(code)
