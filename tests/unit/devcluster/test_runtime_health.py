"""Allocation health verdicts reach the deployment's counters, as in Nomad's state store.

Why: Nomad counts every client health verdict into the alloc's deployment
(updateDeploymentWithAlloc has no "is the deployment active" guard). With progress_deadline = 0
the first unhealthy alloc fails the deployment; its siblings that fail right after must still show
in UnhealthyAllocs, or a status view reports them as unknown. With progress_deadline > 0 the
deployment keeps running and counts each unhealthy alloc at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_runtime_support import Cluster, S, fast_update, http_task, job, node, run_bounded, until

NO_RESTART = {"Attempts": 0, "Interval": int(60 * S), "Delay": int(0.1 * S), "Mode": "fail"}


def failing_job(progress_deadline_s: float) -> dict[str, Any]:
    """Two allocs whose only task exits 1 shortly after starting, no restarts."""
    return job(count=2, tasks=[http_task(command="sh", args=["-c", "sleep 0.3; exit 1"])], restart=NO_RESTART,
               update=fast_update(MaxParallel=2, ProgressDeadline=int(progress_deadline_s * S)))


def test_every_failed_alloc_counts_unhealthy_after_the_deployment_failed(tmp_path: Path) -> None:
    c = Cluster(tmp_path, [node("n1")])

    async def body() -> None:
        await c.rt.start()
        try:
            c.register(failing_job(0))
            dep = await until(lambda: (d := c.deployments()) and d[-1]["Status"] == "failed" and d[-1], 15,
                              what="the deployment to fail")
            assert dep["StatusDescription"] == "Failed due to unhealthy allocations"
            await until(lambda: c.deployments()[-1]["TaskGroups"]["g"]["UnhealthyAllocs"] == 2, 10,
                        what="both unhealthy allocs counted")
            allocs = c.allocs()
            assert len(allocs) == 2
            assert all(a["ClientStatus"] == "failed" and a["DeploymentStatus"]["Healthy"] is False for a in allocs)
            final = c.deployments()[-1]
            assert final["Status"] == "failed" and final["TaskGroups"]["g"]["HealthyAllocs"] == 0
        finally:
            await c.rt.shutdown()

    run_bounded(body(), 60)


def test_unhealthy_allocs_show_at_once_while_progress_deadline_runs(tmp_path: Path) -> None:
    c = Cluster(tmp_path, [node("n1")])

    async def body() -> None:
        await c.rt.start()
        try:
            c.register(failing_job(30))
            await until(lambda: (d := c.deployments()) and d[-1]["TaskGroups"]["g"]["UnhealthyAllocs"] == 2, 10,
                        what="UnhealthyAllocs == 2")
            dep = c.deployments()[-1]
            assert dep["Status"] == "running" and dep["StatusDescription"] == "Deployment is running"
            assert all(a["DeploymentStatus"]["Healthy"] is False and a["DesiredTransition"]["Reschedule"] is True
                       for a in c.allocs())
        finally:
            await c.rt.shutdown()

    run_bounded(body(), 60)
