"""CLI failure paths on a real devcluster (no Triton needed): each must end quickly with one clear
message and the documented exit code — never a hang, a traceback, or a token on the terminal."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from nomad_triton.nomad import errors
from nomad_triton.nomad.client import NomadClient
from tests.e2e.cli_helpers import http_spec, kill_cli, run_cli, sleep_spec, start_cli, stop_cli, wait_for_text
from tests.e2e.conftest import Devcluster, StartFn

pytestmark = pytest.mark.e2e

GPU_CONFIG = """
[[node_pools]]
name = "gpu"

[[nodes]]
name = "gpu-1"
node_pool = "gpu"
[[nodes.devices]]
vendor = "nvidia"
type = "gpu"
name = "A100"
count = 2
memory = "40 GiB"
"""

ACL_CONFIG = """
[server]
acl = true
"""


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bad_spec_exits_2_without_contacting_nomad(tmp_path: Path) -> None:
    spec = sleep_spec(tmp_path, "bad-spec", extra="[rollout.typo]\nx = 1\n")
    res = run_cli(["deploy", str(spec)], f"http://127.0.0.1:{closed_port()}", timeout=60)
    assert res.code == 2, res.text
    assert str(spec) in res.err and "rollout" in res.err and "Traceback" not in res.text
    assert "unreachable" not in res.text  # nothing was contacted


def test_unreachable_nomad_exits_1_after_bounded_retries(tmp_path: Path) -> None:
    port = closed_port()
    res = run_cli(["deploy", str(sleep_spec(tmp_path, "nowhere")), "--json"], f"http://127.0.0.1:{port}",
                  timeout=60)
    assert res.code == 1, res.text
    err = json.loads(res.err)
    assert err["error"].startswith(f"Nomad unreachable at http://127.0.0.1:{port}") and err["kind"] == "Unreachable"
    assert res.elapsed < 15


def test_infeasible_gpu_count_exits_1_naming_the_device(devcluster_factory: StartFn, tmp_path: Path) -> None:
    dc = devcluster_factory(GPU_CONFIG)
    spec = sleep_spec(tmp_path, "gpu-big", gpus=4, pool="gpu")
    strict = run_cli(["deploy", str(spec), "--strict"], dc.addr, timeout=60)
    assert strict.code == 1, strict.text
    assert "pre-flight: not enough nvidia/gpu capacity: need 1 allocation(s) x 4 nvidia/gpu" in strict.err
    with pytest.raises(errors.NotFound):  # --strict refused before registering anything
        NomadClient.from_env(address=dc.addr).job("gpu-big")

    t0 = time.monotonic()
    res = run_cli(["deploy", str(spec), "--timeout", "5m"], dc.addr, timeout=60)
    assert res.code == 1, res.text
    assert time.monotonic() - t0 < 30  # a blocked evaluation ends the wait at once, not at --timeout
    assert "warning: pre-flight: not enough nvidia/gpu capacity" in res.err
    assert 'Task group "triton" failed to place 1 allocation(s):' in res.out, res.out
    assert "nvidia/gpu" in res.out and "blocked" in res.err


def test_acl_without_token_is_a_clear_403_and_no_token_is_printed(
    devcluster_factory: StartFn, tmp_path: Path
) -> None:
    dc = devcluster_factory(ACL_CONFIG)
    spec = sleep_spec(tmp_path, "acl-job")
    anon = run_cli(["deploy", str(spec)], dc.addr, timeout=60)
    assert anon.code == 1, anon.text
    assert "Permission denied: no ACL token was given (set NOMAD_TOKEN or --token)" in anon.err
    bogus = "4c1b2d0e-0000-4000-8000-feedfacecafe"
    wrong = run_cli(["deploy", str(spec), "--token", bogus, "--json"], dc.addr, timeout=60)
    assert wrong.code == 1 and "invalid or lacks the required policy" in wrong.err, wrong.text
    assert bogus not in wrong.text
    assert dc.token is not None
    ok = run_cli(["validate", str(spec)], dc.addr, token=dc.token, timeout=60)
    assert ok.code == 0, ok.text
    assert dc.token not in ok.text


def test_stale_job_modify_index_is_a_conflict(devcluster: Devcluster, tmp_path: Path) -> None:
    """Two deploys that planned against the same version: the first register wins, the second conflicts."""
    from nomad_triton.render import render_job
    from nomad_triton.spec import load_spec

    client = NomadClient.from_env(address=devcluster.addr)
    job_a = client.parse_hcl(render_job(load_spec(sleep_spec(tmp_path, "race", extra="[meta]\nv = \"a\"\n"))))
    job_b = client.parse_hcl(render_job(load_spec(sleep_spec(tmp_path, "race", extra="[meta]\nv = \"b\"\n"))))
    plan_a, plan_b = client.plan(job_a), client.plan(job_b)
    assert plan_a.job_modify_index == plan_b.job_modify_index == 0
    client.register(job_a, enforce_index=True, job_modify_index=plan_a.job_modify_index)
    with pytest.raises(errors.Conflict, match="Enforcing job modify index"):
        client.register(job_b, enforce_index=True, job_modify_index=plan_b.job_modify_index)
    assert client.job("race")["Meta"] == {"v": "a"}
    client.deregister("race", purge=True)


def test_two_concurrent_deploys_one_wins_the_other_fails_clearly(devcluster: Devcluster, tmp_path: Path) -> None:
    """Both start at once: either the loser's register is refused (EnforceIndex) or its rollout is
    superseded by the winner's newer version. Either way exactly one succeeds, the other exits 1."""
    spec = http_spec(tmp_path, "concurrent")
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [
        start_cli(["deploy", str(spec), "--set", f"env.RELEASE={tag}", "--timeout", "90s"], devcluster.addr, log)
        for tag, log in zip(("a", "b"), logs, strict=True)
    ]
    try:
        codes = [stop_cli(p, 120) for p in procs]
    finally:
        for p in procs:
            kill_cli(p)
    texts = [log.read_text() for log in logs]
    assert sorted(codes) == [0, 1], texts
    loser = texts[codes.index(1)]
    assert ("Enforcing job modify index" in loser and "plan again" in loser) or (
        "deployment cancelled: Cancelled due to newer version of job" in loser
    ), loser
    assert "Traceback" not in "".join(texts)


