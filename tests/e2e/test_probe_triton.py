"""Probe a real PyTriton server (examples/models/mlp via `python -m nomad_triton.server`) and dead ports."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from nomad_triton.autoscale.trace import read_observations
from nomad_triton.cli import probe as probe_cli
from nomad_triton.probe.observations import Endpoint, ProbeState
from nomad_triton.probe.triton import Prober
from nomad_triton.server.testing import ServerProcess, free_ports

pytestmark = pytest.mark.e2e
MLP = Path(__file__).resolve().parents[2] / "examples" / "models" / "mlp"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("repo")
    shutil.copytree(MLP, repo / "mlp")
    srv = ServerProcess(repo, tmp_path_factory.mktemp("log") / "serve.log")
    with srv:
        srv.wait_ready(90)
        yield srv


def _endpoint(srv: ServerProcess, models: tuple[str, ...] = ("mlp",)) -> Endpoint:
    return Endpoint(alloc_id="alloc-1", http=srv.http_url, metrics=f"127.0.0.1:{srv.metrics_port}", models=models)


def _infer(srv: ServerProcess, n: int) -> None:
    body = {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]}
    with httpx.Client(timeout=10) as c:
        for _ in range(n):
            r = c.post(f"http://{srv.http_url}/v2/models/mlp/infer", json=body)
            assert r.status_code == 200, r.text


def test_probe_reports_health_readiness_and_rates(server: ServerProcess) -> None:
    async def run() -> tuple:
        async with Prober(timeout_s=2.0) as p:
            first = await p.probe(_endpoint(server, ("mlp", "nope")))
            _infer(server, 30)
            await asyncio.sleep(0.2)
            second = await p.probe(_endpoint(server, ("mlp", "nope")))
            return first, second

    first, second = asyncio.run(run())
    assert first.state is ProbeState.REACHABLE and first.live and first.ready and first.metrics_ok
    assert first.models["mlp"].ready is True and first.models["mlp"].success_per_s is None  # no rate yet
    assert first.models["nope"].ready is False  # Triton answers 400 for an unknown model
    m = second.models["mlp"]
    assert second.has_rates() is False  # "nope" has no metrics -> not all models have rates
    assert m.success_per_s is not None and m.success_per_s > 0
    assert m.compute_infer_us_per_s is not None and m.compute_infer_us_per_s > 0
    assert m.avg_latency_us is not None and m.avg_latency_us > 0
    assert m.pending == 0 and m.reset is False
    assert second.gpu_utilization is None  # CPU-only machine: no nv_gpu_* series, not a crash


def test_dead_and_hung_endpoints_are_unreachable_quickly(server: ServerProcess) -> None:
    (dead_port,) = free_ports(1)
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)  # accepts connections (kernel backlog) but never answers
    try:
        eps = [
            _endpoint(server),
            Endpoint("dead", f"127.0.0.1:{dead_port}", f"127.0.0.1:{dead_port}", ("mlp",)),
            Endpoint("hung", f"127.0.0.1:{hung.getsockname()[1]}", None, ("mlp",)),
        ]

        async def run() -> tuple:
            async with Prober(timeout_s=0.5) as p:
                t0 = time.monotonic()
                res = await p.probe_all(eps)
                return res, time.monotonic() - t0

        (ok, dead, hung_obs), elapsed = asyncio.run(run())
    finally:
        hung.close()
    assert ok.state is ProbeState.REACHABLE and ok.ready
    assert dead.state is ProbeState.UNREACHABLE and dead.error and dead.probe_ms is not None and dead.probe_ms < 300
    assert hung_obs.state is ProbeState.UNREACHABLE and hung_obs.error and hung_obs.error.startswith("timeout")
    assert elapsed < 1.5  # the hung endpoint costs one deadline, concurrently, never a stall


def test_probe_cli_json_and_record(server: ServerProcess, tmp_path: Path) -> None:
    app = typer.Typer()
    probe_cli.register(app)
    app.command("noop")(lambda: None)  # keep `probe` a named subcommand
    ep = f"a1={server.http_url},127.0.0.1:{server.metrics_port}"
    r = CliRunner().invoke(app, ["probe", "--endpoint", ep, "--model", "mlp", "--interval", "0.2", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["allocations"][0]["state"] == "reachable" and data["allocations"][0]["ready"] is True

    rec = tmp_path / "trace.jsonl"
    r = CliRunner().invoke(app, ["probe", "--endpoint", ep, "--record", str(rec), "--duration", "1.2",
                                 "--interval", "0.3", "--json"])
    assert r.exit_code == 0, r.output
    obs = read_observations(rec)
    assert len(obs) >= 3 and all(o.alloc_id == "a1" for o in obs)
    assert obs[-1].models["mlp"].success_per_s is not None

    (dead,) = free_ports(1)
    r = CliRunner().invoke(app, ["probe", "--endpoint", f"x=127.0.0.1:{dead}", "--interval", "0.1", "--json"])
    assert r.exit_code == 1
    r = CliRunner().invoke(app, ["probe", "--endpoint", "garbage"])
    assert r.exit_code == 2
