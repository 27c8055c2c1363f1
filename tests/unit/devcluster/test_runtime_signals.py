"""Process-group semantics of raw_exec (kill_signal, KillTimeout escalation, grandchildren) and the
deployment/plan bookkeeping around job updates, against real processes.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from typing import Any

from test_runtime_support import Cluster, S, fast_update, http_task, job, node, run_bounded, until

# Writes its own pid and a grandchild's pid, reports the signal it got, ignores SIGTERM if asked.
FAMILY = (
    "import os,signal,subprocess,sys,time\n"
    "d=os.environ['NOMAD_TASK_DIR']\n"
    "child=subprocess.Popen([sys.executable,'-c','import time; time.sleep(120)'])\n"
    "open(d+'/pids','w').write(f'{os.getpid()} {child.pid}')\n"
    "def note(sig, frame):\n"
    "    open(d+'/signal','w').write(str(sig))\n"
    "    if os.environ.get('STUBBORN') != '1': sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, note); signal.signal(signal.SIGINT, note)\n"
    "while True: time.sleep(0.05)\n"
)


def run(coro: Any, timeout: float = 90.0) -> None:
    run_bounded(coro, timeout)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def family_task(**kw: Any) -> dict[str, Any]:
    t = http_task(command=sys.executable, args=["-c", FAMILY], env=kw.pop("env", {}))
    t.update(kw)
    return t


async def _pids(c: Cluster, a: dict[str, Any]) -> tuple[Path, list[int]]:
    d = c.rt.state_dir / "allocs" / a["ID"] / "web" / "local"
    await until(lambda: (d / "pids").exists() and (d / "pids").read_text().strip(), what="pids")
    return d, [int(x) for x in (d / "pids").read_text().split()]


def test_kill_signal_reaches_the_group_and_grandchildren_die(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path, [node("n1")])
        await c.rt.start()
        try:
            j = job(tasks=[family_task(KillSignal="SIGINT")], checks=False)
            c.register(j)
            a = (await until(lambda: [a for a in c.live() if a["ClientStatus"] == "running"], what="running"))[0]
            d, pids = await _pids(c, a)
            assert all(alive(p) for p in pids)
            stopped = copy.deepcopy(c.job())
            stopped["Stop"] = True
            c.register(stopped)
            await until(lambda: c.store.get("allocs", a["ID"])["ClientStatus"] == "complete", what="complete")
            assert (d / "signal").read_text() == "2"  # SIGINT, as kill_signal asked
            await until(lambda: not any(alive(p) for p in pids), timeout=5, what="group gone")
        finally:
            await c.rt.shutdown()

    run(main())


def test_kill_timeout_escalates_to_sigkill(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path, [node("n1")])
        await c.rt.start()
        try:
            t = family_task(env={"STUBBORN": "1"}, KillTimeout=int(0.4 * S))
            c.register(job(tasks=[t], checks=False))
            a = (await until(lambda: [a for a in c.live() if a["ClientStatus"] == "running"], what="running"))[0]
            d, pids = await _pids(c, a)
            c.rt.stop_alloc(a["ID"])
            await until(lambda: c.store.get("allocs", a["ID"])["ClientStatus"] == "complete", what="killed")
            assert (d / "signal").read_text() == "15"  # got SIGTERM, ignored it
            events = c.store.get("allocs", a["ID"])["TaskStates"]["web"]["Events"]
            killing = next(e for e in events if e["Type"] == "Killing")
            assert killing["DisplayMessage"] == "Sent interrupt. Waiting 400ms before force killing"
            assert events[-1]["Type"] == "Killed"
            assert not any(alive(p) for p in pids)
        finally:
            await c.rt.shutdown()

    run(main())


def test_shutdown_kills_stubborn_groups_with_grandchildren(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path, [node("n1")])
        await c.rt.start()
        all_pids: list[int] = []
        try:
            t = family_task(env={"STUBBORN": "1"}, KillTimeout=int(0.3 * S))
            c.register(job(count=2, tasks=[t], checks=False))
            allocs = await until(lambda: len([a for a in c.live() if a["ClientStatus"] == "running"]) == 2
                                 and c.live(), what="running")
            for a in allocs:
                all_pids += (await _pids(c, a))[1]
            assert len(all_pids) == 4 and all(alive(p) for p in all_pids)
        finally:
            await c.rt.shutdown()
        assert not any(alive(p) for p in all_pids)

    run(main())


def test_newer_version_cancels_running_deployment_and_plan_writes_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path, [node("n1")])
        await c.rt.start()
        try:
            v0 = job(count=1, update=fast_update(MinHealthyTime=int(30 * S)))
            c.register(v0)
            await until(lambda: [a for a in c.live() if a["ClientStatus"] == "running"], what="running")
            # plan a count change and a destructive change: annotations only, no writes
            before = (c.store.index, len(c.store.list("allocs")), len(c.store.list("evals")))
            scaled = copy.deepcopy(c.job())
            scaled["TaskGroups"][0]["Count"] = 3
            out = c.rt.plan(scaled)
            assert out["Annotations"]["DesiredTGUpdates"]["g"]["Place"] == 2
            assert out["Annotations"]["DesiredTGUpdates"]["g"]["InPlaceUpdate"] == 1
            assert out["FailedTGAllocs"] is None
            changed = copy.deepcopy(c.job())
            changed["TaskGroups"][0]["Tasks"][0]["Env"] = {"GREETING": "v1"}
            out = c.rt.plan(changed)
            assert out["Annotations"]["DesiredTGUpdates"]["g"]["DestructiveUpdate"] == 1
            same = c.rt.plan(copy.deepcopy(c.job()))
            assert same["Annotations"]["DesiredTGUpdates"]["g"]["Ignore"] == 1
            assert (c.store.index, len(c.store.list("allocs")), len(c.store.list("evals"))) == before
            v1 = copy.deepcopy(v0)
            v1["TaskGroups"][0]["Tasks"][0]["Env"] = {"GREETING": "v1"}
            v1["TaskGroups"][0]["Update"] = fast_update()
            c.register(v1)
            old = (await until(lambda: [d for d in c.deployments() if d["JobVersion"] == 0
                                        and d["Status"] == "cancelled"], what="cancelled"))[0]
            assert old["StatusDescription"] == "Cancelled due to newer version of job"
            await until(lambda: [d for d in c.deployments() if d["JobVersion"] == 1
                                 and d["Status"] == "successful"], what="v1 successful")
            assert [a["Job"]["Version"] for a in c.live()] == [1]
        finally:
            await c.rt.shutdown()

    run(main())
