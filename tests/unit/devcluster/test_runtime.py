"""Runtime against a real Store, real processes and real HTTP checks on 127.0.0.1 (no HTTP API).

Each test runs its own event loop with a hard deadline and ends with `shutdown()`, after which
no task process group may remain.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import httpx
from test_runtime_support import Cluster, fast_update, http_task, job, node, run_bounded, until

from nomad_triton.devcluster.driver_raw_exec import group_alive


def run(coro: Any, timeout: float = 90.0) -> None:
    run_bounded(coro, timeout)


def _pgids(c: Cluster) -> list[int]:
    return [t.proc.pgid for r in c.rt.runners.values() for t in r.tasks if t.proc is not None]


def test_placement_runs_real_process_and_deployment_succeeds(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path, [node("n1"), node("n2")])
        await c.rt.start()
        pgids: list[int] = []
        try:
            c.register(job(count=2, update=fast_update()))
            dep = await until(lambda: [d for d in c.deployments() if d["Status"] == "successful"],
                              what="deployment successful")
            d = dep[0]
            assert d["StatusDescription"] == "Deployment completed successfully"
            assert d["TaskGroups"]["g"]["DesiredTotal"] == 2
            assert d["TaskGroups"]["g"]["HealthyAllocs"] == 2
            assert c.job()["Stable"] is True
            assert c.store.get("job_versions", ("default", "web", 0))["Stable"] is True
            await until(lambda: c.job()["Status"] == "running", what="job running")
            allocs = c.live()
            assert sorted(a["Name"] for a in allocs) == ["web.g[0]", "web.g[1]"]
            assert {a["NodeID"] for a in allocs} == {"id-n1", "id-n2"}  # spread over nodes
            async with httpx.AsyncClient() as client:
                for a in allocs:
                    assert a["ClientStatus"] == "running"
                    assert a["DeploymentStatus"]["Healthy"] is True
                    port = a["AllocatedResources"]["Shared"]["Ports"][0]
                    assert port["Label"] == "http" and 20000 <= port["Value"] <= 32000
                    # the task really serves on its dynamic port
                    r = await client.get(f"http://127.0.0.1:{port['Value']}/")
                    assert r.status_code == 200
                    ts = a["TaskStates"]["web"]
                    assert ts["State"] == "running"
                    assert [e["Type"] for e in ts["Events"]][:3] == ["Received", "Task Setup", "Started"]
            # native service registrations for the running allocs
            svcs = [s for s in c.store.list("services") if s["ServiceName"] == "web-svc"]
            assert sorted(s["Port"] for s in svcs) == sorted(
                a["AllocatedResources"]["Shared"]["Ports"][0]["Value"] for a in allocs)
            assert all(s["Address"] == "127.0.0.1" and s["Tags"] == ["t1"] for s in svcs)
            # checks are visible per alloc
            checks = c.rt.alloc_checks(allocs[0]["ID"])
            assert [v["Status"] for v in checks.values()] == ["success"]
            # eval complete, no failures
            ev = c.evals()[0]
            assert ev["Status"] == "complete" and ev["FailedTGAllocs"] is None
            # log path layout
            p = c.rt.alloc_log_path(allocs[0]["ID"], "web", "stderr")
            assert p == tmp_path / "state" / "allocs" / allocs[0]["ID"] / "alloc" / "logs" / "web.stderr.0"
            assert p.exists()
            pgids = _pgids(c)
            assert len(pgids) == 2 and all(group_alive(g) for g in pgids)
        finally:
            await c.rt.shutdown()
        assert pgids and not any(group_alive(g) for g in pgids)

    run(main())


def test_task_env_interpolation_and_alloc_dirs(tmp_path: Path) -> None:
    script = ("import os,json,time;"
              "json.dump(dict(os.environ),open(os.environ['NOMAD_TASK_DIR']+'/env.json','w'));"
              "print('ARGS', ${NOMAD_ALLOC_INDEX}, '${attr.kernel.name}', '${node.unique.name}', flush=True);"
              "time.sleep(60)")

    async def main() -> None:
        c = Cluster(tmp_path, [node("n1", gpus=2)])
        await c.rt.start()
        try:
            t = http_task(command=sys.executable, args=["-c", script], gpus=1,
                          env={"GREETING": "hi-${NOMAD_ALLOC_INDEX}", "PORT": "${NOMAD_PORT_http}"})
            c.register(job(tasks=[t], checks=False))
            a = (await until(lambda: [a for a in c.live() if a["ClientStatus"] == "running"]))[0]
            env_file = tmp_path / "state" / "allocs" / a["ID"] / "web" / "local" / "env.json"
            await until(env_file.exists, what="env.json")
            import json

            env = await until(lambda: _load(env_file), what="env.json readable")
            port = a["AllocatedResources"]["Shared"]["Ports"][0]["Value"]
            assert env["NOMAD_ALLOC_ID"] == a["ID"]
            assert env["NOMAD_ALLOC_NAME"] == "web.g[0]" and env["NOMAD_ALLOC_INDEX"] == "0"
            assert env["NOMAD_JOB_ID"] == "web" and env["NOMAD_GROUP_NAME"] == "g"
            assert env["NOMAD_TASK_NAME"] == "web" and env["NOMAD_NAMESPACE"] == "default"
            assert env["NOMAD_REGION"] == "global" and env["NOMAD_DC"] == "dc1"
            assert env["NOMAD_CPU_LIMIT"] == "100" and env["NOMAD_MEMORY_LIMIT"] == "64"
            assert env["NOMAD_PORT_http"] == str(port) and env["NOMAD_HOST_PORT_http"] == str(port)
            assert env["NOMAD_ADDR_http"] == f"127.0.0.1:{port}" and env["NOMAD_IP_http"] == "127.0.0.1"
            assert env["NOMAD_ALLOC_DIR"] == str(tmp_path / "state" / "allocs" / a["ID"] / "alloc")
            assert env["NOMAD_SECRETS_DIR"].endswith("/web/secrets")
            assert env["NVIDIA_VISIBLE_DEVICES"] == "GPU-n1-0"
            assert env["GREETING"] == "hi-0" and env["PORT"] == str(port)
            assert env["PATH"] == os.environ["PATH"]
            assert a["AllocatedResources"]["Tasks"]["web"]["Devices"][0]["DeviceIDs"] == ["GPU-n1-0"]
            out = c.rt.alloc_log_path(a["ID"], "web", "stdout")
            await until(lambda: b"ARGS" in out.read_bytes(), what="stdout")
            assert out.read_text().strip() == "ARGS 0 linux n1"
            _ = json
        finally:
            await c.rt.shutdown()

    run(main())


def _load(path: Path) -> dict[str, str] | None:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
