"""The autoscaling controller and `probe JOB` against a real devcluster running Triton stand-ins.

The Nomad side is real (devcluster: scale API, deployments, allocations as processes). Each
allocation runs tests/fixtures/fake_triton.py, which serves Triton's health routes and a metrics
page whose counters integrate a load this test sets, so the controller's whole path (discovery ->
probe -> policy -> POST /v1/job/:id/scale with Message/Meta) is exercised end to end in seconds.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from nomad_triton.autoscale.controller import Controller, ControllerSettings
from nomad_triton.autoscale.policy import ScalingPolicyConfig
from nomad_triton.cli import probe as probe_cli
from nomad_triton.nomad.client import NomadClient
from tests.e2e.conftest import Devcluster, wait_until

pytestmark = pytest.mark.e2e
FAKE = Path(__file__).resolve().parents[1] / "fixtures" / "fake_triton.py"


def job_hcl(job: str, load: Path, hb: Path) -> str:
    return f'''
job "{job}" {{
  datacenters = ["dc1"]
  type = "service"
  group "triton" {{
    count = 1
    network {{
      port "http" {{}}
      port "metrics" {{}}
    }}
    scaling {{
      min = 1
      max = 4
    }}
    update {{
      max_parallel     = 4
      min_healthy_time = "1s"
      healthy_deadline = "30s"
      progress_deadline = "60s"
    }}
    service {{
      name     = "{job}"
      port     = "http"
      provider = "nomad"
      check {{
        type     = "http"
        path     = "/v2/health/ready"
        interval = "1s"
        timeout  = "1s"
      }}
    }}
    task "server" {{
      driver = "raw_exec"
      config {{
        command = "{sys.executable}"
        args    = ["{FAKE}", "${{NOMAD_PORT_http}}", "${{NOMAD_PORT_metrics}}", "{load}", "{hb}"]
      }}
      resources {{
        cpu    = 100
        memory = 64
      }}
    }}
  }}
}}
'''


def _deployed(client: NomadClient, job: str) -> bool:
    dep = client.latest_deployment(job)
    return bool(dep) and dep.get("Status") == "successful"


async def _steps_until(ctl: Controller, cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            await ctl.step()
        except Exception:  # noqa: BLE001 - e.g. scaling blocked during a deployment; the loop goes on
            pass
        if cond():
            return
        await asyncio.sleep(ctl.settings.interval_s)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: "
                         f"{ctl.last_decision.reason if ctl.last_decision else None}")


def test_controller_scales_up_fast_and_down_with_events(devcluster: Devcluster, tmp_path: Path) -> None:
    load, hb = tmp_path / "load", tmp_path / "hb"
    load.write_text("0.3")
    client = NomadClient.from_env(address=devcluster.addr, token=devcluster.token)
    client.register(client.parse_hcl(job_hcl("fake", load, hb)))
    wait_until(lambda: _deployed(client, "fake"), 60, "first deployment successful")

    # `probe JOB` discovers the allocation through Nomad and reads it.
    app = typer.Typer()
    probe_cli.register(app)
    app.command("noop")(lambda: None)
    r = CliRunner().invoke(app, ["probe", "fake", "--address", devcluster.addr, "--interval", "0.3", "--json"],
                           env={"NOMAD_TOKEN": devcluster.token or ""})
    assert r.exit_code == 0, r.output
    assert '"ready": true' in r.stdout
    r = CliRunner().invoke(app, ["probe", "no-such-job", "--address", devcluster.addr],
                           env={"NOMAD_TOKEN": devcluster.token or ""})
    assert r.exit_code == 1 and "no-such-job" in r.output and "Traceback" not in r.output

    cfg = ScalingPolicyConfig(min_count=1, max_count=4, up_cooldown_s=1, down_cooldown_s=3,
                              down_stabilization_s=3, fast_hold_s=2, max_step_down=4)
    ctl = Controller(client, ControllerSettings(job="fake", group="triton", interval_s=0.5), cfg)

    def desired() -> int:
        return client.scale_status("fake")["TaskGroups"]["triton"]["Desired"]

    async def scenario() -> float:
        await _steps_until(ctl, lambda: ctl.last_decision is not None and ctl.last_decision.signals["demand"],
                           15, "rates from the allocation")
        assert desired() == 1
        load.write_text("2.5")  # 2.5 replicas of demand on 1 replica -> ceil(2.5/0.7)=4, capped at max 4
        t0 = time.monotonic()
        await _steps_until(ctl, lambda: desired() >= 2, 15, "scale-up")
        reacted = time.monotonic() - t0
        await _steps_until(ctl, lambda: desired() == 4, 60, "scale-up to max")
        load.write_text("0.2")
        await _steps_until(ctl, lambda: desired() == 1, 90, "scale-in to min")
        await ctl.aclose()
        return reacted

    reacted = asyncio.run(scenario())
    assert reacted <= 3.0, f"reacted in {reacted:.1f}s"
    events = client.scale_status("fake")["TaskGroups"]["triton"]["Events"]
    ours = [e for e in events if (e.get("Meta") or {}).get("nomad_triton.policy") == "nomad-triton"]
    directions = [e["Meta"]["nomad_triton.direction"] for e in ours]
    assert "up" in directions and "down" in directions, events
    up = next(e for e in ours if e["Meta"]["nomad_triton.direction"] == "up")
    assert up["Message"].startswith("nomad-triton: scale up") and up["Meta"]["nomad_triton.observations"]
    assert "load_ratio" in up["Meta"]["nomad_triton.signals"]
    assert ctl.metrics.scale_requests.labels(result="ok")._value.get() >= 2


def test_dry_run_records_events_without_count_and_errors_do_not_kill(devcluster: Devcluster, tmp_path: Path) -> None:
    load, hb = tmp_path / "load", tmp_path / "hb"
    load.write_text("3.0")
    client = NomadClient.from_env(address=devcluster.addr, token=devcluster.token)
    client.register(client.parse_hcl(job_hcl("dry", load, hb)))
    wait_until(lambda: _deployed(client, "dry"), 60, "deployment successful")
    cfg = ScalingPolicyConfig(min_count=1, max_count=4)
    ctl = Controller(client, ControllerSettings(job="dry", group="triton", interval_s=0.3, dry_run=True), cfg)
    failures = asyncio.run(ctl.run(deadline_s=4.0))
    assert failures == 0
    status = client.scale_status("dry")["TaskGroups"]["triton"]
    assert status["Desired"] == 1
    dry = [e for e in status["Events"] if e["Message"].startswith("dry-run: would scale up")]
    assert dry and dry[0].get("Count") in (None, 0) and dry[0]["Meta"]["nomad_triton.to"] >= 2

    missing = Controller(client, ControllerSettings(job="no-such-job", group="triton", interval_s=0.05), cfg)
    assert asyncio.run(missing.run(max_steps=3)) == 3  # every step failed, the loop survived all three
    assert missing.metrics.step_errors._value.get() == 3


def test_only_the_lock_holder_scales(devcluster: Devcluster, tmp_path: Path) -> None:
    from nomad_triton.autoscale.lock import LeaderLock, lock_path

    load, hb = tmp_path / "load", tmp_path / "hb"
    load.write_text("3.0")
    client = NomadClient.from_env(address=devcluster.addr, token=devcluster.token)
    client.register(client.parse_hcl(job_hcl("ha", load, hb)))
    wait_until(lambda: _deployed(client, "ha"), 60, "deployment successful")
    other = LeaderLock(client, lock_path("ha", "triton"), ttl_s=10)
    assert other.ensure() and other.held
    cfg = ScalingPolicyConfig(min_count=1, max_count=4)
    standby = Controller(client, ControllerSettings(job="ha", group="triton", interval_s=0.3), cfg,
                         lock=LeaderLock(client, lock_path("ha", "triton"), ttl_s=10))
    assert asyncio.run(standby.run(deadline_s=2.5)) == 0
    assert standby.leading is False and standby.last_decision is None  # never stepped while standby
    assert client.scale_status("ha")["TaskGroups"]["triton"]["Desired"] == 1
    other.release()
    leader = Controller(client, ControllerSettings(job="ha", group="triton", interval_s=0.3), cfg,
                        lock=LeaderLock(client, lock_path("ha", "triton"), ttl_s=10))
    assert asyncio.run(leader.run(deadline_s=4.0)) == 0
    assert leader.leading is True
    assert client.scale_status("ha")["TaskGroups"]["triton"]["Desired"] >= 2
    again = LeaderLock(client, lock_path("ha", "triton"), ttl_s=10)
    assert again.ensure()  # run() released the lock on exit
    again.release()


def test_autoscale_run_cli_serves_metrics_and_stops_on_sigterm(devcluster: Devcluster, tmp_path: Path) -> None:
    import os
    import signal

    import httpx

    from nomad_triton.server.testing import free_ports
    from tests.e2e.cli_helpers import kill_cli, start_cli, stop_cli, wait_for_text

    load, hb = tmp_path / "load", tmp_path / "hb"
    load.write_text("3.0")
    client = NomadClient.from_env(address=devcluster.addr, token=devcluster.token)
    client.register(client.parse_hcl(job_hcl("clijob", load, hb)))
    wait_until(lambda: _deployed(client, "clijob"), 60, "deployment successful")
    (port,) = free_ports(1)
    log = tmp_path / "autoscale.log"
    proc = start_cli(["autoscale", "run", "clijob", "--group", "triton", "--interval", "0.5",
                      "--metrics-port", str(port), "--json"], devcluster.addr, log)
    try:
        wait_for_text(log, '"event": "scaled"', 30)
        page = wait_until(lambda: _get(httpx, f"http://127.0.0.1:{port}/metrics"), 10, "controller /metrics")
        assert 'nomad_triton_autoscaler_scale_requests_total{result="ok"}' in page
        assert "nomad_triton_autoscaler_desired_count" in page
        os.killpg(proc.pid, signal.SIGTERM)
        assert stop_cli(proc, 15) == 0
    finally:
        kill_cli(proc)
    out = log.read_text()
    assert '"failed_steps": 0' in out and client.scale_status("clijob")["TaskGroups"]["triton"]["Desired"] >= 2


def _get(httpx_mod, url: str) -> str | None:  # type: ignore[no-untyped-def]
    try:
        r = httpx_mod.get(url, timeout=1)
        return r.text if r.status_code == 200 else None
    except httpx_mod.HTTPError:
        return None
