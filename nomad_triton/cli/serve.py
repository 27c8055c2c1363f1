"""`nomad-triton serve`: registers the server's own entry point (nomad_triton.server.command)."""

from __future__ import annotations

import typer

from nomad_triton.server.command import serve


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
