"""P1: how fast does `nomad-triton deploy` notice the end of a deployment, and how hard does it poll?

Runs >= 20 deploys of one spec (a new version each round) through the real CLI process against a
devcluster on 127.0.0.1, and measures per round:
- latency from the deployment's end (its final ModifyTime, the server's wall clock when it wrote
  Status=successful) to the CLI process exit;  target p95 <= 100 ms;
- Nomad requests per second made by the CLI while waiting (counted in the client facade and
  reported in `deploy --json`);  target <= 1 req/s;
- side by side, a naive follower polling GET /v1/job/:id/deployment once a second (what a simple
  deploy script does), for the latency ratio.

The task is a tiny raw_exec HTTP server answering 200 on every path (so Triton's health checks
pass in milliseconds): this isolates the CLI's waiting from Triton's cold start, which is bench P6's
subject. Everything binds 127.0.0.1; devcluster and its tasks are stopped at the end.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nomad_triton.devcluster import launcher  # noqa: E402

ROUNDS = 20
CLI = [sys.executable, "-m", "nomad_triton.cli.main"]
SERVER = (
    "import http.server, os\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        self.send_response(200); self.send_header('Content-Length', '0'); self.end_headers()\n"
    "    def log_message(self, *a): pass\n"
    "http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['NOMAD_PORT_http'])), H).serve_forever()\n"
)


def write_spec(tmp: Path) -> Path:
    (tmp / "models" / "m").mkdir(parents=True, exist_ok=True)
    spec = tmp / "p1.toml"
    spec.write_text(f"""
name = "p1-latency"

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
min_healthy_time = "3s"
healthy_deadline = "30s"
progress_deadline = "60s"

[health]
interval = "1s"
timeout = "1s"
""")
    return spec


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[k]


class Poller(threading.Thread):
    """Baseline: poll the job's latest deployment once a second; note when a new one is successful."""

    def __init__(self, addr: str, job: str, previous: str | None) -> None:
        super().__init__(daemon=True)
        self.addr, self.job, self.previous = addr, job, previous
        self.seen_at: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.addr, timeout=5) as http:
            while not self.stop.is_set():
                try:
                    dep = http.get(f"/v1/job/{self.job}/deployment").json()
                except httpx.HTTPError:
                    dep = None
                if dep and dep["ID"] != self.previous and dep["Status"] == "successful":
                    self.seen_at = time.time()
                    return
                self.stop.wait(1.0)


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="p1-"))
    spec = write_spec(tmp)
    running = launcher.start(tmp / "dc", port=0, timeout_s=30)
    env = {"NOMAD_ADDR": running.addr, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    cli_lat, notice_lat, poll_lat, rates, waits, reqs = [], [], [], [], [], []
    previous: str | None = None
    try:
        for i in range(ROUNDS):
            poller = Poller(running.addr, "p1-latency", previous)
            poller.start()
            proc = subprocess.run(
                CLI + ["deploy", str(spec), "--set", f"env.ROUND=r{i}", "--timeout", "60s", "--json"],
                env=env, capture_output=True, text=True, timeout=120,
            )
            t_exit = time.time()
            if proc.returncode != 0:
                print(f"round {i}: deploy exited {proc.returncode}: {proc.stdout[-500:]} {proc.stderr[-500:]}")
                return 1
            out = json.loads(proc.stdout)
            dep_id = out["deployment"]["id"]
            dep = httpx.get(f"{running.addr}/v1/deployment/{dep_id}", timeout=5).json()
            ended = dep["ModifyTime"] / 1e9
            poller.join(timeout=5)
            poller.stop.set()
            cli_lat.append((t_exit - ended) * 1000)
            notice_lat.append((out["observed_end_at"] - ended) * 1000)
            reqs.append(out["requests_while_waiting"])
            if poller.seen_at:
                poll_lat.append((poller.seen_at - ended) * 1000)
            waits.append(out["waited_s"])
            rates.append(out["requests_while_waiting"] / max(out["waited_s"], 1e-3))
            previous = dep_id
    finally:
        launcher.stop(tmp / "dc", timeout_s=20)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"deploys: {ROUNDS} (each a new job version, followed to 'successful'; wait median "
          f"{statistics.median(waits):.2f} s)")
    print(f"deployment end -> CLI exit: p50 {percentile(cli_lat, 0.5):.1f} ms, p95 {percentile(cli_lat, 0.95):.1f} ms, "
          f"max {max(cli_lat):.1f} ms  (target p95 <= 100 ms: {'OK' if percentile(cli_lat, 0.95) <= 100 else 'MISSED'})")
    print(f"  of which noticing the end (event stream): p50 {percentile(notice_lat, 0.5):.1f} ms, "
          f"p95 {percentile(notice_lat, 0.95):.1f} ms; the rest is printing the report and process exit")
    print(f"CLI requests while waiting: {statistics.mean(reqs):.1f} per deploy; mean "
          f"{statistics.mean(rates):.2f} req/s, max {max(rates):.2f} req/s  (target <= 1 req/s: "
          f"{'OK' if max(rates) <= 1 else 'MISSED'})")
    if poll_lat:
        print(f"baseline 1 Hz poller: p50 {percentile(poll_lat, 0.5):.1f} ms, p95 {percentile(poll_lat, 0.95):.1f} ms "
              f"at 1 req/s")
        print(f"ratio p50 poller/CLI notice latency: {percentile(poll_lat, 0.5) / max(percentile(cli_lat, 0.5), 1e-3):.1f}x "
              "(CLI figure includes process exit; poller figure is only the notice)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
