"""The serve entry point: options, exit codes, and the call into the launcher.

Why it lives in `server/` and not in `cli/`: both `nomad-triton serve` (the CLI) and
`python -m nomad_triton.server` (slim images, process-level tests) run it, and the server must not
depend on the CLI. The arrow points one way: `cli.serve` registers this function; nothing in
`server` imports `cli`.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from nomad_triton.server import launcher
from nomad_triton.server.settings import MAX_DRAIN_S, SettingsError, resolve
from nomad_triton.server.worker import report


def serve(
    models: Path = typer.Option(
        ..., "--models", help="Model repository: one folder per model with model.toml or Triton's config.pbtxt."
    ),
    http_port: int | None = typer.Option(None, help="HTTP port (NOMAD_PORT_http wins; default 8000)."),
    grpc_port: int | None = typer.Option(None, help="gRPC port (NOMAD_PORT_grpc wins; default 8001)."),
    metrics_port: int | None = typer.Option(None, help="Metrics port (NOMAD_PORT_metrics wins; default 8002)."),
    host: str | None = typer.Option(None, help="Bind address (else NOMAD_IP_http, else 127.0.0.1)."),
    drain_timeout: int = typer.Option(20, help=f"Seconds in-flight requests get after SIGTERM (max {MAX_DRAIN_S})."),
    log_verbose: int = typer.Option(0, help="tritonserver verbose log level (0 = off; costs throughput)."),
    as_json: bool = typer.Option(False, "--json", help="Emit lifecycle events as JSON lines."),
    exit_on_error: bool = typer.Option(
        True, "--exit-on-error/--no-exit-on-error",
        help="Refuse to start while any model is broken (Triton's default); with --no-exit-on-error the "
        "broken ones are listed not ready and the rest serve.",
    ),
    allow_cpu_fallback: bool = typer.Option(
        False, "--allow-cpu-fallback", help="Run instance_group KIND_GPU models on CPU when no GPU is visible."
    ),
) -> None:
    """Serve every model in --models over HTTP, gRPC and Prometheus metrics; drain on SIGTERM."""
    try:
        settings = resolve(
            os.environ, host=host, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
            drain_timeout_s=drain_timeout, log_verbose=log_verbose, exit_on_error=exit_on_error,
            allow_cpu_fallback=allow_cpu_fallback,
        )
    except SettingsError as exc:
        report(as_json, str(exc))
        raise typer.Exit(2) from None
    raise typer.Exit(launcher.run(models, settings, as_json))
