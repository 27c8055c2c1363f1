"""Runtime lifecycles with real processes: scaling, crash/restart/reschedule, blocked evals on GPU
exhaustion, canaries and promotion, auto-revert, alloc stop and job stop.
"""

from __future__ import annotations

import asyncio
import copy
import sys
from pathlib import Path
from typing import Any

import pytest
from test_runtime_support import Cluster, S, fast_update, http_task, job, node, run_bounded, until

from nomad_triton.devcluster.driver_raw_exec import group_alive
from nomad_triton.devcluster.errors import ApiError


def run(coro: Any, timeout: float = 90.0) -> None:
    run_bounded(coro, timeout)


def crash_task(code: int = 3, after: float = 0.1) -> dict[str, Any]:
    return http_task(command=sys.executable,
                     args=["-c", f"import sys,time; time.sleep({after}); sys.exit({code})"])


def _successful(c: Cluster, version: int) -> Any:
    return [d for d in c.deployments() if d["JobVersion"] == version and d["Status"] == "successful"]


def test_count_up_and_down(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path, [node("n1")])
        await c.rt.start()
        try:
            j = job(count=1, update=fast_update(MaxParallel=2))
            c.register(j)
            await until(lambda: _successful(c, 0), what="v0 healthy")
            first = c.live()[0]
            j3 = copy.deepcopy(j)
            j3["TaskGroups"][0]["Count"] = 3
            c.register(j3)
            dep = (await until(lambda: _successful(c, 1), what="v1 healthy"))[0]
            assert dep["TaskGroups"]["g"]["DesiredTotal"] == 3
            live = c.live()
            assert sorted(a["Name"] for a in live) == ["web.g[0]", "web.g[1]", "web.g[2]"]
            # the existing alloc was updated in place (same process, new job version)
            kept = c.store.get("allocs", first["ID"])
            assert kept["DesiredStatus"] == "run" and kept["Job"]["Version"] == 1
            assert kept["TaskStates"]["web"]["Restarts"] == 0
            j1 = copy.deepcopy(j)
            c.register(j1)  # back to count 1: the highest indexes stop
            await until(lambda: len(c.live()) == 1, what="count down")
            assert c.live()[0]["Name"] == "web.g[0]"
            stopped = [a for a in c.allocs() if a["DesiredStatus"] == "stop"]
            assert sorted(a["Name"] for a in stopped) == ["web.g[1]", "web.g[2]"]
            assert all(a["DesiredDescription"] == "alloc not needed due to job update" for a in stopped)
            await until(lambda: all(c.store.get("allocs", a["ID"])["ClientStatus"] == "complete"
                                    for a in stopped), what="stopped complete")
            ts = c.store.get("allocs", stopped[0]["ID"])["TaskStates"]["web"]
            assert ts["State"] == "dead" and ts["Failed"] is False
            assert [e["Type"] for e in ts["Events"]][-2:] == ["Killing", "Killed"]
            # their service registrations are gone
            await until(lambda: len([s for s in c.store.list("services")]) == 1, what="deregistered")
        finally:
            await c.rt.shutdown()

    run(main())


def test_crash_restarts_then_reschedules_then_gives_up(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path, [node("n1")])
        await c.rt.start()
        try:
            j = job(tasks=[crash_task()], checks=False,
                    restart={"Attempts": 1, "Interval": int(60 * S), "Delay": int(0.1 * S), "Mode": "fail"},
                    reschedule={"Attempts": 1, "Interval": int(3600 * S), "Delay": int(0.2 * S),
                                "DelayFunction": "constant", "MaxDelay": 0, "Unlimited": False})
            c.register(j)
            allocs = await until(lambda: len(c.allocs()) == 2 and c.allocs(), what="replacement alloc")
            first, second = allocs
            await until(lambda: c.store.get("allocs", second["ID"])["ClientStatus"] == "failed",
                        what="replacement failed")
            first = c.store.get("allocs", first["ID"])
            second = c.store.get("allocs", second["ID"])
            ts = first["TaskStates"]["web"]
            assert first["ClientStatus"] == "failed" and ts["Failed"] is True and ts["Restarts"] == 1
            types = [e["Type"] for e in ts["Events"]]
            assert types.count("Terminated") == 2 and "Restarting" in types and types[-1] == "Not Restarting"
            assert ts["Events"][-1]["DisplayMessage"] == \
                'Exceeded allowed attempts 1 in interval 1m0s and mode is "fail"'
            term = next(e for e in ts["Events"] if e["Type"] == "Terminated")
            assert term["ExitCode"] == 3 and term["DisplayMessage"] == "Exit Code: 3"
            # rescheduled after the policy delay through a follow-up evaluation
            assert first["DesiredStatus"] == "stop"
            assert first["DesiredDescription"] == "alloc was rescheduled because it failed"
            assert first["NextAllocation"] == second["ID"] and second["PreviousAllocation"] == first["ID"]
            assert first["FollowupEvalID"]
            follow = c.store.get("evals", first["FollowupEvalID"])
            assert follow["TriggeredBy"] == "alloc-failure" and follow["WaitUntil"]
            ev = second["RescheduleTracker"]["Events"]
            assert len(ev) == 1 and ev[0]["PrevAllocID"] == first["ID"] and ev[0]["Delay"] == int(0.2 * S)
            assert second["Name"] == first["Name"] == "web.g[0]"
            # attempts exhausted: no third alloc, and the job ends dead
            await until(lambda: c.job()["Status"] == "dead", what="job dead")
            await asyncio.sleep(0.5)
            assert len(c.allocs()) == 2
        finally:
            await c.rt.shutdown()

    run(main())


