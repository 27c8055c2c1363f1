"""Usage errors (unknown flag, missing argument, bad option value) as ONE line, JSON under --json.

Why: click/typer print a multi-line rich box for usage errors, even when the user asked for
`--json`; a CI step that parses stderr as JSON then fails on the wrong error. This runs the typer
app in click's non-standalone mode and prints its usage errors the way `common.fail` prints ours.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer

from nomad_triton.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, fail

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what typer and shells use

# typer >= 0.20 vendors click (typer._click); reach its exception classes through public names.
_USAGE_ERROR: type[Exception] = typer.BadParameter.__mro__[1]
_CLICK_EXCEPTION: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _one_line(exc: Any) -> str:
    """`nomad-triton scale: Missing argument 'JOB'. (see 'nomad-triton scale --help')`."""
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, _USAGE_ERROR) and ctx is not None:
        return f"{ctx.command_path}: {exc.format_message()} (see '{ctx.command_path} --help')"
    return str(exc.format_message())


def _report(message: str, code: int, as_json: bool) -> int:
    try:
        fail(message, code, as_json)
    except typer.Exit as done:
        return int(done.exit_code)


def run(app: typer.Typer, args: Sequence[str] | None = None) -> int:
    """Run `app` and return its exit code; click errors become one `error:` line (JSON with --json)."""
    argv = list(sys.argv[1:] if args is None else args)
    as_json = "--json" in argv[: argv.index("--")] if "--" in argv else "--json" in argv
    try:
        code = app(args=argv, prog_name="nomad-triton", standalone_mode=False)
    except _CLICK_EXCEPTION as exc:
        return _report(_one_line(exc), getattr(exc, "exit_code", 0) or EXIT_BAD_INPUT, as_json)
    except typer.Abort:
        return _report("aborted", EXIT_FAILED, as_json)
    if code == EXIT_INTERRUPTED:  # typer turned an unhandled Ctrl-C into exit 130 without a word
        return _report("interrupted", EXIT_INTERRUPTED, as_json)
    return code if isinstance(code, int) else 0
