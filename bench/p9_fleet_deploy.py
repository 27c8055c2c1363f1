"""P9: `fleet deploy` of 6 jobs in 3 stages vs the same 6 jobs deployed one after another with `deploy`.

Both rollouts run in this one process's run, against one devcluster on 127.0.0.1, each deploying a
new version of all six jobs (env RELEASE changes), and are measured the same way:
- wall time from the first command's start to the last command's exit (the CLI processes
  included: six `deploy` processes against one `fleet deploy` process);
- requests to Nomad, counted by a loopback TCP proxy in front of devcluster that counts HTTP
  request lines (every client request, event streams and blocking queries included), so neither
  side's own bookkeeping is trusted.
Stages have no gates (no verify, no soak) so the comparison is the rollout itself; the tasks are
tiny HTTP servers (healthy in about a second) so Triton's cold start (P6) does not drown it.
The run alternates sequential and fleet rounds (ROUNDS each) and prints medians and ratios.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nomad_triton.devcluster import launcher  # noqa: E402

ROUNDS = 2
JOBS = [f"p9-{i}" for i in range(6)]
CLI = [sys.executable, "-m", "nomad_triton.cli.main"]
SERVER = (
    "import http.server, os\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        self.send_response(200); self.send_header('Content-Length', '0'); self.end_headers()\n"
    "    def log_message(self, *a): pass\n"
    "http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['NOMAD_PORT_http'])), H).serve_forever()\n"
)
REQUEST_LINE = re.compile(rb"(?:GET|POST|PUT|DELETE|HEAD) /v1/")


class CountingProxy:
    """A loopback TCP proxy that counts HTTP request lines going to Nomad."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.count = 0
        self._lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        tail = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if count:
                    window = tail + data
                    n = sum(1 for m in REQUEST_LINE.finditer(window) if m.end() > len(tail))
                    tail = window[-16:]
                    if n:
                        with self._lock:
                            self.count += n
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def take(self) -> int:
        with self._lock:
            n, self.count = self.count, 0
        return n

    def close(self) -> None:
        self.sock.close()


def write_specs(tmp: Path) -> Path:
    (tmp / "models" / "m").mkdir(parents=True, exist_ok=True)
    for name in JOBS:
        (tmp / f"{name}.toml").write_text(f"""
name = "{name}"

[driver]
type = "raw_exec"
command = {json.dumps(sys.executable)}
args = ["-c", {json.dumps(SERVER)}]

[model_repository]
path = {json.dumps(str(tmp / "models"))}
models = ["m"]

[resources]
cpu = 100
memory = 64

[rollout]
min_healthy_time = "1s"
healthy_deadline = "30s"
progress_deadline = "60s"

[health]
interval = "1s"
timeout = "1s"
""")
    return tmp


def fleet_file(tmp: Path, release: str) -> Path:
    stages = []
    for s in range(3):
        entries = ", ".join(
            f'{{ spec = "{name}.toml", set = ["env.RELEASE={release}"] }}' for name in JOBS[2 * s: 2 * s + 2]
        )
        stages.append(f'[[stages]]\nname = "stage-{s + 1}"\nspecs = [{entries}]\n')
    path = tmp / f"fleet-{release}.toml"
    path.write_text('name = "p9"\ntimeout = "2m"\n\n' + "\n".join(stages))
    return path


def run(args: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(CLI + args, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"p9: {' '.join(args)} exited {proc.returncode}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")


def sequential(tmp: Path, env: dict[str, str], release: str) -> float:
    t0 = time.monotonic()
    for name in JOBS:
        run(["deploy", str(tmp / f"{name}.toml"), "--set", f"env.RELEASE={release}", "--timeout", "2m"], env)
    return time.monotonic() - t0


def fleet(tmp: Path, env: dict[str, str], release: str) -> float:
    path = fleet_file(tmp, release)
    t0 = time.monotonic()
    run(["fleet", "deploy", str(path), "--json"], env)
    return time.monotonic() - t0


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="p9-"))
    running = launcher.start(tmp / "state", config=None, port=0, timeout_s=30)
    proxy = CountingProxy(running.port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOMAD_")}
    env["NOMAD_ADDR"] = f"http://127.0.0.1:{proxy.port}"
    try:
        write_specs(tmp)
        fleet(tmp, env, "warmup")  # first registration of every job: not measured
        proxy.take()
        seq_s, seq_req, fl_s, fl_req = [], [], [], []
        for r in range(ROUNDS):
            seq_s.append(sequential(tmp, env, f"seq-{r}"))
            seq_req.append(proxy.take())
            fl_s.append(fleet(tmp, env, f"fleet-{r}"))
            fl_req.append(proxy.take())
            print(f"round {r + 1}: sequential deploy {seq_s[-1]:6.1f} s {seq_req[-1]:4d} requests | "
                  f"fleet deploy {fl_s[-1]:6.1f} s {fl_req[-1]:4d} requests", flush=True)
        ms, mf = statistics.median(seq_s), statistics.median(fl_s)
        rs, rf = statistics.median(seq_req), statistics.median(fl_req)
        print(f"6 jobs, 3 stages of 2, {ROUNDS} rounds each (medians):")
        print(f"  wall time: sequential {ms:.1f} s, fleet {mf:.1f} s  -> fleet/sequential = {mf / ms:.2f}x")
        print(f"  requests to Nomad: sequential {rs:.0f}, fleet {rf:.0f}  -> fleet/sequential = {rf / rs:.2f}x")
    finally:
        proxy.close()
        launcher.stop(Path(running.state_dir), timeout_s=20)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