def test_gpu_exhaustion_blocks_then_places_when_capacity_frees(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path, [node("gpu1", gpus=1), node("cpu1")])
        await c.rt.start()
        try:
            a = job("a", tasks=[http_task(gpus=1)], checks=False)
            c.register(a)
            await until(lambda: [x for x in c.live("a") if x["ClientStatus"] == "running"], what="a runs")
            b = job("b", tasks=[http_task(gpus=1)], checks=False)
            c.register(b)
            ev = (await until(lambda: [e for e in c.evals("b") if e["TriggeredBy"] == "job-register"
                                       and e["Status"] == "complete"], what="b eval"))[0]
            m = ev["FailedTGAllocs"]["g"]
            assert m["NodesEvaluated"] == 2 and m["NodesAvailable"] == {"dc1": 2}
            assert m["ConstraintFiltered"]["missing devices"] == 1  # the cpu-only node
            assert m["NodesExhausted"] == 1
            # Each node once, under Nomad's own key: the reasons add up to the node counts.
            assert m["DimensionExhausted"] == {"devices: no devices match request": 1}
            assert sum(m["ConstraintFiltered"].values()) == m["NodesFiltered"] == 1
            blocked = c.store.get("evals", ev["BlockedEval"])
            assert blocked["Status"] == "blocked" and blocked["TriggeredBy"] == "queued-allocs"
            assert blocked["FailedTGAllocs"]["g"]["NodesExhausted"] == 1
            assert ev["QueuedAllocations"] == {"g": 1}
            assert c.job("b")["Status"] == "pending" and c.live("b") == []
            # stopping job a frees the GPU: the blocked evaluation places b
            stopped = copy.deepcopy(c.job("a"))
            stopped["Stop"] = True
            c.register(stopped)
            placed = await until(lambda: [x for x in c.live("b") if x["ClientStatus"] == "running"],
                                 what="b placed")
            assert placed[0]["NodeName"] == "gpu1"
            assert placed[0]["AllocatedResources"]["Tasks"]["web"]["Devices"][0]["DeviceIDs"] == ["GPU-gpu1-0"]
            await until(lambda: c.store.get("evals", blocked["ID"])["Status"] == "complete", what="unblocked")
            await until(lambda: c.job("a")["Status"] == "dead", what="a dead")
        finally:
            await c.rt.shutdown()

    run(main())


def test_infeasible_gpu_count_counts_the_node_once(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path, [node("gpu1", gpus=2)])
        await c.rt.start()
        try:
            c.register(job(tasks=[http_task(gpus=4)], checks=False))
            ev = (await until(lambda: [e for e in c.evals() if e["Status"] == "complete"], what="eval"))[0]
            m = ev["FailedTGAllocs"]["g"]
            # Nomad counts the node once, under its own key (no devcluster-only companion key).
            assert m["ConstraintFiltered"] == {"missing devices": 1}
            assert m["NodesFiltered"] == 1
            # the same answer from plan, which writes nothing
            before = c.store.index
            out = c.rt.plan(job(tasks=[http_task(gpus=4)], checks=False))
            assert out["FailedTGAllocs"]["g"]["ConstraintFiltered"]["missing devices"] == 1
            assert out["Annotations"]["DesiredTGUpdates"]["g"]["Place"] == 1
            assert c.store.index == before
        finally:
            await c.rt.shutdown()

    run(main())


