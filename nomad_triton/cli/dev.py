"""`nomad-triton dev up|down|status`: run devcluster (local Nomad-API cluster) in the background."""

from __future__ import annotations

from pathlib import Path

import typer

from nomad_triton.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, JSON_OPT, emit_json, fail
from nomad_triton.devcluster.config import ConfigError, load_config
from nomad_triton.devcluster.launcher import LaunchError, find, start, stop, stop_orphans

STATE_DIR_OPT = typer.Option(Path(".devcluster"), "--state-dir", help="Allocations, logs, tokens, pidfile.")

dev_app = typer.Typer(help="Run devcluster, a single-machine cluster speaking Nomad's HTTP API.",
                      no_args_is_help=True)


@dev_app.command("up")
def up(
    config: Path | None = typer.Option(None, "--config", help="devcluster.toml (default: one CPU node)."),
    port: int | None = typer.Option(None, "--port", help="Listen port on 127.0.0.1 (0 = any free port)."),
    state_dir: Path = STATE_DIR_OPT,
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds to wait for the API to answer."),
    as_json: bool = JSON_OPT,
) -> None:
    """Start devcluster in the background and print the NOMAD_ADDR to use."""
    if config is not None:
        try:
            load_config(config)  # bad config: one line naming file and field, exit 2
        except ConfigError as exc:
            fail(str(exc), EXIT_BAD_INPUT, as_json)
    if port is not None and not 0 <= port <= 65535:
        fail(f"--port: {port} is not a port number", EXIT_BAD_INPUT, as_json)
    try:
        running = start(state_dir, config=config, port=port, timeout_s=timeout)
    except LaunchError as exc:
        fail(str(exc), EXIT_FAILED, as_json)
    if as_json:
        emit_json({**running.to_dict(), "nomad_addr": running.addr})
        return
    print(f"export NOMAD_ADDR={running.addr}")
    if running.acl:
        # Never print the token itself: point at the 0600 file that holds it.
        print(f'export NOMAD_TOKEN="$(cat {running.token_file})"')
    print(f"# devcluster pid {running.pid}, state {running.state_dir}, log {running.log_file}", flush=True)


@dev_app.command("down")
def down(
    state_dir: Path = STATE_DIR_OPT,
    timeout: float = typer.Option(20.0, "--timeout", help="Seconds to wait after SIGTERM before killing."),
    as_json: bool = JSON_OPT,
) -> None:
    """Stop devcluster and every task process it started."""
    result = stop(state_dir, timeout_s=timeout)
    if result is None:
        orphans = stop_orphans(state_dir)  # tasks of a devcluster that crashed: nothing owns them now
        if as_json:
            emit_json({"running": False, "stopped": False, "killed_orphan_groups": orphans})
        else:
            print("devcluster is not running")
            if orphans:
                print(f"stopped {len(orphans)} task process group(s) left by a devcluster that died: {orphans}")
        return
    if result["remaining_groups"]:
        fail(f"process groups still alive after stop: {result['remaining_groups']}", EXIT_FAILED, as_json)
    if as_json:
        emit_json({"running": False, "stopped": True, **result})
    else:
        how = "gracefully" if result["graceful"] else "by force"
        print(f"devcluster (pid {result['pid']}) stopped {how}")


@dev_app.command("status")
def status(state_dir: Path = STATE_DIR_OPT, as_json: bool = JSON_OPT) -> None:
    """Say whether devcluster is running and where; exit 1 when it is not."""
    running = find(state_dir.resolve())
    if as_json:
        emit_json({"running": running is not None, **(running.to_dict() if running else {})})
    elif running is None:
        print("devcluster is not running")
    else:
        print(f"devcluster running: pid {running.pid}, NOMAD_ADDR={running.addr}, ACLs "
              f"{'on (token file ' + str(running.token_file) + ')' if running.acl else 'off'}")
    if running is None:
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    app.add_typer(dev_app, name="dev")