def test_second_deploy_supersedes_the_first_which_exits_1(devcluster: Devcluster, tmp_path: Path) -> None:
    spec = sleep_spec(tmp_path, "two-deploys")
    log = tmp_path / "first.log"
    first = start_cli(["deploy", str(spec), "--timeout", "120s"], devcluster.addr, log)
    try:
        wait_for_text(log, "following the deployment", 60)
        second = run_cli(["deploy", str(spec), "--set", "env.RELEASE=v2", "--detach"], devcluster.addr, timeout=60)
        assert second.code == 0, second.text
        code = stop_cli(first, 60)
    finally:
        kill_cli(first)
    text = log.read_text()
    assert code == 1, text
    assert "deployment cancelled" in text and "newer" in text.lower(), text


def test_devcluster_restarted_mid_watch_fails_clearly(devcluster_factory: StartFn, tmp_path: Path) -> None:
    from nomad_triton.devcluster import launcher

    dc = devcluster_factory(None)
    spec = sleep_spec(tmp_path, "restart-me")
    log = tmp_path / "deploy.log"
    proc = start_cli(["deploy", str(spec), "--timeout", "300s"], dc.addr, log)
    try:
        wait_for_text(log, "following the deployment", 60)
        dc.remember_groups()
        stopped = launcher.stop(dc.state_dir, timeout_s=20)
        assert stopped is not None
        # devcluster state is durable: a restart on the same state dir would carry on. Another
        # (empty) cluster at the same address is what makes the deployment vanish.
        fresh = launcher.start(tmp_path / "fresh-state", port=dc.port, timeout_s=30)
        dc.pid, dc.state_dir = fresh.pid, Path(fresh.state_dir)
        code = stop_cli(proc, 90)
    finally:
        kill_cli(proc)
    text = log.read_text()
    assert code == 1, text
    assert "no longer exists (was the cluster restarted?)" in text or "lost contact with Nomad" in text, text
    assert "Traceback" not in text
