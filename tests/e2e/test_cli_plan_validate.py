"""`validate` (server side) and `plan` against devcluster: exit codes like `nomad job plan`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.cli_helpers import run_cli, sleep_spec
from tests.e2e.conftest import Devcluster, StartFn
from tests.e2e.test_cli_failures import GPU_CONFIG

pytestmark = pytest.mark.e2e


def test_validate_then_plan_new_changed_and_unchanged(devcluster: Devcluster, tmp_path: Path) -> None:
    spec = sleep_spec(tmp_path, "planned")
    ok = run_cli(["validate", str(spec)], devcluster.addr, timeout=60)
    assert ok.code == 0 and "parsed and validated by Nomad" in ok.out, ok.text
    local = run_cli(["validate", str(spec), "--local"], "http://127.0.0.1:1", timeout=60)
    assert local.code == 0, local.text  # --local never contacts Nomad

    new = run_cli(["plan", str(spec)], devcluster.addr, timeout=60)
    assert new.code == 1, new.text
    assert new.out.startswith('+ Job: "planned"') and "triton: 1 create" in new.out, new.out
    assert "Job Modify Index: 0" in new.out

    deployed = run_cli(["deploy", str(spec), "--detach", "--json"], devcluster.addr, timeout=60)
    assert deployed.code == 0 and deployed.json()["outcome"] == "registered", deployed.text
    same = run_cli(["plan", str(spec), "--json"], devcluster.addr, timeout=60)
    assert same.code == 0 and same.json()["changes"] is False, same.text
    changed = run_cli(["plan", str(spec), "--set", "resources.memory=128"], devcluster.addr, timeout=60)
    assert changed.code == 1, changed.text
    assert '+/- MemoryMB: "64" => "128"' in changed.out, changed.out


def test_plan_explains_gpu_placement_failure_and_errors_are_255(devcluster_factory: StartFn, tmp_path: Path) -> None:
    dc = devcluster_factory(GPU_CONFIG)
    spec = sleep_spec(tmp_path, "gpu-plan", gpus=4, pool="gpu")
    res = run_cli(["plan", str(spec)], dc.addr, timeout=60)
    assert res.code == 1, res.text
    assert "Placement failures:" in res.out and 'Task group "triton" failed to place' in res.out, res.out
    down = run_cli(["plan", str(spec)], "http://127.0.0.1:1", timeout=60)
    assert down.code == 255 and "Nomad unreachable" in down.err, down.text
