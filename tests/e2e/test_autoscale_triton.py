"""Autoscaling end to end on devcluster with real PyTriton: load in, replicas out, and back.

Each allocation is a raw_exec `nomad-triton serve` (real tritonserver on CPU) of the sleepy test
model (tests/fixtures/models/sleepy: 25 ms sleep per request, batch 1, one instance), so one
replica saturates at ~35 requests/s while the 2-core host stays idle. Load comes from
examples/loadgen.py (open loop, tritonclient), which follows the job's allocations through Nomad.
The controller reads Triton's own /metrics and acts through Nomad's scale API; nothing is faked.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from nomad_triton.autoscale.controller import Controller, ControllerSettings
from nomad_triton.autoscale.policy import Decision, ScalingPolicyConfig
from nomad_triton.cli import probe as probe_cli
from nomad_triton.nomad.client import NomadClient
from nomad_triton.render import render_job
from nomad_triton.server.testing import descendants, free_ports
from nomad_triton.spec import load_spec
from tests.e2e.cli_helpers import BIN, ROOT, cli_env, kill_cli, start_cli, stop_cli, wait_for_text
from tests.e2e.conftest import Devcluster, wait_until

pytestmark = pytest.mark.e2e
MODELS = ROOT / "tests" / "fixtures" / "models"
LOADGEN = ROOT / "examples" / "loadgen.py"
# requests/s: ~0.95 replicas of busy time (29 ms each). One replica at 0.95 > 0.7 target -> 2; two
# replicas at ~0.47 each stay (1 would be over target). With one of two replicas down, the survivor
# alone shows ~0.47, well under the 0.63 scale-in line: exactly what must not be read as low load.
RATE = 32


def write_spec(tmp: Path, name: str) -> Path:
    """A sleepy-model Triton job with a fast policy (short cooldowns) and quick in-place restarts."""
    path = tmp / f"{name}.toml"
    path.write_text(f'''
name = "{name}"
count = 1
[driver]
type = "raw_exec"
command = "{BIN / 'nomad-triton'}"
[model_repository]
path = "{MODELS}"
models = ["sleepy"]
[resources]
cpu = 100
memory = 256
[rollout]
max_parallel = 3
min_healthy_time = "1s"
healthy_deadline = "60s"
progress_deadline = "90s"
[health]
interval = "1s"
timeout = "1s"
[restart]
attempts = 2
delay = "3s"
mode = "delay"
[scaling]
enabled = true
min = 1
max = 3
[scaling.policy]
evaluation_interval = "500ms"
cooldown_up = "1s"
cooldown_down = "3s"
scale_down_stabilization = "3s"
fast_hold = "2s"
[env]
OMP_NUM_THREADS = "1"
''')
    return path


def deploy(dc: Devcluster, spec_path: Path) -> NomadClient:
    client = NomadClient.from_env(address=dc.addr, token=dc.token)
    spec = load_spec(spec_path)
    client.register(client.parse_hcl(render_job(spec)))
    wait_until(lambda: _settled(client, spec.name), 120, f"{spec.name}: first deployment successful", 0.5)
    return client


def _settled(client: NomadClient, job: str) -> bool:
    dep = client.latest_deployment(job)
    return bool(dep) and dep.get("Status") == "successful"


def desired(client: NomadClient, job: str) -> int:
    return int(client.scale_status(job)["TaskGroups"]["triton"]["Desired"])


def healthy(client: NomadClient, job: str) -> int:
    return int(client.scale_status(job)["TaskGroups"]["triton"]["Healthy"] or 0)


def start_loadgen(dc: Devcluster, job: str, log: Path, rate: int = RATE) -> subprocess.Popen:
    """examples/loadgen.py following JOB's allocations through Nomad; runs until SIGTERM (<= 10 min)."""
    fh = open(log, "w")  # noqa: SIM115 - closed when the process ends
    return subprocess.Popen(
        [sys.executable, str(LOADGEN), "--nomad-job", job, "--refresh", "1", "--model", "sleepy",
         "--phase", f"600s@{rate}", "--concurrency", "24", "--timeout", "5", "--json"],
        env=cli_env(dc.addr, dc.token), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, text=True)


