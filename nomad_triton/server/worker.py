"""The serving process: loads the repository, runs PyTriton, drains on SIGTERM.

It is started by launcher.py as the leader of its own process group, so tritonserver and its
python-backend stubs share that group and can be killed together. A watchdog thread blocks on a
pipe whose write end only the launcher holds: when the launcher dies by any means (SIGKILL
included) the read returns EOF and the worker kills its whole group, so no tritonserver is orphaned.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from nomad_triton.server.model_repo import RepositoryError
from nomad_triton.server.procs import alive
from nomad_triton.server.repository import load_repository_partial
from nomad_triton.server.settings import TRITON_EXIT_TIMEOUT_S, ServerSettings

LOG = logging.getLogger("nomad_triton.server")
TOKEN_ENV = "NOMAD_TRITON_ACCESS_TOKEN"
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_START_FAILED = 75  # launcher-internal: tritonserver died while loading models; worth a retry


def _watch_parent(fd: int) -> None:
    """Block until the launcher's end of the pipe closes, then take the whole process group down."""
    try:
        while os.read(fd, 1):
            pass
    except OSError:
        pass
    os.killpg(os.getpgrp(), signal.SIGKILL)


_EVENTS = sys.stdout


def _reserve_stdout_for_events() -> None:
    """Keep stdout for our lifecycle lines only: PyTriton relays tritonserver's output with print() in
    arbitrary chunks, which would split `--json` lines, so fd 1 is pointed at stderr for everyone else."""
    global _EVENTS
    sys.stdout.flush()
    _EVENTS = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)


def _emit(as_json: bool, event: str, text: str, **fields: object) -> None:
    line = json.dumps({"event": event, **fields}) if as_json else text
    print(line, file=_EVENTS, flush=True)


def report(as_json: bool, message: str, level: str = "error") -> None:
    """One line on stderr: `error: ...` for people, {"event": "error", ...} with --json."""
    line = json.dumps({"event": level, "message": message}) if as_json else f"{level}: {message}"
    print(line, file=sys.stderr, flush=True)


def _tritonserver_exited(triton: object) -> bool:
    """True once the tritonserver child was started and is gone or a zombie.

    Reads the pid from PyTriton 0.7 internals (pinned <0.8) and checks /proc, never sh's is_alive():
    that would run PyTriton's exit callback on this thread, which blocks on the lock run() holds.
    """
    server = getattr(triton, "_triton_server", None)
    cmd = getattr(server, "_tritonserver_running_cmd", None)
    pid = getattr(cmd, "pid", None)
    return isinstance(pid, int) and not alive(pid)


def _start(triton: object, as_json: bool) -> str | None:
    """triton.run() on this (main) thread, watched from another.

    run() must stay on the thread that lives as long as the server: PyTriton spawns tritonserver with
    PR_SET_PDEATHSIG, which fires when the *spawning thread* exits. If tritonserver dies while loading,
    PyTriton's run() would poll the dead server for 120 s (its stop() waits on the same lock), so the
    watcher reports and exits the process at once with EXIT_START_FAILED (the launcher may retry).
    """
    loaded = threading.Event()

    def watch() -> None:
        while not loaded.wait(0.2):
            if _tritonserver_exited(triton):
                report(as_json, "triton failed to start: tritonserver exited while loading models (log above)")
                _exit_now(EXIT_START_FAILED)

    threading.Thread(target=watch, daemon=True, name="startup-watch").start()
    try:
        triton.run()  # type: ignore[attr-defined]
    except Exception as exc:  # reported in one line by the caller
        return f"{type(exc).__name__}: {exc}"
    finally:
        loaded.set()
    return None


def _exit_now(code: int) -> None:
    for stream in (_EVENTS, sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)  # skip non-daemon threads stuck in PyTriton or user model code; the launcher reaps


