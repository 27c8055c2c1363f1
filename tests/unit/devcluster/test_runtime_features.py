"""Runtime features with real processes: HCL-parsed jobs, templates, artifacts, tcp checks, restart
mode "delay", healthy/progress deadlines and job stop cancelling a deployment.
"""

from __future__ import annotations

import asyncio
import copy
import stat
import sys
from pathlib import Path
from typing import Any

from test_runtime_support import Cluster, S, fast_update, http_task, job, node, run_bounded, until

from nomad_triton.devcluster.hclparse import parse_job_hcl

ERROR_SERVER = (
    "import http.server,os\n"
    "class H(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        self.send_response(500); self.end_headers()\n"
    "    def log_message(self, *a): pass\n"
    "http.server.HTTPServer(('127.0.0.1', int(os.environ['NOMAD_PORT_http'])), H).serve_forever()\n"
)

HCL = """
job "hcl" {
  datacenters = ["*"]
  group "g" {
    network { port "http" {} }
    update {
      max_parallel     = 1
      min_healthy_time = "300ms"
      healthy_deadline = "10s"
      progress_deadline = "20s"
    }
    service {
      name     = "hcl-web"
      port     = "http"
      provider = "nomad"
      check {
        type     = "tcp"
        interval = "100ms"
        timeout  = "1s"
      }
    }
    task "web" {
      driver = "raw_exec"
      config {
        command = "PYTHON"
        args    = ["-m", "http.server", "${NOMAD_PORT_http}", "--bind", "127.0.0.1"]
      }
      template {
        data        = "hello {{ env \\"NOMAD_ALLOC_NAME\\" }}"
        destination = "local/hello.txt"
        perms       = "0600"
      }
      template {
        data        = "FROM_TEMPLATE={{ env \\"NOMAD_JOB_ID\\" }}"
        destination = "secrets/app.env"
        env         = true
      }
      resources {
        cpu    = 100
        memory = 64
      }
    }
  }
}
"""


def run(coro: Any, timeout: float = 90.0) -> None:
    run_bounded(coro, timeout)


def test_hcl_job_with_templates_and_tcp_check_deploys(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path, [node("n1")])
        await c.rt.start()
        try:
            j = parse_job_hcl(HCL.replace("PYTHON", sys.executable), canonicalize=True)
            c.register(j)
            dep = (await until(lambda: [d for d in c.deployments("hcl") if d["Status"] == "successful"],
                               what="hcl deployment"))[0]
            assert dep["TaskGroups"]["g"]["HealthyAllocs"] == 1
            a = c.live("hcl")[0]
            task_dir = tmp_path / "state" / "allocs" / a["ID"] / "web"
            hello = task_dir / "local" / "hello.txt"
            assert hello.read_text() == "hello hcl.g[0]"
            assert stat.S_IMODE(hello.stat().st_mode) == 0o600
            assert (task_dir / "secrets" / "app.env").read_text() == "FROM_TEMPLATE=hcl"
            checks = list(c.rt.alloc_checks(a["ID"]).values())
            assert checks[0]["Status"] == "success" and checks[0]["Output"] == "nomad: tcp ok"
            assert checks[0]["Check"] == 'service: "hcl-web" check'
        finally:
            await c.rt.shutdown()

    run(main())


def test_artifact_from_s3_is_refused_and_fails_the_alloc(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path, [node("n1")])
        await c.rt.start()
        try:
            t = http_task()
            t["Artifacts"] = [{"GetterSource": "s3::https://s3.amazonaws.com/bucket/model.tgz"}]
            c.register(job(tasks=[t], checks=False, restart={"Attempts": 0, "Interval": int(60 * S),
                                                             "Delay": int(0.05 * S), "Mode": "fail"}))
            a = (await until(lambda: [a for a in c.allocs() if a["ClientStatus"] == "failed"], what="failed"))[0]
            events = a["TaskStates"]["web"]["Events"]
            failed = [e for e in events if e["Type"] == "Failed Artifact Download"]
            assert failed and "s3:: sources are fetched by a real Nomad client" in failed[0]["DownloadError"]
            assert events[-1]["Type"] == "Not Restarting" and events[-1]["FailsTask"] is True
            await until(lambda: c.job()["Status"] == "dead", what="job dead")
        finally:
            await c.rt.shutdown()

    run(main())


