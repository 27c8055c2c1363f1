"""`nomad-triton validate SPEC` (local + server side) and `nomad-triton plan SPEC`.

Agreement with cli/render.py (engineer E): render.py owns the local checks (`validate_local`,
schema + render + parse-back) and registers a local-only `validate`. This module registers after
it (COMMAND_MODULES order) and takes the `validate` name over: it runs the same local checks first,
then — unless `--local` — asks the server to parse (/v1/jobs/parse) and validate
(/v1/validate/job) the rendered job, because only the server knows what its Nomad version
accepts (Levant's lesson). `--local` gives exactly E's command, with no Nomad contacted.

plan exit codes follow `nomad job plan`: 0 no change, 1 changes, 255 error; bad input is 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from nomad_triton.cli import render as local_cli
from nomad_triton.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    JSON_OPT,
    SET_OPT,
    SPEC_ARG,
    VALUES_OPT,
    bad_models,
    emit_json,
    fail,
    load_spec_or_exit,
)
from nomad_triton.cli.connection import Connection, nomad_errors, with_connection
from nomad_triton.nomad import errors
from nomad_triton.nomad.client import NomadClient
from nomad_triton.nomad.diff import allocation_changes
from nomad_triton.nomad.failures import explain_failed_tg_allocs
from nomad_triton.nomad.planview import plan_lines
from nomad_triton.render import render_job, validate_local
from nomad_triton.spec import DeploymentSpec

PLAN_ERROR = 255


def server_job(client: NomadClient, spec: DeploymentSpec, spec_path: Path, as_json: bool, code: int) -> dict:
    """Render and parse ON THE SERVER; a rejected job ends the command with one line and `code`."""
    hcl = render_job(spec)
    try:
        job = client.parse_hcl(hcl)
    except errors.BadRequest as exc:
        fail(f"{spec_path}: Nomad rejected the rendered job: {exc}", code, as_json)
    return job


def server_validate(client: NomadClient, job: dict[str, Any]) -> tuple[list[str], str]:
    """(validation errors, warnings) from /v1/validate/job; a 400 reply counts as an error list."""
    try:
        reply = client.validate_job(job)
    except errors.BadRequest as exc:
        return [str(exc)], ""
    problems = list(reply.get("ValidationErrors") or [])
    if reply.get("Error") and not problems:
        problems = [reply["Error"]]
    return problems, reply.get("Warnings") or ""


@with_connection
def validate(
    spec: Path = SPEC_ARG,
    sets: list[str] = SET_OPT,
    values: list[Path] = VALUES_OPT,
    local: bool = typer.Option(False, "--local", help="Only the local checks; do not contact Nomad."),
    as_json: bool = JSON_OPT,
    conn: Connection | None = None,
) -> None:
    """Validate SPEC: local schema/render checks, then server-side parse and validation."""
    if local:
        local_cli.validate(spec=spec, sets=sets, values=values, as_json=as_json)
        return
    assert conn is not None
    loaded = load_spec_or_exit(spec, sets, values, as_json, check_repository=True)
    bad_models(spec, loaded, as_json)
    problems = validate_local(loaded)
    if problems:
        fail(f"{spec}: rendered job is invalid: {problems[0]}", EXIT_FAILED, as_json, problems=problems)
    with nomad_errors(as_json):
        job = server_job(conn.client, loaded, spec, as_json, EXIT_FAILED)
        server_problems, warnings = server_validate(conn.client, job)
    if as_json:
        emit_json(
            {
                "valid": not server_problems,
                "job": job.get("ID"),
                "problems": server_problems,
                "warnings": warnings,
            }
        )
        if server_problems:
            raise typer.Exit(EXIT_FAILED)
        return
    if server_problems:
        fail(f"{spec}: Nomad says the job is invalid: {'; '.join(server_problems)}", EXIT_FAILED)
    if warnings:
        typer.echo(f"warning: {warnings}", err=True)
    typer.echo(f"{spec}: ok: job {job.get('ID')!r} parsed and validated by Nomad at {conn.settings.address}")


@with_connection
def plan(
    spec: Path = SPEC_ARG,
    sets: list[str] = SET_OPT,
    values: list[Path] = VALUES_OPT,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show unchanged fields too."),
    as_json: bool = JSON_OPT,
    conn: Connection | None = None,
) -> None:
    """Dry-run SPEC on the server: readable diff, scheduler outcome, placement failures explained.

    Exit codes as `nomad job plan`: 0 no change, 1 changes, 255 error (2: bad spec).
    """
    assert conn is not None
    loaded = load_spec_or_exit(spec, sets, values, as_json)
    with nomad_errors(as_json, PLAN_ERROR):
        job = server_job(conn.client, loaded, spec, as_json, PLAN_ERROR)
        result = conn.client.plan(job)
    changed = result.has_changes or allocation_changes(result.desired_updates)
    if as_json:
        emit_json(
            {
                "job": job.get("ID"),
                "changes": changed,
                "job_modify_index": result.job_modify_index,
                "desired_updates": result.desired_updates,
                "failed_tg_allocs": result.failed_tg_allocs,
                "placement_failures": explain_failed_tg_allocs(result.failed_tg_allocs, job),
                "diff": result.diff,
                "warnings": result.warnings,
            }
        )
    else:
        typer.echo("\n".join(plan_lines(result, verbose, job)))
    raise typer.Exit(1 if changed else 0)


def register(app: typer.Typer) -> None:
    # Take the `validate` name over from cli/render.py (see the module docstring).
    app.registered_commands[:] = [c for c in app.registered_commands if c.name != "validate"]
    app.command("validate")(validate)
    app.command("plan")(plan)


__all__ = ["EXIT_BAD_INPUT", "plan", "register", "server_job", "server_validate", "validate"]