def test_canary_waits_for_promotion_then_rolls(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path, [node("n1")])
        await c.rt.start()
        try:
            v0 = job(count=2, update=fast_update(Canary=1))
            c.register(v0)
            await until(lambda: _successful(c, 0), what="v0")
            old_ids = {a["ID"] for a in c.live()}
            v1 = copy.deepcopy(v0)
            v1["TaskGroups"][0]["Tasks"][0]["Env"] = {"GREETING": "v1"}
            c.register(v1)
            dep = (await until(lambda: [d for d in c.deployments() if d["JobVersion"] == 1], what="dep v1"))[0]
            assert dep["StatusDescription"] == "Deployment is running but requires manual promotion"
            assert dep["TaskGroups"]["g"]["DesiredCanaries"] == 1
            canary = (await until(lambda: [a for a in c.live() if a["ID"] not in old_ids], what="canary"))[0]
            assert canary["DeploymentStatus"]["Canary"] is True
            assert {a["ID"] for a in c.live()} >= old_ids  # old allocs keep running beside the canary
            with pytest.raises(ApiError) as err:
                c.rt.promote_deployment(dep["ID"], None)
            assert 'Task group "g" has 0/1 healthy allocations' in err.value.message
            await until(lambda: c.store.get("allocs", canary["ID"])["DeploymentStatus"]["Healthy"] is True,
                        what="canary healthy")
            await asyncio.sleep(0.3)
            assert len(c.live()) == 3 and not _successful(c, 1)  # still waiting for promotion
            ev = c.rt.promote_deployment(dep["ID"], None)
            assert ev["TriggeredBy"] == "deployment-watcher" and ev["DeploymentID"] == dep["ID"]
            assert c.store.get("deployments", dep["ID"])["TaskGroups"]["g"]["Promoted"] is True
            final = (await until(lambda: _successful(c, 1), what="v1 successful"))[0]
            assert final["TaskGroups"]["g"]["HealthyAllocs"] == 2
            live = c.live()
            assert len(live) == 2 and all(a["Job"]["Version"] == 1 for a in live)
            assert canary["ID"] in {a["ID"] for a in live}
            assert sorted(a["Name"] for a in live) == ["web.g[0]", "web.g[1]"]
            with pytest.raises(ApiError) as err:
                c.rt.promote_deployment(dep["ID"], None)
            assert err.value.message == "can't promote terminal deployment"
        finally:
            await c.rt.shutdown()

    run(main())


def test_auto_promote_and_unhealthy_auto_revert(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path, [node("n1")])
        await c.rt.start()
        try:
            v0 = job(count=1, update=fast_update(Canary=1, AutoPromote=True, AutoRevert=True))
            c.register(v0)
            await until(lambda: _successful(c, 0), what="v0")
            v1 = copy.deepcopy(v0)
            v1["TaskGroups"][0]["Tasks"][0]["Env"] = {"GREETING": "v1"}
            c.register(v1)
            await until(lambda: _successful(c, 1), what="v1 auto-promoted")
            assert c.job()["Stable"] is True
            # v2 crashes: the deployment fails on the unhealthy canary and reverts to v1
            v2 = copy.deepcopy(v1)
            v2["TaskGroups"][0]["Tasks"] = [crash_task()]
            v2["TaskGroups"][0]["RestartPolicy"] = {"Attempts": 0, "Interval": int(60 * S), "Delay": 0,
                                                    "Mode": "fail"}
            c.register(v2)
            failed = (await until(lambda: [d for d in c.deployments() if d["JobVersion"] == 2
                                           and d["Status"] == "failed"], what="v2 failed"))[0]
            assert failed["StatusDescription"] == \
                "Failed due to unhealthy allocations - rolling back to job version 1"
            reverted = await until(lambda: c.job()["Version"] == 3 and c.job(), what="revert registered")
            assert reverted["TaskGroups"][0]["Tasks"][0]["Env"] == {"GREETING": "v1"}
            await until(lambda: _successful(c, 3), what="v3 (revert) successful")
            live = c.live()
            assert len(live) == 1 and live[0]["Job"]["Version"] in (1, 3)
        finally:
            await c.rt.shutdown()

    run(main())


def test_fail_deployment_and_stop_alloc_and_shutdown_kills_everything(tmp_path: Path) -> None:
    async def main() -> None:
        c = Cluster(tmp_path, [node("n1")])
        await c.rt.start()
        pgids: list[int] = []
        try:
            slow = fast_update(MinHealthyTime=int(30 * S))
            c.register(job(count=2, update=slow))
            dep = (await until(c.deployments, what="dep"))[0]
            await until(lambda: len([a for a in c.live() if a["ClientStatus"] == "running"]) == 2, what="running")
            c.rt.fail_deployment(dep["ID"])
            d = c.store.get("deployments", dep["ID"])
            assert d["Status"] == "failed" and d["StatusDescription"] == "Deployment marked as failed"
            with pytest.raises(ApiError) as err:
                c.rt.fail_deployment(dep["ID"])
            assert err.value.message == "can't fail terminal deployment"
            victim = c.live()[0]
            ev = c.rt.stop_alloc(victim["ID"])
            assert ev["TriggeredBy"] == "alloc-stop"
            repl = await until(lambda: [a for a in c.live() if a["PreviousAllocation"] == victim["ID"]
                                        and a["ClientStatus"] == "running"], what="replacement")
            assert repl[0]["Name"] == victim["Name"]
            old = c.store.get("allocs", victim["ID"])
            assert old["DesiredStatus"] == "stop" and old["DesiredDescription"] == "alloc is being migrated"
            pgids = [t.proc.pgid for r in c.rt.runners.values() for t in r.tasks if t.proc is not None]
            assert len(pgids) >= 2
        finally:
            await c.rt.shutdown()
        assert not any(group_alive(g) for g in pgids)
        assert c.rt.runners == {} or all(r.main is None or r.main.done() for r in c.rt.runners.values())

    run(main())
