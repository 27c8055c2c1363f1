"""Supervisor for the serving process: libpython, process group, signal forwarding, no orphans.

Why a separate process: PyTriton's tritonserver (and its python-backend stubs) outlive a Python
parent that is killed hard. The launcher stays tiny and starts the worker as the leader of a new
process group with LD_LIBRARY_PATH pointing at this interpreter's libpython (the stub loads
libpython dynamically and must get the same build, which pyenv interpreters do not guarantee). The
worker watches a pipe to the launcher and kills its group if the launcher vanishes; the launcher
kills the group if the worker exits or overruns its drain deadline.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from types import FrameType

from nomad_triton.server.model_repo import RepositoryError
from nomad_triton.server.repository import load_repository_partial
from nomad_triton.server.settings import TRITON_EXIT_TIMEOUT_S, ServerSettings
from nomad_triton.server.worker import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_START_FAILED, TOKEN_ENV, report

START_ATTEMPTS = 3
KILL_GRACE_S = TRITON_EXIT_TIMEOUT_S + 10.0  # beyond the drain deadline: tritonserver exit + PyTriton cleanup


def libpython_dir() -> str | None:
    """The folder holding this interpreter's shared libpython, if it was built with one."""
    libdir = sysconfig.get_config_var("LIBDIR")
    ldlib = sysconfig.get_config_var("LDLIBRARY")
    if libdir and ldlib and Path(libdir, ldlib).exists():
        return str(libdir)
    return None


def child_env(env: Mapping[str, str], token: str) -> dict[str, str]:
    """Environment for the worker: our libpython first on LD_LIBRARY_PATH, token handed over privately."""
    out = dict(env)
    libdir = libpython_dir()
    if libdir:
        rest = [p for p in out.get("LD_LIBRARY_PATH", "").split(":") if p and p != libdir]
        out["LD_LIBRARY_PATH"] = ":".join([libdir, *rest])
    out[TOKEN_ENV] = token
    out["PYTHONUNBUFFERED"] = "1"
    return out


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class _Worker:
    """One worker process plus the pipe whose closing tells it the launcher is gone."""

    def __init__(self, models_dir: Path, settings: ServerSettings, as_json: bool, token: str,
                 started: float) -> None:
        read_fd, self.write_fd = os.pipe()
        cmd = [
            sys.executable, "-m", "nomad_triton.server.worker", "--models", str(models_dir),
            "--settings", json.dumps(asdict(settings)), "--parent-fd", str(read_fd), "--started", repr(started),
        ] + (["--json"] if as_json else [])
        self.proc = subprocess.Popen(cmd, env=child_env(os.environ, token), pass_fds=(read_fd,),
                                     start_new_session=True)
        os.close(read_fd)

    def close(self) -> None:
        _kill_group(self.proc.pid)  # stubs or tritonserver left by a crashed worker
        os.close(self.write_fd)


def run(models_dir: Path, settings: ServerSettings, as_json: bool = False) -> int:
    """Validate, start the worker, forward SIGTERM/SIGINT as a drain request, return its exit code.

    A worker whose tritonserver fails while loading models is restarted (up to START_ATTEMPTS): PyTriton
    0.7's multi-instance models handshake with a 1 s timeout that a busy host can miss.
    """
    started = time.monotonic()
    try:  # a missing or empty repository fails here; the worker reports every broken model together
        load_repository_partial(models_dir)
    except RepositoryError as exc:
        for line in exc.lines:
            report(as_json, line)
        return EXIT_BAD_INPUT
    token = os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(32)
    deadline: list[float] = []
    current: list[_Worker] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        if not deadline:
            deadline.append(time.monotonic() + settings.drain_timeout_s + KILL_GRACE_S)
        if current:
            current[-1].proc.send_signal(signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    for attempt in range(1, START_ATTEMPTS + 1):
        worker = _Worker(models_dir, settings, as_json, token, started)
        current.append(worker)
        try:
            while True:
                try:
                    code = worker.proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    if deadline and time.monotonic() > deadline[0]:
                        report(as_json, "drain deadline passed; killing the server")
                        _kill_group(worker.proc.pid)
        finally:
            worker.close()
        if code != EXIT_START_FAILED or deadline:
            break
        if attempt < START_ATTEMPTS:
            report(as_json, f"tritonserver failed to start (attempt {attempt}/{START_ATTEMPTS}); retrying", "warning")
    if code == EXIT_START_FAILED:
        return EXIT_FAILED
    return code if code >= 0 else EXIT_FAILED
