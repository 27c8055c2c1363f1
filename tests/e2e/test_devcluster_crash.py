"""devcluster survives kill -9 as a Nomad agent does: state from SQLite, tasks re-attached.

Each test runs a real devcluster subprocess, kills it with SIGKILL (no cleanup of any kind runs),
starts it again on the same state dir as `nomad-triton dev up` does, and checks what a user would
check: the job and its versions, the same allocations with the same task processes, deployments
that go on, indexes that keep increasing, nothing acknowledged lost, and no process left unowned.
Tasks are light raw_exec `python -m http.server` processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nomad_triton.devcluster import task_handles
from tests.e2e.conftest import wait_until
from tests.e2e.crash_helpers import Crashable, latest_deployment, running_allocs, task_handle

pytestmark = pytest.mark.e2e
S = 1_000_000_000

ACL_CONFIG = """
[server]
acl = true
[acl.policies.deployer]
namespace.default.capabilities = ["list-jobs", "read-job"]
[[acl.tokens]]
name = "ci"
policies = ["deployer"]
"""


def web_job(job_id: str, count: int = 2, *, min_healthy_s: float = 0.5, meta: str = "1",
            restart: dict[str, Any] | None = None, reschedule: dict[str, Any] | None = None) -> dict[str, Any]:
    task = {"Name": "web", "Driver": "raw_exec",
            "Config": {"command": sys.executable,
                       "args": ["-m", "http.server", "${NOMAD_PORT_http}", "--bind", "127.0.0.1"]},
            "Resources": {"CPU": 20, "MemoryMB": 32}, "KillTimeout": 2 * S}
    if restart is not None:
        task["RestartPolicy"] = restart
    group: dict[str, Any] = {
        "Name": "g", "Count": count, "Tasks": [task], "Meta": {"rev": meta},
        "Networks": [{"DynamicPorts": [{"Label": "http"}]}],
        "Services": [{"Name": f"{job_id}-web", "PortLabel": "http", "Provider": "nomad",
                      "Checks": [{"Name": "alive", "Type": "http", "Path": "/", "Interval": 1 * S,
                                  "Timeout": 1 * S}]}],
        "Update": {"MaxParallel": 1, "HealthCheck": "checks", "MinHealthyTime": int(min_healthy_s * S),
                   "HealthyDeadline": 60 * S, "ProgressDeadline": 120 * S},
    }
    if reschedule is not None:
        group["ReschedulePolicy"] = reschedule
    return {"ID": job_id, "Name": job_id, "Type": "service", "Datacenters": ["dc1"], "TaskGroups": [group]}


@pytest.fixture()
def crashable(tmp_path: Path) -> Iterator[Any]:
    made: list[Crashable] = []

    def make(config: str | None = None) -> Crashable:
        cfg = None
        if config is not None:
            cfg = tmp_path / f"devcluster-{len(made)}.toml"
            cfg.write_text(config)
        dc = Crashable(tmp_path / f"state-{len(made)}", cfg)
        made.append(dc)
        dc.start()
        return dc

    yield make
    problems = [p for dc in made for p in dc.close()]
    assert not problems, "; ".join(problems)


def register(c: httpx.Client, job: dict[str, Any], **body: Any) -> httpx.Response:
    return c.post("/v1/jobs", json={"Job": job, **body})


def wait_deployment(c: httpx.Client, job_id: str, version: int, status: str = "successful",
                    timeout: float = 90) -> dict[str, Any]:
    return wait_until(lambda: (d := latest_deployment(c, job_id)) is not None and d["JobVersion"] == version
                      and d["Status"] == status and d, timeout, f"{job_id} v{version} deployment {status}")


def pids_of(dc: Crashable, allocs: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """alloc id -> (task pid, its start time) from the task handles devcluster keeps."""
    out = {}
    for a in allocs:
        h = task_handle(dc, a["ID"], "web")
        assert h is not None, f"no task handle for alloc {a['ID']}"
        out[a["ID"]] = (h.pid, h.pid_start)
    return out


def serves(c: httpx.Client, alloc: dict[str, Any]) -> bool:
    full = c.get(f"/v1/allocation/{alloc['ID']}").json()
    port = full["AllocatedResources"]["Shared"]["Ports"][0]["Value"]
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def executors_alive(dc: Crashable) -> set[int]:
    return set(task_handles.executors_of(dc.state_dir))


def test_kill9_while_idle_restores_everything_and_reattaches(crashable: Any) -> None:
    dc: Crashable = crashable(ACL_CONFIG)
    mgmt_secret, ci_secret = dc.token(), (dc.state_dir / "ci.token").read_text().strip()
    with dc.http() as c:
        assert register(c, web_job("web")).status_code == 200
        wait_deployment(c, "web", 0)
        assert register(c, web_job("web", meta="2")).status_code == 200  # a second version
        wait_deployment(c, "web", 1)
        assert c.put("/v1/var/app/config", json={"Items": {"k": "v"}}).status_code == 200
        lock = c.put("/v1/var/app/leader?lock-acquire", json={"Lock": {"TTL": "30s"}}).json()["Lock"]
        scaled = c.post("/v1/job/web/scale", json={"Target": {"Group": "g"}, "Message": "recorded only"})
        assert scaled.status_code == 200
        job = c.get("/v1/job/web").json()
        versions = [v["Version"] for v in c.get("/v1/job/web/versions").json()["Versions"]]
        before = running_allocs(c, "web")
        index_before = int(c.get("/v1/jobs").headers["X-Nomad-Index"])
        evals_before = {e["ID"] for e in c.get("/v1/evaluations").json()}
        deps_before = [(d["ID"], d["Status"]) for d in c.get("/v1/deployments").json()]
    assert len(before) == 2 and versions == [1, 0]
    pids = pids_of(dc, before)

    dc.kill9()
    assert all(task_handles.is_same_process(*p) for p in pids.values()), "tasks must outlive devcluster"
    dc.start()

    assert dc.token() == mgmt_secret and (dc.state_dir / "ci.token").read_text().strip() == ci_secret
    with dc.http() as c:
        again = c.get("/v1/job/web").json()
        assert (again["Version"], again["JobModifyIndex"], again["Stable"]) == \
            (job["Version"], job["JobModifyIndex"], job["Stable"])
        assert [v["Version"] for v in c.get("/v1/job/web/versions").json()["Versions"]] == versions
        assert {e["ID"] for e in c.get("/v1/evaluations").json()} >= evals_before
        assert [(d["ID"], d["Status"]) for d in c.get("/v1/deployments").json()] == deps_before
        after = wait_until(lambda: len(running_allocs(c, "web")) == 2 and running_allocs(c, "web"), 30,
                           "allocations running again")
        assert {a["ID"] for a in after} == {a["ID"] for a in before}
        assert pids_of(dc, after) == pids, "re-attached to the same processes"
        assert all(serves(c, a) for a in after)
        assert c.get("/v1/var/app/config").json()["Items"] == {"k": "v"}
        taken = c.put("/v1/var/app/leader?lock-acquire", json={"Lock": {"TTL": "30s"}})
        assert taken.status_code == 409, "the lock is still held by its holder"
        renewed = c.put("/v1/var/app/leader?lock-renew", json={"Lock": {"ID": lock["ID"]}})
        assert renewed.status_code == 200, renewed.text
        events = c.get("/v1/job/web/scale").json()["TaskGroups"]["g"]["Events"]
        assert [e["Message"] for e in events] == ["recorded only"]
        ci = httpx.get(f"{dc.addr}/v1/jobs", headers={"X-Nomad-Token": ci_secret}, timeout=10)
        assert ci.status_code == 200 and [j["ID"] for j in ci.json()] == ["web"]

        # indexes go on increasing: EnforceIndex and blocking queries keep their meaning
        index_after = int(c.get("/v1/jobs").headers["X-Nomad-Index"])
        assert index_after >= index_before
        stale = register(c, web_job("web", meta="3"), EnforceIndex=True, JobModifyIndex=job["JobModifyIndex"] - 1)
        assert stale.status_code == 500 and stale.text.startswith("Enforcing job modify index")
        woke: dict[str, Any] = {}

        def block() -> None:
            with dc.http(timeout=60) as bc:
                r = bc.get("/v1/job/web", params={"index": again["ModifyIndex"], "wait": "30s"})
                woke.update(index=int(r.headers["X-Nomad-Index"]), version=r.json()["Version"], at=time.monotonic())

        waiter = threading.Thread(target=block)
        waiter.start()
        time.sleep(0.5)
        sent = time.monotonic()
        ok = register(c, web_job("web", meta="3"), EnforceIndex=True, JobModifyIndex=job["JobModifyIndex"])
        assert ok.status_code == 200, ok.text
        waiter.join(40)
        assert woke.get("version") == 2 and woke["index"] > index_before and woke["at"] - sent < 10, woke
        assert ok.json()["JobModifyIndex"] > index_before
        wait_deployment(c, "web", 2)
        now_running = running_allocs(c, "web")
        # nothing unowned: every executor of this state dir belongs to a running allocation
        wait_until(lambda: executors_alive(dc) == {task_handle(dc, a["ID"], "web").pgid  # type: ignore[union-attr]
                                                   for a in now_running}, 20, "only running allocs' executors")


def test_kill9_mid_deployment_the_deployment_goes_on(crashable: Any) -> None:
    dc: Crashable = crashable()
    with dc.http() as c:
        assert register(c, web_job("roll", count=3, min_healthy_s=2.0)).status_code == 200
        first = wait_until(lambda: running_allocs(c, "roll"), 60, "first allocation running")
        dep = latest_deployment(c, "roll")
        assert dep is not None and dep["Status"] == "running", dep
        pids = pids_of(dc, first)
    dc.kill9()
    dc.start()
    with dc.http() as c:
        done = wait_deployment(c, "roll", 0, timeout=120)
        assert done["ID"] == dep["ID"] and done["TaskGroups"]["g"]["HealthyAllocs"] == 3
        allocs = running_allocs(c, "roll")
        assert len(allocs) == 3 and len(c.get("/v1/job/roll/allocations").json()) == 3, "nothing placed twice"
        assert all(pids_of(dc, [a])[a["ID"]] == pids[a["ID"]] for a in allocs if a["ID"] in pids)
        assert set(pids) <= {a["ID"] for a in allocs}
    assert len(executors_alive(dc)) == 3


def test_power_cut_during_a_burst_loses_no_acknowledged_registration(crashable: Any) -> None:
    """100 registrations from 4 clients; the 30th acknowledgement pulls the plug (SIGKILL) while
    the other clients have requests in flight. Every acknowledged write must be there after."""
    dc: Crashable = crashable()
    assert dc.running is not None
    pid = dc.running.pid
    dc.remember()
    acked: dict[str, int] = {}
    lock = threading.Lock()

    def burst(worker: int) -> None:
        with dc.http(timeout=5) as c:
            for i in range(25):
                job_id = f"burst-{worker}-{i:02d}"
                try:
                    r = register(c, web_job(job_id, count=0))
                except httpx.HTTPError:
                    return  # the cluster is gone: this one was never acknowledged
                if r.status_code != 200:
                    return
                with lock:
                    acked[job_id] = r.json()["JobModifyIndex"]
                    if len(acked) == 30:
                        os.kill(pid, signal.SIGKILL)

    workers = [threading.Thread(target=burst, args=(w,)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    wait_until(lambda: task_handles.start_time(pid) is None, 10, "devcluster to die")
    dc.running = None
    assert 30 <= len(acked) < 100, f"the power cut must land mid-burst ({len(acked)} acknowledged)"
    dc.start()
    with dc.http() as c:
        stored = {j["ID"]: j["JobModifyIndex"] for j in c.get("/v1/jobs", params={"prefix": "burst-"}).json()}
        lost = {k: v for k, v in acked.items() if stored.get(k) != v}
        assert not lost, f"acknowledged registrations lost or changed: {lost}"
        r = register(c, web_job("after-the-cut", count=0))
        assert r.json()["JobModifyIndex"] > max(acked.values())


def test_task_that_died_while_down_is_restarted_by_its_restart_policy(crashable: Any) -> None:
    dc: Crashable = crashable()
    restart = {"Attempts": 2, "Interval": 60 * S, "Delay": int(0.2 * S), "Mode": "fail"}
    with dc.http() as c:
        assert register(c, web_job("heal", count=1, restart=restart)).status_code == 200
        wait_deployment(c, "heal", 0)
        [alloc] = running_allocs(c, "heal")
    handle = task_handle(dc, alloc["ID"], "web")
    assert handle is not None
    dc.kill9()
    os.kill(handle.pid, signal.SIGKILL)  # the task dies while nobody watches
    wait_until(lambda: not handle.executor_alive(), 10, "executor to record the exit")
    dc.start()
    with dc.http() as c:
        again = wait_until(lambda: [a for a in running_allocs(c, "heal")
                                    if a["TaskStates"]["web"]["Restarts"] == 1], 60, "task restarted in place")
        assert again[0]["ID"] == alloc["ID"]
        events = again[0]["TaskStates"]["web"]["Events"]
        assert any(e["Type"] == "Terminated" and e["Signal"] == 9 for e in events), events
        assert any(e["Type"] == "Restarting" for e in events)
        new = task_handle(dc, alloc["ID"], "web")
        assert new is not None and new.pid != handle.pid
        wait_until(lambda: serves(c, again[0]), 30, "the restarted task serving")


def test_task_that_cannot_be_reattached_is_failed_and_rescheduled(crashable: Any) -> None:
    dc: Crashable = crashable()
    no_restart = {"Attempts": 0, "Interval": 60 * S, "Delay": int(0.2 * S), "Mode": "fail"}
    resched = {"Attempts": 1, "Interval": 3600 * S, "Delay": int(0.2 * S), "DelayFunction": "constant",
               "Unlimited": False}
    with dc.http() as c:
        assert register(c, web_job("lost", count=1, restart=no_restart, reschedule=resched)).status_code == 200
        wait_deployment(c, "lost", 0)
        [alloc] = running_allocs(c, "lost")
    handle = task_handle(dc, alloc["ID"], "web")
    assert handle is not None
    dc.kill9()
    os.killpg(handle.pgid, signal.SIGKILL)  # executor and task gone: no exit status anywhere
    wait_until(lambda: not handle.executor_alive(), 10, "task group to die")
    dc.start()
    with dc.http() as c:
        old = wait_until(lambda: (a := c.get(f"/v1/allocation/{alloc['ID']}").json())["ClientStatus"] == "failed"
                         and a, 30, "the lost alloc marked failed")
        assert "exit status unknown" in old["TaskStates"]["web"]["Events"][-2]["DisplayMessage"] \
            or any("exit status unknown" in e["DisplayMessage"] for e in old["TaskStates"]["web"]["Events"])
        repl = wait_until(lambda: [a for a in running_allocs(c, "lost") if a["PreviousAllocation"] == alloc["ID"]],
                          60, "a replacement allocation")
        assert repl[0]["ID"] != alloc["ID"]


def test_executor_without_handle_is_stopped_on_restart(crashable: Any, tmp_path: Path) -> None:
    """devcluster died between starting a task and recording its handle: the orphan is found by
    its executor's command line and stopped; nothing adopts a process it cannot identify."""
    dc: Crashable = crashable()
    dc.kill9()
    handles = dc.state_dir / "allocs" / "0000dead-0000-0000-0000-000000000000" / task_handles.HANDLE_DIR
    handles.mkdir(parents=True)
    read_fd, write_fd = os.pipe()
    orphan = subprocess.Popen([sys.executable, "-I", "-S", task_handles.EXECUTOR_SCRIPT, str(write_fd),
                               str(handles / "web.exit.json")],
                              pass_fds=(write_fd,), start_new_session=True, stdin=subprocess.PIPE)
    os.close(write_fd)
    assert orphan.stdin is not None
    orphan.stdin.write(b"sleep\x00300")
    orphan.stdin.close()
    with os.fdopen(read_fd) as fh:
        assert fh.readline().startswith("ok ")
    dc.groups_seen.add(orphan.pid)
    assert orphan.pid in executors_alive(dc)
    dc.start()
    assert orphan.wait(timeout=20) == -signal.SIGKILL
    assert orphan.pid not in executors_alive(dc)


