"""`autoscale agent` end to end on devcluster with real PyTriton: one agent, every job, two agents for HA.

Three jobs, each a real `nomad-triton serve`: two sleepy-model jobs under load
(examples/loadgen.py, see test_autoscale_triton for the model) and the shipped CPU example
(jobs/cpu-example.toml) left idle. Two agent processes run the real CLI; they find all three
through Nomad's scaling policies (the jobs are registered after the agents started), the lock
holder scales both loaded jobs at once and never the idle one, a disabled, re-enabled, stopped
and purged job are picked up without a restart, and after `kill -9` of the holder the standby
takes over within the lock TTL and brings the loaded jobs back to their minimum. Nothing is faked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from nomad_triton.nomad.client import NomadClient
from nomad_triton.nomad.errors import PermissionDenied
from nomad_triton.render import render_job
from nomad_triton.server.testing import free_ports
from nomad_triton.spec import load_spec
from tests.e2e.cli_helpers import BIN, CLI, ROOT, cli_env, kill_cli, start_cli, stop_cli, wait_for_text
from tests.e2e.conftest import Devcluster, wait_until
from tests.e2e.test_autoscale_triton import _settled, desired, ours, start_loadgen, stop_loadgen, write_spec

pytestmark = pytest.mark.e2e
LOCK_TTL = 10


def register(client: NomadClient, spec_path: Path, sets: list[str] | None = None) -> str:
    spec = load_spec(spec_path, sets=sets or [])
    client.register(client.parse_hcl(render_job(spec)))
    return spec.name


def agent_cli(dc: Devcluster, port: int, log: Path, *extra: str) -> Any:
    return start_cli(["autoscale", "agent", "--listen", f"127.0.0.1:{port}", "--lock-ttl", str(LOCK_TTL),
                      "--json", *extra], dc.addr, log)


def events(log: Path, name: str) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text().splitlines():
        if line.startswith('{"') and f'"event": "{name}"' in line:
            out.append(json.loads(line))
    return out


def scrape(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("nomad_triton_agent_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def series(metrics: dict[str, float], name: str, job: str, **labels: str) -> float | None:
    """The value of `name` for `job` (and any extra labels); None when the agent exports none."""
    for key, value in metrics.items():
        if key.startswith(f"nomad_triton_agent_{name}{{") and f'job="{job}"' in key \
                and all(f'{k}="{v}"' in key for k, v in labels.items()):
            return value
    return None


def consistent(job_events: list[dict[str, Any]]) -> None:
    """Each of our scale actions starts from the count the previous one set: none doubled or lost."""
    for prev, cur in zip(job_events, job_events[1:], strict=False):
        assert cur["Meta"]["nomad_triton.from"] == prev["Count"], (prev, cur)


def test_agent_scales_loaded_jobs_not_idle_follows_policies_and_hands_over(devcluster: Devcluster,
                                                                          tmp_path: Path) -> None:
    client = NomadClient.from_env(address=devcluster.addr, token=devcluster.token)
    ports = free_ports(2)
    logs = [tmp_path / "agent-a.log", tmp_path / "agent-b.log"]
    procs = []
    loads: list[tuple[Any, Path]] = []
    try:
        procs.append(agent_cli(devcluster, ports[0], logs[0], "--sd"))  # also Prometheus SD (issue #13)
        wait_for_text(logs[0], '"event": "leader"', 30)
        procs.append(agent_cli(devcluster, ports[1], logs[1]))
        wait_for_text(logs[1], '"event": "standby"', 30)

        # Jobs registered while the agents run: picked up from Nomad's policies, no restart.
        busy = [register(client, write_spec(tmp_path, j)) for j in ("sleepy-a", "sleepy-b")]
        idle = register(client, ROOT / "jobs" / "cpu-example.toml",
                        [f"driver.command={BIN / 'nomad-triton'}"])
        for job in (*busy, idle):
            wait_until(lambda job=job: _settled(client, job), 120, f"{job}: first deployment successful", 0.5)
        # The agent serves Prometheus HTTP SD too: every job's metrics service, with its job= tag.
        def sd_jobs() -> set[str]:
            groups = httpx.get(f"http://127.0.0.1:{ports[0]}/sd/v1/targets", params={"tag": "prometheus"},
                               timeout=5).json()
            return {t.strip(",")[4:] for g in groups for t in g["labels"]["__meta_nomad_tags"].split(",")
                    if t.startswith("job=")}
        wait_until(lambda: sd_jobs() == {*busy, idle}, 20, "agent /sd/v1/targets lists the three jobs", 0.5)
        assert httpx.get(f"http://127.0.0.1:{ports[0]}/sd/healthz", timeout=5).status_code == 200
        for log in logs:
            wait_until(lambda log=log: {e["target"] for e in events(log, "target_added")}
                       == {f"default/{j}/triton" for j in (*busy, idle)}, 10, f"{log.name}: three targets")

        loads = [(start_loadgen(devcluster, job, tmp_path / f"load-{job}.log"), tmp_path / f"load-{job}.log")
                 for job in busy]
        t0 = time.monotonic()
        wait_until(lambda: all(desired(client, j) >= 2 for j in busy), 40, "both loaded jobs scaled out", 0.3)
        both_up = time.monotonic() - t0
        assert desired(client, idle) == 1 and not ours(client, idle)

        leader, standby = scrape(ports[0]), scrape(ports[1])
        assert leader["nomad_triton_agent_leader"] == 1 and standby["nomad_triton_agent_leader"] == 0
        for job in busy:
            assert (series(leader, "scale_requests_total", job, result="ok") or 0) >= 1, job
            assert series(standby, "scale_requests_total", job, result="ok") is None, job
            up = ours(client, job)[0]
            assert up["Message"].startswith("nomad-triton: scale up 1 -> ") and up["Meta"]["nomad_triton.to"] >= 2
        # The idle job is evaluated on its interval (1 s) like the others, and held.
        assert (series(leader, "decisions_total", idle, direction="none") or 0) >= 3
        assert series(leader, "scale_requests_total", idle, result="ok") is None
        assert series(leader, "last_evaluation_age_seconds", idle) < 3 * 1.0
        assert httpx.get(f"http://127.0.0.1:{ports[0]}/healthz", timeout=5).status_code == 200

        # The idle job's policy disabled (scaling { enabled = false }), enabled again, its job stopped
        # (Nomad 1.10.2+ keeps a stopped job's policy, disabled) and purged (the policy is gone):
        # each picked up from the blocking query, without a restart.
        target = f"default/{idle}/triton"

        def enabled_flags() -> list[bool]:
            return [e["enabled"] for e in events(logs[0], "target_changed") if e["target"] == target]

        for flag in (False, True):
            job = client.job(idle)
            job["TaskGroups"][0]["Scaling"]["Enabled"] = flag
            client.register(job)
            wait_until(lambda flag=flag: enabled_flags()[-1:] == [flag], 10, f"policy enabled={flag} picked up")
            wait_until(lambda flag=flag: series(scrape(ports[0]), "target_enabled", idle) == int(flag), 5,
                       f"target_enabled {int(flag)}")
        client.deregister(idle)
        wait_until(lambda: enabled_flags()[-1:] == [False], 10, "stopped job's policy disabled")
        assert series(scrape(ports[0]), "last_evaluation_age_seconds", idle) is None  # no longer due
        client.deregister(idle, purge=True)
        wait_until(lambda: any(e["target"] == target for e in events(logs[0], "target_removed")), 10,
                   "purged job's target removed")
        wait_until(lambda: series(scrape(ports[0]), "desired_count", idle) is None, 5, "its series gone")

        # Hand-over: the holder dies without releasing the lock; the standby leads within one TTL.
        for job in busy:
            wait_until(lambda job=job: _settled(client, job), 90, f"{job}: scale-out deployment finished", 0.5)
        killed = time.monotonic()
        os.killpg(procs[0].pid, signal.SIGKILL)
        procs[0].wait(10)
        wait_for_text(logs[1], '"event": "leader"', LOCK_TTL + 5)
        took_over = time.monotonic() - killed
        assert took_over <= LOCK_TTL + 1, f"standby took {took_over:.1f}s"

        for proc, log in loads:
            stop_loadgen(proc, log)
        loads = []
        wait_until(lambda: all(desired(client, j) == 1 for j in busy), 60, "new leader scaled both back in", 0.5)
        after = scrape(ports[1])
        for job in busy:
            assert (series(after, "scale_requests_total", job, result="ok") or 0) >= 1
            mine = ours(client, job)
            assert mine[-1]["Count"] == 1 and mine[-1]["Meta"]["nomad_triton.direction"] == "down"
            consistent(mine)
        assert httpx.get(f"http://127.0.0.1:{ports[1]}/healthz", timeout=5).status_code == 200
        os.killpg(procs[1].pid, signal.SIGTERM)
        assert stop_cli(procs[1], 20) == 0
    finally:
        for proc, _ in loads:
            kill_cli(proc)
        for p in procs:
            kill_cli(p)
    text = logs[1].read_text()
    assert json.loads(text[text.rindex("\n{") + 1:])["leader"] is True  # the exit summary comes last
    assert "Traceback" not in logs[0].read_text() + text
    print(f"both loaded jobs scaled out {both_up:.1f}s after load began; standby took over {took_over:.1f}s "
          f"after kill -9")


# An idle Triton as far as a prober can tell: ready, and a metrics page (on the metrics port) whose
# counters never move.
IDLE_TRITON = (
    "import http.server, os\n"
    "PAGE = b''.join(f'{n}{{model=\"m\",version=\"1\"}} 7\\n'.encode() for n in (\n"
    "    'nv_inference_request_success', 'nv_inference_request_failure', 'nv_inference_count',\n"
    "    'nv_inference_exec_count', 'nv_inference_queue_duration_us', 'nv_inference_compute_infer_duration_us',\n"
    "    'nv_inference_request_duration_us', 'nv_inference_pending_request_count'))\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        body = PAGE if self.path == '/metrics' else b''\n"
    "        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()\n"
    "        self.wfile.write(body)\n"
    "    def log_message(self, *a): pass\n"
    "import threading\n"
    "for label in ('http', 'metrics'):\n"
    "    srv = http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['NOMAD_PORT_' + label])), H)\n"
    "    threading.Thread(target=srv.serve_forever).start()\n"
)


def _unquote(value: Any) -> Any:
    """python-hcl2 keeps string quotes; the ACL file has only plain strings, lists and blocks."""
    if isinstance(value, str):
        return json.loads(value) if value.startswith('"') else value
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items() if not k.startswith("__")}
    return value


def shipped_acl_policy() -> dict[str, Any]:
    """jobs/autoscale-agent.acl.hcl as devcluster's [acl.policies.<name>] table."""
    import hcl2

    doc = _unquote(hcl2.loads((ROOT / "jobs" / "autoscale-agent.acl.hcl").read_text()))
    out: dict[str, Any] = {"namespace": {}}
    for block in doc["namespace"]:
        for ns, rule in block.items():
            paths = {p: r["capabilities"] for v in rule.get("variables", []) for pb in v["path"] for p, r in pb.items()}
            out["namespace"][ns] = {"capabilities": rule["capabilities"], "variables": paths}
    return out


