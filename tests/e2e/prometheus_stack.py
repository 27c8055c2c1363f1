"""A real observability stack for the e2e tests: devcluster with the CPU example on real PyTriton,
the autoscaler running as a Nomad job (dry run, its /metrics registered as a service), `nomad-triton
sd`, and Debian's real `prometheus` binary scraping through http_sd with the generated config.

Prometheus runs on a free loopback port with its own config and data dir (never the packaged
systemd service). Everything started here is stopped by `Stack.close()`, process groups included.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from nomad_triton.devcluster import launcher
from nomad_triton.nomad.client import NomadClient
from nomad_triton.observe.autoscaler_job import autoscaler_job_hcl
from nomad_triton.observe.prometheus_config import prometheus_config
from nomad_triton.render import render_job
from nomad_triton.server.testing import free_ports
from nomad_triton.spec import load_spec
from tests.e2e.cli_helpers import BIN, ROOT, cli_env, start_cli, wait_for_text

JOB = "triton-cpu"
SCRAPE_S = 1.0
REFRESH_S = 10.0  # http_sd refresh; long, so one refresh is clearly told from two (discovery at start is immediate)
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def wait_for(fn: Any, timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class Stack:
    tmp: Path
    dc_state: Path | None = None
    dc_pid: int = 0
    addr: str = ""
    client: NomadClient | None = None
    sd: subprocess.Popen | None = None
    sd_url: str = ""
    prom: subprocess.Popen | None = None
    prom_url: str = ""
    load: subprocess.Popen | None = None
    groups: set[int] = field(default_factory=set)

    # ------------------------------------------------------------------ start
    def start(self) -> Stack:
        running = launcher.start(self.tmp / "dc" / "state", config=None, port=0, timeout_s=30)
        self.dc_state, self.dc_pid, self.addr = Path(running.state_dir), running.pid, running.addr
        self.client = NomadClient.from_env(address=self.addr)
        spec = load_spec(ROOT / "jobs" / "cpu-example.toml", sets=[f"driver.command={BIN / 'nomad-triton'}"])
        self.client.register(self.client.parse_hcl(render_job(spec)))
        wait_for(lambda: (self.client.latest_deployment(JOB) or {}).get("Status") == "successful", 180,
                 "the CPU example's first deployment")
        # The shipped example's generator (dry run: it records decisions, scales nothing).
        hcl = autoscaler_job_hcl(JOB, nomad_addr=self.addr, command=str(BIN / "nomad-triton"),
                                 extra_args=("--dry-run", "--interval", "1"))
        self.client.register(self.client.parse_hcl(hcl))
        wait_for(lambda: len(self.client.service("nomad-triton-autoscaler")) == 1, 60, "the autoscaler's service")
        sd_port, prom_port = free_ports(2)
        self.sd_url = f"http://127.0.0.1:{sd_port}/v1/targets"
        self.sd = start_cli(["sd", "--listen", f"127.0.0.1:{sd_port}", "--wait", "10"], self.addr, self.tmp / "sd.log")
        wait_for_text(self.tmp / "sd.log", "sd: serving", 30)
        cfg = prometheus_config("http", sd_url=self.sd_url, scrape_interval_s=SCRAPE_S, refresh_s=REFRESH_S)
        (self.tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.prom_url = f"http://127.0.0.1:{prom_port}"
        self.prom = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self.tmp / 'prometheus.yml'}", f"--storage.tsdb.path={self.tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
            stdout=open(self.tmp / "prometheus.log", "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
            start_new_session=True)
        wait_for(self._prom_ready, 60, "prometheus /-/ready")
        self.load = subprocess.Popen(
            [str(BIN / "python"), str(ROOT / "examples" / "loadgen.py"), "--nomad-job", JOB, "--refresh", "1",
             "--model", "mlp", "--phase", "900s@10", "--concurrency", "8", "--timeout", "5"],
            env=cli_env(self.addr), stdout=open(self.tmp / "loadgen.log", "w"),  # noqa: SIM115
            stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def _prom_ready(self) -> bool:
        try:
            return httpx.get(f"{self.prom_url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    # ------------------------------------------------------------------ queries
    def query(self, promql: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.prom_url}/api/v1/query", params={"query": promql}, timeout=10)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", f"{promql}: {r.status_code} {body}"
        return body["data"]["result"]

    def targets(self, scrape_job: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.prom_url}/api/v1/targets", params={"state": "active"}, timeout=10)
        return [t for t in r.json()["data"]["activeTargets"] if t["scrapePool"] == scrape_job]

    def triton_allocs(self) -> dict[str, str]:
        """Running Triton allocation ID -> node ID, from Nomad."""
        assert self.client is not None
        return {a["ID"]: a["NodeID"] for a in self.client.job_allocations(JOB)
                if a.get("ClientStatus") == "running" and a.get("DesiredStatus") == "run"}

    # ------------------------------------------------------------------ stop
    def close(self) -> list[str]:
        problems = []
        for proc in (self.load, self.prom, self.sd):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
                    problems.append(f"pid {proc.pid} ignored SIGTERM")
        if self.dc_state is not None:
            self.groups |= launcher.descendant_groups(self.dc_pid)
            result = launcher.stop(self.dc_state, timeout_s=30)
            if result is None or not result["graceful"] or result["killed_groups"]:
                problems.append(f"devcluster did not stop cleanly: {result}")
            left = launcher.live_groups(self.groups)
            if left:
                problems.append(f"process groups still alive: {sorted(left)}")
        return problems
