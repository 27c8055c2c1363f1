"""kill -9 devcluster while `nomad-triton deploy` rolls out the real CPU example (PyTriton).

What an operator sees: the deploy command loses Nomad for a moment, devcluster comes back on the
same address and state dir, re-attaches to the running `nomad-triton serve` (same allocation, same
process, tritonserver still answering), the deployment finishes and `deploy` says so (exit 0).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from nomad_triton.devcluster import launcher
from nomad_triton.server.procs import alive, descendants, process_name
from nomad_triton.server.testing import free_ports
from tests.e2e.cli_helpers import BIN, CLI, ROOT, cli_env, kill_cli
from tests.e2e.conftest import wait_until
from tests.e2e.crash_helpers import Crashable, latest_deployment, running_allocs, task_handle

pytestmark = pytest.mark.e2e


def test_deploy_of_cpu_example_survives_devcluster_kill9(tmp_path: Path) -> None:
    dc = Crashable(tmp_path / "state", port=free_ports(1)[0])
    dc.start()
    out_path, err_path = tmp_path / "deploy.json", tmp_path / "deploy.err"
    with open(out_path, "w") as out_fh, open(err_path, "w") as err_fh:
        deploy = subprocess.Popen(CLI + ["deploy", str(ROOT / "jobs" / "cpu-example.toml"),
                                         "--set", f"driver.command={BIN / 'nomad-triton'}", "--timeout", "300s",
                                         "--json"],
                                  env=cli_env(dc.addr), stdout=out_fh, stderr=err_fh, start_new_session=True)
    problems: list[str] = []
    try:
        with dc.http() as c:
            [alloc] = wait_until(lambda: running_allocs(c, "triton-cpu"), 120, "the serve task running")
            dep = latest_deployment(c, "triton-cpu")
            assert dep is not None and dep["Status"] == "running", dep
        handle = task_handle(dc, alloc["ID"], "server")
        assert handle is not None and "nomad-triton" in " ".join(_cmdline(handle.pid))
        dc.kill9()
        assert alive(handle.pid), "serve must outlive devcluster"
        dc.start()
        code = deploy.wait(timeout=300)
        assert code == 0, out_path.read_text() + err_path.read_text()
        result = json.loads(out_path.read_text())
        assert result["outcome"] == "successful", result
        with dc.http() as c:
            [after] = running_allocs(c, "triton-cpu")
            assert after["ID"] == alloc["ID"]
            assert (latest_deployment(c, "triton-cpu") or {}).get("ID") == dep["ID"]
            full = c.get(f"/v1/allocation/{after['ID']}").json()
        again = task_handle(dc, alloc["ID"], "server")
        assert again == handle, "re-attached to the very same serve process"
        assert any(process_name(p) == "tritonserver" for p in descendants(handle.pid))
        ports = {p["Label"]: p["Value"] for p in full["AllocatedResources"]["Shared"]["Ports"]}
        for model in ("mlp", "relu_onnx"):
            ready = httpx.get(f"http://127.0.0.1:{ports['http']}/v2/models/{model}/ready", timeout=5)
            assert ready.status_code == 200, (model, ready.text)
        dc.remember()
    finally:
        if deploy.poll() is None:
            kill_cli(deploy)
        problems = dc.close()
    assert not problems, "; ".join(problems)
    assert not launcher.live_groups({handle.pgid}) and not alive(handle.pid)


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")