def test_agent_runs_on_the_shipped_least_privilege_acl_policy(devcluster_factory: Any, tmp_path: Path) -> None:
    policy = shipped_acl_policy()
    ns = policy["namespace"]["default"]
    caps = ", ".join(json.dumps(c) for c in ns["capabilities"])
    var_rules = "\n".join(f"{json.dumps(p)} = {json.dumps(c)}" for p, c in ns["variables"].items())
    dc = devcluster_factory(f'''
[server]
acl = true
[acl.policies.autoscaler.namespace.default]
capabilities = [{caps}]
[acl.policies.autoscaler.namespace.default.variables]
{var_rules}
[[acl.tokens]]
name = "agent"
policies = ["autoscaler"]
''')
    admin = NomadClient.from_env(address=dc.addr, token=dc.token)
    agent_token = dc.token_file("agent")
    # The shipped agent job parses on the server as written.
    parsed = admin.parse_hcl((ROOT / "jobs" / "autoscale-agent.nomad.hcl").read_text(), "image = \"x\"")
    assert parsed["TaskGroups"][0]["Count"] == 2
    assert parsed["TaskGroups"][0]["Tasks"][0]["Config"]["args"][:2] == ["autoscale", "agent"]

    spec = tmp_path / "idle.toml"
    spec.write_text(f'''
name = "idle-fake"
count = 2
[driver]
type = "raw_exec"
command = {json.dumps(sys.executable)}
args = ["-c", {json.dumps(IDLE_TRITON)}]
[model_repository]
path = "{tmp_path}"
models = ["m"]
[health]
interval = "1s"
timeout = "1s"
[rollout]
min_healthy_time = "1s"
[scaling]
enabled = true
min = 1
max = 3
[scaling.policy]
evaluation_interval = "500ms"
cooldown_down = "1s"
scale_down_stabilization = "1s"
''')
    job = register(admin, spec)
    wait_until(lambda: _settled(admin, job), 60, "idle job deployed", 0.3)
    log = tmp_path / "agent.log"
    port = free_ports(1)[0]
    proc = subprocess.Popen(CLI + ["autoscale", "agent", "--listen", f"127.0.0.1:{port}", "--lock-ttl", "10",
                                   "--json"], env=cli_env(dc.addr, agent_token), stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True, text=True)
    try:
        wait_for_text(log, '"event": "leader"', 30)
        wait_until(lambda: desired(admin, job) == 1, 30, "idle group scaled in by the agent", 0.3)
        os.killpg(proc.pid, signal.SIGTERM)
        assert stop_cli(proc, 20) == 0
    finally:
        kill_cli(proc)
    text = log.read_text()
    assert "Permission denied" not in text and "failed" not in text, text
    down = ours(admin, job)
    assert down and down[-1]["Count"] == 1 and "scale down 2 -> 1" in down[-1]["Message"]
    # ... and nothing more: the same token may not submit jobs nor touch other variables.
    limited = NomadClient.from_env(address=dc.addr, token=agent_token)
    with pytest.raises(PermissionDenied):
        limited.register(admin.job(job))
    with pytest.raises(PermissionDenied):
        limited.var_lock_acquire("other/lock", 10)