def test_restart_mode_delay_keeps_restarting(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path, [node("n1")])
        await c.rt.start()
        try:
            t = http_task(command=sys.executable, args=["-c", "import sys; sys.exit(1)"])
            c.register(job(tasks=[t], checks=False,
                           restart={"Attempts": 1, "Interval": int(0.6 * S), "Delay": int(0.05 * S),
                                    "Mode": "delay"}))

            def restarted_after_delay() -> Any:
                allocs = c.allocs()
                if not allocs or not allocs[0]["TaskStates"]:
                    return None
                ts = allocs[0]["TaskStates"]["web"]
                return ts if ts["Restarts"] >= 3 else None

            ts = await until(restarted_after_delay, what="restarts in delay mode")
            reasons = [e["RestartReason"] for e in ts["Events"] if e["Type"] == "Restarting"]
            assert 'Exceeded allowed attempts 1 in interval 600ms and mode is "delay"' in reasons
            assert c.allocs()[0]["ClientStatus"] != "failed" and not ts["Failed"]
            assert len(c.allocs()) == 1
        finally:
            await c.rt.shutdown()

    run(main())


def _error_task() -> dict[str, Any]:
    return http_task(command=sys.executable, args=["-c", ERROR_SERVER])


def test_failing_checks_hit_healthy_deadline_without_stable_version(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path, [node("n1")])
        await c.rt.start()
        try:
            c.register(job(tasks=[_error_task()],
                           update=fast_update(HealthyDeadline=int(0.8 * S), AutoRevert=True)))
            d = (await until(lambda: [d for d in c.deployments() if d["Status"] == "failed"], what="failed"))[0]
            assert d["StatusDescription"] == \
                "Failed due to unhealthy allocations - no stable job version to auto revert to"
            a = c.allocs()[0]
            assert a["DeploymentStatus"]["Healthy"] is False and a["ClientStatus"] == "running"
            checks = list(c.rt.alloc_checks(a["ID"]).values())
            assert checks[0]["Status"] == "failure" and checks[0]["StatusCode"] == 500
            assert c.job()["Version"] == 0  # nothing to revert to
        finally:
            await c.rt.shutdown()

    run(main())


def test_progress_deadline_fails_deployment(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path, [node("n1")])
        await c.rt.start()
        try:
            c.register(job(tasks=[_error_task()],
                           update=fast_update(HealthyDeadline=int(0.4 * S), ProgressDeadline=int(1.2 * S))))
            dep = (await until(c.deployments, what="deployment"))[0]
            assert dep["TaskGroups"]["g"]["RequireProgressBy"] != "0001-01-01T00:00:00Z"
            # the unhealthy alloc is released for replacement, the deployment keeps running a while
            a = await until(lambda: [a for a in c.allocs() if (a["DeploymentStatus"] or {}).get("Healthy") is False],
                            what="unhealthy")
            assert a[0]["DesiredTransition"]["Reschedule"] is True
            assert c.store.get("deployments", dep["ID"])["Status"] == "running"
            d = (await until(lambda: [d for d in c.deployments() if d["Status"] == "failed"], what="failed"))[0]
            assert d["StatusDescription"] == "Failed due to progress deadline"
        finally:
            await c.rt.shutdown()

    run(main())


def test_job_stop_cancels_deployment_and_stops_everything(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path, [node("n1")])
        await c.rt.start()
        try:
            j = job(count=2, update=fast_update(MinHealthyTime=int(30 * S)))
            c.register(j)
            await until(lambda: len([a for a in c.live() if a["ClientStatus"] == "running"]) == 2, what="running")
            await until(lambda: len(c.store.list("services")) == 2, what="services")
            stopped = copy.deepcopy(c.job())
            stopped["Stop"] = True
            c.register(stopped)
            d = (await until(lambda: [d for d in c.deployments() if d["Status"] == "cancelled"], what="cancel"))[0]
            assert d["StatusDescription"] == "Cancelled because job is stopped"
            await until(lambda: all(a["ClientStatus"] == "complete" for a in c.allocs()), what="complete")
            await until(lambda: c.job()["Status"] == "dead", what="dead")
            assert c.store.list("services") == []
            assert c.rt.runners == {}
            await asyncio.sleep(0)
        finally:
            await c.rt.shutdown()

    run(main())


def test_batch_job_completes_once(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path, [node("n1")])
        await c.rt.start()
        try:
            t = http_task(command=sys.executable, args=["-c", "print('done')"])
            j = job("batch", count=2, tasks=[t], checks=False)
            j["Type"] = "batch"
            j["TaskGroups"][0]["Services"] = None
            c.register(j)
            await until(lambda: c.job("batch")["Status"] == "dead", what="batch dead")
            allocs = c.allocs("batch")
            assert len(allocs) == 2 and all(a["ClientStatus"] == "complete" for a in allocs)
            ts = allocs[0]["TaskStates"]["web"]
            assert ts["State"] == "dead" and not ts["Failed"] and ts["Restarts"] == 0
            assert c.rt.alloc_log_path(allocs[0]["ID"], "web", "stdout").read_text() == "done\n"
            c.rt.create_eval(c.job("batch"), "job-register")  # re-evaluating places nothing new
            await asyncio.sleep(0.3)
            assert len(c.allocs("batch")) == 2
        finally:
            await c.rt.shutdown()

    run(main())