def serve(models_dir: Path, settings: ServerSettings, token: str, as_json: bool, started: float) -> int:
    """Run until SIGTERM/SIGINT, then let tritonserver drain in-flight requests and exit."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    from nomad_triton.probe.gpu import read_gpus
    from nomad_triton.server.app import build_triton  # heavy imports after signals are handled
    from nomad_triton.server.backends import prepare_partial
    from nomad_triton.server.drain import InFlight, drain
    from nomad_triton.server.python_backend import finalize_all

    try:
        models, broken = load_repository_partial(models_dir, allow_cpu_fallback=settings.allow_cpu_fallback)
        prepared, broken_prepare = prepare_partial(models)
    except RepositoryError as exc:
        for line in exc.lines:
            report(as_json, line)
        return EXIT_BAD_INPUT
    broken.update(broken_prepare)
    for model in models:
        for line in model.warnings:  # fields accepted but not applied (docs/triton-repository.md)
            report(as_json, line, "warning")
    for lines in broken.values():
        for line in lines:
            report(as_json, line, "error" if settings.exit_on_error else "warning")
    if broken and (settings.exit_on_error or not prepared):
        if not settings.exit_on_error:
            report(as_json, "no model loaded; nothing to serve")
        finalize_all()
        return EXIT_BAD_INPUT
    inflight = InFlight()
    triton = build_triton(prepared, settings, token, inflight, broken)
    failure = _start(triton, as_json)
    if failure:
        report(as_json, f"triton failed to start: {failure}")
        return EXIT_START_FAILED
    names = [p.model.spec.name for p in prepared]
    versions = {p.model.spec.name: sorted(p.versions) for p in prepared}
    gpus = read_gpus()  # on a GPU node this says what the allocation really got; elsewhere why not
    _emit(
        as_json, "ready",
        f"ready in {time.monotonic() - started:.2f} s: models "
        f"{', '.join(n if versions[n] == [1] else f'{n} (versions {versions[n]})' for n in names)}"
        f"{' | NOT READY: ' + ', '.join(sorted(broken)) if broken else ''} | http {settings.host}:"
        f"{settings.http_port} grpc {settings.grpc_port} metrics {settings.metrics_port} | {gpus.summary()}",
        models=names, versions=versions, unavailable=sorted(broken), host=settings.host, http_port=settings.http_port, grpc_port=settings.grpc_port,
        metrics_port=settings.metrics_port, seconds=round(time.monotonic() - started, 3),
        gpus=gpus.to_dict(),
    )
    while not stop.wait(1.0):
        if not triton.is_alive():
            report(as_json, "tritonserver or a model backend exited unexpectedly")
            triton.stop()
            return EXIT_FAILED
    t0 = time.monotonic()
    _emit(as_json, "draining", f"draining: up to {settings.drain_timeout_s} s for in-flight requests",
          drain_timeout_s=settings.drain_timeout_s)
    local = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    settle_s = max((p.model.spec.dynamic_batching.max_queue_delay_us if p.model.spec.dynamic_batching else 0)
                   for p in prepared) / 1e6 + 0.05
    idle = drain(f"{local}:{settings.http_port}", token, names, inflight, settings.drain_timeout_s, settle_s)
    if not idle:
        report(as_json, f"{inflight.count} batch(es) still running at the drain deadline", "warning")
    # SIGINT: tritonserver closes listeners, gives stragglers TRITON_EXIT_TIMEOUT_S, exits. PyTriton's
    # cleanup then joins our model threads, which a batch stuck in user code would block forever.
    stopper = threading.Thread(target=triton.stop, daemon=True, name="stop")
    stopper.start()
    stopper.join(timeout=TRITON_EXIT_TIMEOUT_S + 5.0)
    finalize_all()  # Triton python-backend models' finalize(), as Triton calls it at unload
    _emit(as_json, "stopped", f"stopped after {time.monotonic() - t0:.2f} s drain",
          seconds=round(time.monotonic() - t0, 3), drained=idle)
    return EXIT_OK if idle else EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nomad_triton.server.worker")
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--settings", required=True, help="ServerSettings as JSON")
    parser.add_argument("--parent-fd", type=int, default=-1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--started", type=float, default=None, help="launcher's time.monotonic() at start")
    args = parser.parse_args(argv)
    _reserve_stdout_for_events()
    started = args.started if args.started is not None else time.monotonic()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    # PyTriton logs the full child environment at DEBUG; keep it at INFO and drop the token from ours.
    logging.getLogger("pytriton").setLevel(logging.WARNING)
    token = os.environ.pop(TOKEN_ENV, "")
    if not token:
        report(args.json, f"{TOKEN_ENV} must be set by the launcher")
        return EXIT_BAD_INPUT
    if args.parent_fd >= 0:
        threading.Thread(target=_watch_parent, args=(args.parent_fd,), daemon=True, name="watchdog").start()
    settings = ServerSettings(**json.loads(args.settings))
    return serve(args.models, settings, token, args.json, started)


if __name__ == "__main__":
    _exit_now(main())
