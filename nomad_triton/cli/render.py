"""`nomad-triton render` and the local part of `nomad-triton validate` (thin typer layer)."""

from __future__ import annotations

from pathlib import Path

import typer

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
from nomad_triton.render import render_job, validate_local


def render(
    spec: Path = SPEC_ARG,
    sets: list[str] = SET_OPT,
    values: list[Path] = VALUES_OPT,
    out: Path | None = typer.Option(None, "--out", help="Write the HCL to this file instead of stdout."),
    as_json: bool = JSON_OPT,
) -> None:
    """Render the Nomad HCL2 job for SPEC (nothing is contacted)."""
    loaded = load_spec_or_exit(spec, sets, values, as_json, allow_pools=True)
    # A spec with [[pools]] renders to one complete job per pool, one after the other.
    hcl = "\n".join(render_job(job) for job in loaded.job_specs())
    if out is not None:
        try:
            out.write_text(hcl, encoding="utf-8")
        except OSError as exc:
            fail(f"{out}: cannot write: {exc.strerror or exc}", EXIT_BAD_INPUT, as_json)
    if as_json:
        emit_json({"hcl": hcl, "spec": loaded.model_dump(mode="json"), "out": str(out) if out else None})
    elif out is None:
        typer.echo(hcl, nl=False)
    else:
        typer.echo(f"wrote {out}", err=True)


def validate(
    spec: Path = SPEC_ARG,
    sets: list[str] = SET_OPT,
    values: list[Path] = VALUES_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Validate SPEC locally: schema, render, and parse-back of the HCL (no Nomad contacted)."""
    loaded = load_spec_or_exit(spec, sets, values, as_json, allow_pools=True, check_repository=True)
    bad_models(spec, loaded, as_json)
    problems = [p for job in loaded.job_specs() for p in validate_local(job)]
    if as_json:
        emit_json(
            {
                "valid": not problems,
                "job": loaded.name,
                "jobs": [j.name for j in loaded.job_specs()],
                "problems": problems,
            }
        )
        if problems:
            raise typer.Exit(EXIT_FAILED)
        return
    if problems:
        fail(
            f"{spec}: rendered job is invalid: {problems[0]}"
            + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")
        )
    typer.echo(
        f"{spec}: ok: job {loaded.name!r}, {loaded.count} x {loaded.driver.type}, "
        f"models {', '.join(loaded.model_repository.models)}"
    )


def register(app: typer.Typer) -> None:
    app.command("render")(render)
    app.command("validate")(validate)
