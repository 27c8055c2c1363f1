"""`nomad-triton scale JOB [GROUP] COUNT|+N|-N [--message] [--force]`.

Why through Nomad's scale API (not re-registering the job): the count change and its message are
recorded as a scaling event on the job (visible in `GET /v1/job/:id/scale`), and the group's
scaling bounds (the job's `scaling` block) are respected unless the operator explicitly says
--force.

Like `nomad job scale`, it follows the deployment the change starts until it ends (bounded by
--timeout) and exits with deploy's codes, so "scaled" means "the new allocations are healthy";
--detach returns as soon as Nomad accepted the change.
"""

from __future__ import annotations

import re
import time
from typing import Any

import typer

from nomad_triton.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    JSON_OPT,
    fail,
    wait_seconds_or_exit,
)
from nomad_triton.cli.connection import Connection, nomad_errors, with_connection
from nomad_triton.cli.follow import detach_or_follow
from nomad_triton.nomad import errors

COUNT_RE = re.compile(r"^([+-]?)(\d+)$")


def target_count(current: int, expr: str) -> int:
    """'3' -> 3; '+2' -> current+2; '-1' -> current-1 (never below 0). ValueError on anything else."""
    m = COUNT_RE.match(expr.strip())
    if not m:
        raise ValueError(f"COUNT must be N, +N or -N, got {expr!r}")
    sign, n = m.group(1), int(m.group(2))
    if sign == "+":
        return current + n
    if sign == "-":
        return max(0, current - n)
    return n


def bounds(job: dict[str, Any], group: str) -> tuple[int | None, int | None]:
    for tg in job.get("TaskGroups") or []:
        if tg.get("Name") == group:
            sc = tg.get("Scaling") or {}
            if not sc:
                return None, None
            return sc.get("Min"), sc.get("Max")
    return None, None


def resolve_group(job: dict[str, Any], group: str | None) -> str:
    names = [tg.get("Name") for tg in job.get("TaskGroups") or []]
    if group is None:
        if len(names) != 1:
            raise ValueError(f"job has groups {', '.join(map(str, names))}: name one")
        return str(names[0])
    if group not in names:
        raise ValueError(f"job has no group {group!r} (groups: {', '.join(map(str, names))})")
    return group


@with_connection
def scale(
    job: str = typer.Argument(..., help="Job ID."),
    args: list[str] = typer.Argument(
        ..., help="[GROUP] COUNT, where COUNT is N, +N or -N.", metavar="[GROUP] COUNT"
    ),
    message: str = typer.Option(
        "scaled by nomad-triton", "--message", "-m", help="Recorded in the scaling event."
    ),
    force: bool = typer.Option(
        False, "--force", help="Skip the scaling-bounds pre-check (Nomad still enforces the job's scaling block)."
    ),
    detach: bool = typer.Option(False, "--detach", help="Return once Nomad accepted the change; do not wait."),
    timeout: str = typer.Option("10m", "--timeout", help="Give up waiting for the rollout after this long."),
    as_json: bool = JSON_OPT,
    conn: Connection | None = None,
) -> None:
    """Set a task group's count through Nomad's scale API (recorded as a scaling event)."""
    assert conn is not None
    if len(args) not in (1, 2):
        fail("expected [GROUP] COUNT", EXIT_BAD_INPUT, as_json)
    group_arg, expr = (None, args[0]) if len(args) == 1 else (args[0], args[1])
    wait_s = wait_seconds_or_exit(timeout, as_json)
    deadline = time.monotonic() + wait_s
    with nomad_errors(as_json):
        job_obj = conn.client.job(job)
        try:
            group = resolve_group(job_obj, group_arg)
            status = (conn.client.scale_status(job).get("TaskGroups") or {}).get(group) or {}
            current = int(status.get("Desired") or 0)
            count = target_count(current, expr)
        except ValueError as exc:
            fail(str(exc), EXIT_BAD_INPUT, as_json)
        lo, hi = bounds(job_obj, group)
        outside = (lo is not None and count < lo) or (hi is not None and count > hi)
        if outside and not force:
            fail(
                f"count {count} is outside group {group!r} scaling bounds [{lo}, {hi}]; "
                "raise scaling.min/max in the spec and deploy to change them",
                EXIT_BAD_INPUT,
                as_json,
            )
        try:
            reply = conn.client.scale(job, group, count, message, meta={"previous": current, "forced": force})
        except errors.ScalingBlocked as exc:
            fail(f"{exc} (wait for it to finish, or fail it)", EXIT_FAILED, as_json)
        except errors.BadRequest as exc:  # e.g. Nomad's own scaling-block bounds check
            fail(f"Nomad refused scaling {job}/{group} to {count}: {exc}", EXIT_BAD_INPUT, as_json)
    record: dict[str, Any] = {
        "job": job,
        "group": group,
        "previous": current,
        "count": count,
        "eval_id": reply.get("EvalID"),
        "message": message,
    }
    detach_or_follow(conn, job, reply, record, detach=detach, as_json=as_json, deadline=deadline,
                     subject=f"{job}/{group}", started=f"{job}/{group}: {current} -> {count}",
                     accepted_outcome="accepted", detail_key="detail")


def register(app: typer.Typer) -> None:
    # ignore_unknown_options lets "-1" through as a COUNT instead of an unknown option.
    app.command("scale", context_settings={"ignore_unknown_options": True})(scale)
