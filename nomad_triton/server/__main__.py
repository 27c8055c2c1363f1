"""`python -m nomad_triton.server --models DIR ...`: the serve command without the rest of the CLI.

Same options and exit codes as `nomad-triton serve`; handy in slim images and as a stable target for
process-level tests.
"""

from __future__ import annotations

import typer

from nomad_triton.server.command import serve

if __name__ == "__main__":
    typer.run(serve)