def test_dev_down_then_up_brings_the_same_allocations_back(crashable: Any) -> None:
    """A graceful stop stops every task (nothing outlives `dev down`) but is no cluster decision:
    `dev up` finds the allocations as they were and restarts their tasks in place."""
    dc: Crashable = crashable()
    with dc.http() as c:
        assert register(c, web_job("again", count=1)).status_code == 200
        wait_deployment(c, "again", 0)
        [alloc] = running_allocs(c, "again")
    before = task_handle(dc, alloc["ID"], "web")
    assert before is not None
    dc.remember()
    assert dc.close() == []
    assert not executors_alive(dc) and not task_handles.is_same_process(before.pid, before.pid_start)
    dc.start()
    with dc.http() as c:
        [again] = wait_until(lambda: [a for a in running_allocs(c, "again")
                                      if a["TaskStates"]["web"]["Restarts"] == 1], 60, "task restarted in place")
        assert again["ID"] == alloc["ID"]
        wait_until(lambda: serves(c, again), 30, "the restarted task serving")
        events = again["TaskStates"]["web"]["Events"]
        assert any(e["Type"] == "Terminated" and e["Signal"] == signal.SIGTERM for e in events), events
        assert (latest_deployment(c, "again") or {}).get("Status") == "successful"


def test_dev_down_after_a_crash_stops_the_tasks_it_left(crashable: Any) -> None:
    from tests.e2e.cli_helpers import run_cli

    dc: Crashable = crashable()
    with dc.http() as c:
        assert register(c, web_job("left", count=1)).status_code == 200
        [alloc] = wait_until(lambda: running_allocs(c, "left"), 60, "task running")
    handle = task_handle(dc, alloc["ID"], "web")
    assert handle is not None
    addr = dc.addr
    dc.kill9()
    assert task_handles.is_same_process(handle.pid, handle.pid_start)
    res = run_cli(["dev", "down", "--state-dir", str(dc.state_dir)], addr, timeout=60)
    assert res.code == 0, res.text
    assert "devcluster is not running" in res.out and f"[{handle.pgid}]" in res.out, res.out
    assert not task_handles.is_same_process(handle.pid, handle.pid_start)
    assert not executors_alive(dc)