def stop_loadgen(proc: subprocess.Popen, log: Path) -> dict[str, Any]:
    """SIGTERM ends the phase early; the loadgen prints its report and exits 0."""
    os.killpg(proc.pid, signal.SIGTERM)
    assert stop_cli(proc, 20) == 0, log.read_text()
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    phases = [x for x in lines if "event" not in x and "summary" not in x]
    return {"phase": phases[0], "summary": lines[-1]}


class Recorder(Controller):
    """The real controller, keeping every decision with its wall-clock time for the assertions."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.decisions: list[tuple[float, Decision]] = []

    async def step(self) -> Decision:
        d = await super().step()
        self.decisions.append((time.time(), d))
        return d


class Background:
    """Runs a controller's loop in a thread with its own event loop until close()."""

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self.failures: int | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        assert self._ready.wait(5)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        self.failures = await self.ctl.run(self._stop)

    def close(self) -> int:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)
        assert not self._thread.is_alive(), "controller loop did not stop"
        assert self.failures is not None
        return self.failures


def alloc_group(dc: Devcluster, alloc_id: str) -> int:
    """Process group of the allocation's task (raw_exec: one session per task, pid = pgid)."""
    for pid in descendants(dc.pid):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if f"NOMAD_ALLOC_ID={alloc_id}".encode() in env and os.getpgid(pid) == pid:
                return pid
        except (OSError, ProcessLookupError):
            continue
    raise AssertionError(f"no task process found for allocation {alloc_id}")


def ours(client: NomadClient, job: str) -> list[dict[str, Any]]:
    events = client.scale_status(job)["TaskGroups"]["triton"]["Events"] or []
    mine = [e for e in events if (e.get("Meta") or {}).get("nomad_triton.policy") == "nomad-triton"
            and e["Message"].startswith("nomad-triton: ")]  # not the dry-run records
    return sorted(mine, key=lambda e: e["Time"])  # Nomad lists the newest first


