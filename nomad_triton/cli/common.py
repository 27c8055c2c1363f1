"""Helpers every CLI module shares: one-line failures, --json output, and spec-loading options.

Why shared: every command must load specs the same way (SPEC, repeatable --values layered in
order, repeatable --set applied last) and fail the same way (one line, no traceback, exit 2 for
bad input), so users learn it once and scripts can rely on it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer

from nomad_triton.spec import DeploymentSpec, SpecError, load_spec, parse_duration

# Exit codes (README): 0 ok, 1 operation failed, 2 bad input/usage, 3 failed and rolled back.
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_ROLLED_BACK = 0, 1, 2, 3

SPEC_ARG = typer.Argument(..., help="Deployment spec file (.toml, .yaml/.yml or .json).", show_default=False)
SET_OPT = typer.Option(
    [],
    "--set",
    metavar="KEY=VALUE",
    help="Override one field, e.g. --set rollout.canary=1 or --set model_repository.models.0=mlp "
    "(VALUE is a TOML literal when it parses as one, else text where the field takes text). "
    "Repeatable; applied last.",
)
VALUES_OPT = typer.Option(
    [],
    "--values",
    metavar="FILE",
    help="Values file (.toml/.yaml/.json) deep-merged over the spec. Repeatable; later files win.",
)
JSON_OPT = typer.Option(False, "--json", help="Machine-readable JSON output.")


def fail(message: str, code: int = EXIT_FAILED, as_json: bool = False, **extra: Any) -> NoReturn:
    """Print ONE line to stderr (a JSON object with --json) and exit with `code`."""
    line = " ".join(str(message).split())  # newlines in upstream messages must not break "one line"
    if as_json:
        print(json.dumps({"error": line, "exit_code": code, **extra}), file=sys.stderr)
    else:
        print(f"error: {line}", file=sys.stderr)
    raise typer.Exit(code)


def wait_seconds_or_exit(timeout: str, as_json: bool = False, *, allow_zero: bool = False) -> float:
    """A --timeout Go duration ("90s", "10m") in seconds; bad or non-positive input exits 2."""
    try:
        seconds = parse_duration(timeout).total_seconds()
    except ValueError as exc:
        fail(f"--timeout: {exc}", EXIT_BAD_INPUT, as_json)
    if seconds < 0 or (seconds == 0 and not allow_zero):
        fail("--timeout: must be positive", EXIT_BAD_INPUT, as_json)
    return seconds


def table_console() -> Any:
    """A rich Console for tables: the terminal's width, or wide enough not to truncate when piped."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


def emit_json(data: Any) -> None:
    """Write one JSON document to stdout (timedeltas and paths are already strings via pydantic)."""
    print(json.dumps(data, indent=2, sort_keys=False, default=str))


def load_spec_or_exit(
    spec: Path, sets: list[str], values: list[Path], as_json: bool = False, *, allow_pools: bool = False,
    check_repository: bool = False,
) -> DeploymentSpec:
    """Load + validate the spec; bad input ends the command with exit 2 and one line naming file and field.

    A spec with `[[pools]]` is several jobs: single-job commands refuse it (exit 2) unless the
    command handles every pool itself (`allow_pools`, e.g. render); fleets deploy it.
    """
    try:
        loaded = load_spec(spec, sets=sets, values=values, check_repository=check_repository)
    except SpecError as exc:
        fail(exc.line(), EXIT_BAD_INPUT, as_json, source=exc.source, field=exc.field)
    if loaded.pools and not allow_pools:
        jobs = ", ".join(j.name for j in loaded.job_specs())
        fail(
            f"{spec}: pools: this spec renders {len(loaded.pools)} jobs ({jobs}); deploy it with a fleet file "
            "(nomad-triton fleet plan|deploy FLEET) or remove [[pools]]",
            EXIT_BAD_INPUT,
            as_json,
            source=str(spec),
            field="pools",
        )
    return loaded


def bad_models(spec_path: Path, spec: Any, as_json: bool) -> None:
    """Exit 2 naming every model of a local repository that `serve` would refuse (validate only)."""
    from nomad_triton.spec.local_models import check_local_models

    problems = check_local_models(spec)
    if problems:
        fail(f"{spec_path}: {problems[0]}" + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""),
             EXIT_BAD_INPUT, as_json, problems=[f"{spec_path}: {p}" for p in problems])
