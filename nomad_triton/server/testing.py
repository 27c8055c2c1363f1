"""Run `serve` as a real subprocess on free loopback ports: shared by e2e tests, benchmarks and demos.

The server is started as the leader of its own process group and `stop()` kills that group and every
descendant group (the worker and tritonserver live in a second group), so a failed test never
leaves a tritonserver behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from nomad_triton.server.procs import alive, descendants, process_name

__all__ = ["ServerProcess", "alive", "descendants", "free_ports", "process_name"]


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (held open together so they cannot repeat)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class ServerProcess:
    """`python -m nomad_triton.server` (or any argv prefix) on three free ports, logs in a file."""

    def __init__(self, models: Path, log_path: Path, *, extra_args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None, argv_prefix: list[str] | None = None) -> None:
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
        self.log_path = log_path
        argv = argv_prefix or [sys.executable, "-m", "nomad_triton.server"]
        self.argv = [*argv, "--models", str(models), "--http-port", str(self.http_port),
                     "--grpc-port", str(self.grpc_port), "--metrics-port", str(self.metrics_port), *extra_args]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self._groups: set[int] = set()

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> ServerProcess:
        self.started_at = time.monotonic()
        with open(self.log_path, "wb") as log, open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=log, start_new_session=True)
        self._groups.add(self.proc.pid)
        return self

    @property
    def out_path(self) -> Path:
        return self.log_path.with_suffix(".stdout")

    def out(self) -> str:
        """stdout: only serve's lifecycle lines (ready/draining/stopped), JSON with --json."""
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    def log(self) -> str:
        """stderr (logs, tritonserver output, errors) followed by stdout."""
        err = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return err + self.out()

    def ready(self, path: str = "/v2/health/ready") -> int | None:
        """HTTP status of a health endpoint, None when nothing answers."""
        try:
            return httpx.get(f"http://{self.http_url}{path}", timeout=1.0).status_code
        except httpx.HTTPError:
            return None

    def wait_ready(self, timeout_s: float = 60.0) -> float:
        """Seconds from start() until /v2/health/ready is 200 (strict: every model loaded)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.ready() == 200:
                self.remember_groups()
                return time.monotonic() - self.started_at
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode} before ready:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"server not ready after {timeout_s} s:\n{self.log()[-3000:]}")

    def remember_groups(self) -> None:
        """Record the process groups of all descendants so stop() can reach them even once orphaned."""
        assert self.proc is not None
        for pid in descendants(self.proc.pid):
            try:
                self._groups.add(os.getpgid(pid))
            except ProcessLookupError:
                pass

    def tree(self) -> list[int]:
        assert self.proc is not None
        return descendants(self.proc.pid)

    def wait(self, timeout_s: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def stop(self) -> None:
        """Kill every process group this server ever had; idempotent."""
        if self.proc is not None and self.proc.poll() is None:
            self.remember_groups()
        for group in self._groups:
            try:
                os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
