"""Helpers for the CLI e2e tests: spec files, running the real `nomad-triton` CLI as a subprocess.

The CLI runs as its own process (what a user or CI runs), against devcluster over loopback; every
call has a deadline (subprocess timeout) so a hanging command fails the test instead of CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "examples" / "models"
BIN = Path(sys.executable).parent
CLI = [sys.executable, "-m", "nomad_triton.cli.main"]


@dataclass
class Result:
    code: int
    out: str
    err: str
    elapsed: float

    @property
    def text(self) -> str:
        return self.out + self.err

    def json(self) -> Any:
        return json.loads(self.out)


def cli_env(addr: str, token: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}
    env["NOMAD_ADDR"] = addr
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    if token:
        env["NOMAD_TOKEN"] = token
    return env


def run_cli(args: list[str], addr: str, token: str | None = None, timeout: float = 180) -> Result:
    t0 = time.monotonic()
    proc = subprocess.run(CLI + args, env=cli_env(addr, token), capture_output=True, text=True, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t0)


def start_cli(args: list[str], addr: str, log: Path) -> subprocess.Popen:
    """A CLI process in the background, output to `log`, in its own process group."""
    fh = open(log, "w")  # noqa: SIM115 - closed with the process by the caller's stop_cli
    return subprocess.Popen(CLI + args, env=cli_env(addr), stdout=fh, stderr=subprocess.STDOUT,
                            start_new_session=True, text=True)


def model_repo(tmp: Path, model: str = "relu_onnx") -> Path:
    """A model repository holding one example model (one tritonserver model keeps CPU use low)."""
    repo = tmp / "models"
    if not repo.exists():
        shutil.copytree(MODELS / model, repo / model, ignore=shutil.ignore_patterns("__pycache__"))
    return repo


def triton_spec(tmp: Path, name: str, *, extra: str = "", count: int = 1) -> Path:
    """A CPU Triton spec served by `nomad-triton serve` (raw_exec) from this venv."""
    repo = model_repo(tmp)
    path = tmp / f"{name}.toml"
    path.write_text(f'''
name = "{name}"
count = {count}

[driver]
type = "raw_exec"
command = "{BIN / 'nomad-triton'}"

[model_repository]
path = "{repo}"
models = ["relu_onnx"]

[resources]
cpu = 500
memory = 1024

[rollout]
min_healthy_time = "1s"
healthy_deadline = "90s"
progress_deadline = "120s"

[health]
interval = "1s"
timeout = "1s"

[restart]
attempts = 0

[reschedule]
unlimited = false
attempts = 0

[scaling]
enabled = true
min = 1
max = 2

{extra}
''')
    return path


def sleep_spec(tmp: Path, name: str, *, extra: str = "", gpus: int = 0, pool: str = "default") -> Path:
    """A spec whose task never answers HTTP: it is placed and runs but never becomes healthy."""
    repo = model_repo(tmp)
    path = tmp / f"{name}.toml"
    gpu = f'\n[gpus]\ncount = {gpus}\n' if gpus else ""
    path.write_text(f'''
name = "{name}"
node_pool = "{pool}"

[driver]
type = "raw_exec"
command = "sleep"
args = ["300"]

[model_repository]
path = "{repo}"
models = ["relu_onnx"]

[resources]
cpu = 100
memory = 64

[rollout]
min_healthy_time = "1s"
healthy_deadline = "60s"
progress_deadline = "90s"
{gpu}
{extra}
''')
    return path


def wait_for_text(log: Path, text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = log.read_text() if log.exists() else ""
        if text in content:
            return content
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in {log} after {timeout}s: {log.read_text() if log.exists() else ''}")


def stop_cli(proc: subprocess.Popen, timeout: float) -> int:
    """Wait for a background CLI to exit by itself within `timeout`; kill its group otherwise (and fail)."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=10)
        raise AssertionError(f"CLI did not exit within {timeout}s") from None


def kill_cli(proc: subprocess.Popen) -> None:
    """Cleanup after a failed assertion: kill the CLI's process group if it is still running."""
    if proc.poll() is None:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=10)


TINY_SERVER = (
    "import http.server, os\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        self.send_response(200); self.send_header('Content-Length', '0'); self.end_headers()\n"
    "    def log_message(self, *a): pass\n"
    "http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['NOMAD_PORT_http'])), H).serve_forever()\n"
)


def http_spec(tmp: Path, name: str, *, extra: str = "") -> Path:
    """A spec whose task is a tiny HTTP server answering 200 everywhere: healthy in about a second."""
    repo = model_repo(tmp)
    path = tmp / f"{name}.toml"
    path.write_text(f'''
name = "{name}"

[driver]
type = "raw_exec"
command = {json.dumps(sys.executable)}
args = ["-c", {json.dumps(TINY_SERVER)}]

[model_repository]
path = "{repo}"
models = ["relu_onnx"]

[resources]
cpu = 100
memory = 64

[rollout]
min_healthy_time = "2s"
healthy_deadline = "30s"
progress_deadline = "60s"
{extra}
''')
    return path