def test_scales_out_under_load_holds_through_a_crash_and_returns_to_min(devcluster: Devcluster, tmp_path: Path) -> None:
    job = "sleepy"
    spec_path = write_spec(tmp_path, job)
    client = deploy(devcluster, spec_path)
    cfg = ScalingPolicyConfig.from_spec(load_spec(spec_path).scaling)
    settings = ControllerSettings(job=job, group="triton", models=("sleepy",), interval_s=0.5)
    log = tmp_path / "loadgen.log"
    load = start_loadgen(devcluster, job, log)
    try:
        # Dry run under load: a record-only scaling event (no Count) explains what it would do.
        dry = Controller(client, replace(settings, dry_run=True), cfg)
        assert asyncio.run(dry.run(deadline_s=6.0)) == 0
        status = client.scale_status(job)["TaskGroups"]["triton"]
        would = [e for e in status["Events"] if e["Message"].startswith("dry-run: would scale up")]
        assert status["Desired"] == 1 and would, status["Events"]
        assert would[0].get("Count") in (None, 0) and would[0]["Meta"]["nomad_triton.to"] >= 2

        ctl = Recorder(client, settings, cfg)
        bg = Background(ctl)
        try:
            t0 = time.time()
            wait_until(lambda: desired(client, job) >= 2, 20, "scale-up under load", 0.2)
            reacted = time.time() - t0
            # Settle: the new replicas are healthy and no deployment is running.
            wait_until(lambda: _settled(client, job) and healthy(client, job) == desired(client, job), 90,
                       "scaled-up replicas healthy", 0.5)
            # Steady state first: the policy itself holds on complete data for longer than the scale-in
            # stabilisation window (an overshoot to 3 at the step is trimmed back before), so anything
            # that follows the crash is the crash's doing.
            n = _steady(ctl, client, job, 4.0, 60)
            assert n >= 2
            up = next(e for e in ours(client, job) if e["Meta"]["nomad_triton.direction"] == "up")
            assert up["Message"].startswith("nomad-triton: scale up 1 -> ") and up["Count"] >= 2, up
            assert up["Meta"]["nomad_triton.observations"][0]["busy"] > 0.5, up["Meta"]
            assert up["Meta"]["nomad_triton.signals"]["load_ratio"] > 1.0, up["Meta"]

            # Crash one replica (SIGKILL its process group) while the load goes on. The loadgen still
            # sends it a share of the requests (which fail), so the survivors see less load: a
            # controller that counted it as idle would scale in. Ours must hold until it is back.
            victim = sorted(a["ID"] for a in client.job_allocations(job)
                            if a["DesiredStatus"] == "run" and a["ClientStatus"] == "running")[0]
            killed_at = time.time()
            os.killpg(alloc_group(devcluster, victim), signal.SIGKILL)

            def back() -> bool:
                last = ctl.decisions[-1][1] if ctl.decisions else None
                return bool(last and last.signals["allocs_with_data"] == desired(client, job)
                            and last.signals["allocs_unreachable"] == 0 and last.signals["allocs_no_data"] == 0)

            wait_until(lambda: time.time() - killed_at > 2 and back(), 60, "crashed replica restarted and measured", 0.5)
            recovered_at = time.time()
            outage = [d for t, d in ctl.decisions if killed_at < t < recovered_at]
            assert any(d.signals["allocs_unreachable"] or d.signals["allocs_no_data"] for d in outage), \
                "the controller never saw the crashed allocation missing"
            assert not [d for d in outage if d.direction == "down"], [d.reason for d in outage]
            # Nor just after it is back (its warm-up rate is low): the count never goes below the
            # pre-crash count while the load is unchanged. (The restarted replica's warm-up queue can
            # nudge one replica up, which is then trimmed back to n: allowed, it is not a scale-in.)
            time.sleep(4)
            below = [e for e in ours(client, job) if e["Time"] / 1e9 > killed_at and e["Count"] < n]
            assert not below, "\n".join(f"{t - killed_at:6.1f} {d.direction} {d.reason}" for t, d in ctl.decisions[-40:])
            assert desired(client, job) >= n
            # It did want to scale in on the survivors' load, and the missing replica is what held it.
            blocked = [d.reason for d in outage if d.reason.startswith("scale-in blocked")]
            assert any("unreachable" in r or "without metrics" in r or "starting" in r for r in blocked), \
                [d.reason for d in outage]

            # Load stops: back to min.
            report = stop_loadgen(load, log)
            wait_until(lambda: desired(client, job) == 1, 60, "scale-in to min after the load stopped", 0.5)
        finally:
            failures = bg.close()
    finally:
        kill_cli(load)
    assert failures == 0
    assert reacted <= 3.0, f"scale-up took {reacted:.1f}s"
    down = [e for e in ours(client, job) if e["Meta"]["nomad_triton.direction"] == "down"]
    assert down and down[-1]["Count"] == 1 and down[-1]["Message"].startswith("nomad-triton: scale down"), down
    assert ctl.metrics.scale_requests.labels(result="ok")._value.get() >= 2
    assert report["phase"]["ok"] > 0 and report["phase"]["achieved_rps"] > RATE / 2, report
    print(f"reacted {reacted:.2f}s, scaled to {n}, outage decisions {len(outage)} ({len(blocked)} blocked scale-in,"
          f" e.g. {blocked[0]!r})")


