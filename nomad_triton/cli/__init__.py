"""The `nomad-triton` command line: thin typer modules, one per command group.

CLI modules only parse flags, call library code, format output and choose exit codes.
"""
