"""Root typer application; each command group lives in its own module and registers here."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="nomad-triton",
    help="Deploy, watch, probe and autoscale Triton inference servers on HashiCorp Nomad.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Each entry is a module exposing `register(app: typer.Typer) -> None`. Keeping the list here
# (rather than importing at module top) lets one broken group fail loudly without hiding others.
COMMAND_MODULES: list[str] = [
    "nomad_triton.cli.dev",
    "nomad_triton.cli.serve",
    "nomad_triton.cli.render",
    "nomad_triton.cli.validate_plan",
    "nomad_triton.cli.deploy",
    "nomad_triton.cli.status",
    "nomad_triton.cli.watch",
    "nomad_triton.cli.scale",
    "nomad_triton.cli.rollback",
    "nomad_triton.cli.stop",
    "nomad_triton.cli.probe",
    "nomad_triton.cli.autoscale",
    "nomad_triton.cli.sd",
    "nomad_triton.cli.fleet",
]


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register_all()


def main() -> None:
    """Console-script entry point (usage errors as one line / JSON: nomad_triton.cli.usage)."""
    import sys

    from nomad_triton.cli import usage

    sys.exit(usage.run(app))


if __name__ == "__main__":
    main()