def _steady(ctl: Recorder, client: NomadClient, job: str, hold_s: float, timeout: float) -> int:
    """The count once every decision of the last `hold_s` was "within band" on data from all replicas."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        n = desired(client, job)
        recent = [d for t, d in list(ctl.decisions) if t > time.time() - hold_s]
        if (len(recent) >= hold_s / ctl.settings.interval_s - 2 and _settled(client, job)
                and all(d.reason.startswith("within band") and d.signals["desired"] == n
                        and d.signals["allocs_with_data"] == n for d in recent)):
            return n
    raise AssertionError(f"no steady state within {timeout}s; last decisions: "
                         f"{[d.reason for _, d in list(ctl.decisions)[-5:]]}")


def test_missing_job_steps_fail_but_the_loop_survives(devcluster: Devcluster) -> None:
    client = NomadClient.from_env(address=devcluster.addr, token=devcluster.token)
    missing = Controller(client, ControllerSettings(job="no-such-job", group="triton", interval_s=0.05),
                         ScalingPolicyConfig(min_count=1, max_count=4))
    assert asyncio.run(missing.run(max_steps=3)) == 3  # every step failed, the loop survived all three
    assert missing.metrics.step_errors._value.get() == 3


def test_two_ha_replicas_only_the_holder_scales_and_the_standby_takes_over(
        devcluster: Devcluster, tmp_path: Path) -> None:
    job = "sleepy-ha"
    spec_path = write_spec(tmp_path, job)
    client = deploy(devcluster, spec_path)
    _probe_cli_finds_the_job(devcluster, job)
    ports = free_ports(2)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs: list[subprocess.Popen] = []
    load_log = tmp_path / "loadgen.log"
    load = None

    def cli(i: int) -> subprocess.Popen:
        return start_cli(["autoscale", "run", job, "--spec", str(spec_path), "--interval", "0.5", "--ha",
                          "--lock-ttl", "10", "--metrics-port", str(ports[i]), "--json"], devcluster.addr, logs[i])

    try:
        procs.append(cli(0))
        wait_for_text(logs[0], '"event": "leader"', 30)
        procs.append(cli(1))
        wait_for_text(logs[1], '"event": "standby"', 30)
        load = start_loadgen(devcluster, job, load_log)
        wait_for_text(logs[0], '"event": "scaled"', 30)
        wait_until(lambda: desired(client, job) >= 2, 10, "scale-up by the leader")
        a, b = _metrics(ports[0]), _metrics(ports[1])
        assert a["nomad_triton_autoscaler_leader"] == 1 and a['scale_requests_total{result="ok"}'] >= 1, a
        assert b["nomad_triton_autoscaler_leader"] == 0 and b.get('scale_requests_total{result="ok"}', 0) == 0, b
        assert '"event": "scaled"' not in logs[1].read_text()

        # The holder crashes without releasing the lock: the standby leads within the TTL.
        wait_until(lambda: _settled(client, job), 90, "scale-up deployment finished", 0.5)
        crashed = time.monotonic()
        kill_cli(procs[0])
        wait_for_text(logs[1], '"event": "leader"', 10 + 5)
        took_over = time.monotonic() - crashed
        assert took_over <= 10 + 2, f"standby took {took_over:.1f}s"

        # It acts: load stops, and the new leader scales the group back in to min.
        stop_loadgen(load, load_log)
        wait_until(lambda: desired(client, job) == 1, 60, "scale-in by the new leader", 0.5)
        b = _metrics(ports[1])
        assert b["nomad_triton_autoscaler_leader"] == 1 and b['scale_requests_total{result="ok"}'] >= 1, b
        # SIGTERM: the controller stops cleanly, releases the lock and exits 0 with a summary.
        os.killpg(procs[1].pid, signal.SIGTERM)
        assert stop_cli(procs[1], 15) == 0
    finally:
        for p in procs:
            kill_cli(p)
        if load is not None:
            kill_cli(load)
    text = logs[1].read_text()
    summary = json.loads(text[text.rindex("\n{") + 1:])  # the exit summary (indented JSON) comes last
    assert summary["failed_steps"] == 0 and summary["desired"] == 1, summary
    down = [e for e in ours(client, job) if e["Meta"]["nomad_triton.direction"] == "down"]
    assert down and down[-1]["Count"] == 1, down
    print(f"standby took over {took_over:.1f}s after the leader crashed")


def _probe_cli_finds_the_job(dc: Devcluster, job: str) -> None:
    """`probe JOB` discovers the allocation through Nomad and reads the real server; unknown job: exit 1."""
    app = typer.Typer()
    probe_cli.register(app)
    app.command("noop")(lambda: None)
    env = {"NOMAD_TOKEN": dc.token or ""}
    r = CliRunner().invoke(app, ["probe", job, "--address", dc.addr, "--model", "sleepy", "--interval", "0.3",
                                 "--json"], env=env)
    assert r.exit_code == 0, r.output
    assert '"ready": true' in r.stdout and '"sleepy"' in r.stdout, r.stdout
    r = CliRunner().invoke(app, ["probe", "no-such-job", "--address", dc.addr], env=env)
    assert r.exit_code == 1 and "no-such-job" in r.output and "Traceback" not in r.output


def _metrics(port: int) -> dict[str, float]:
    """The controller's own /metrics as {name-without-prefix-or-full: value} for the few we check."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        out[name.removeprefix("nomad_triton_autoscaler_")] = float(value)
        out[name] = float(value)
    return out
