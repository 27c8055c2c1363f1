"""The cluster table is built from the four list replies (jobs, allocations, deployments, nodes)."""

from __future__ import annotations

from typing import Any

from nomad_triton.fleet.status import ClusterView, gpus_per_alloc, job_models, last_scaling_event


def full_job(jid: str, pool: str, count: int, gpus: int, models: str | None = "mlp,relu") -> dict[str, Any]:
    env = {"NOMAD_TRITON_MODELS": models} if models else {}
    devices = [{"Name": "nvidia/gpu", "Count": gpus}] if gpus else []
    return {"ID": jid, "NodePool": pool, "Version": 3, "TaskGroups": [
        {"Name": "triton", "Count": count, "Tasks": [{"Env": env, "Resources": {"Devices": devices}}]}]}


def alloc(jid: str, node: str, status: str = "running", healthy: bool | None = True, gpu_ids: int = 0) -> dict[str, Any]:
    devs = [{"Type": "gpu", "DeviceIDs": [f"g{i}" for i in range(gpu_ids)]}] if gpu_ids else []
    return {"ID": f"{jid}-{node}-{status}", "JobID": jid, "NodeID": node, "DesiredStatus": "run",
            "ClientStatus": status, "DeploymentStatus": {"Healthy": healthy},
            "AllocatedResources": {"Tasks": {"server": {"Devices": devs}}}}


def node(nid: str, pool: str, gpus: int) -> dict[str, Any]:
    devs = [{"Type": "gpu", "Instances": [{"ID": f"{nid}-{i}"} for i in range(gpus)]}] if gpus else []
    return {"ID": nid, "NodePool": pool, "NodeResources": {"Devices": devs}}


def test_rows_and_gpu_pools_from_list_replies() -> None:
    view = ClusterView(client=None, probe=False)  # type: ignore[arg-type]  # no request is made
    view.lists = {
        "jobs": [{"ID": "svc-a100", "Status": "running", "Type": "service"},
                 {"ID": "other", "Status": "running", "Type": "service"}],
        "allocs": [alloc("svc-a100", "n1", gpu_ids=2), alloc("svc-a100", "n1", healthy=None, gpu_ids=2),
                   alloc("svc-a100", "n1", status="failed", healthy=False, gpu_ids=2), alloc("other", "n0")],
        "deployments": [{"JobID": "svc-a100", "Status": "failed", "CreateIndex": 5},
                        {"JobID": "svc-a100", "Status": "running", "CreateIndex": 9}],
        "nodes": [node("n0", "default", 0), node("n1", "gpu-a100", 8)],
    }
    view._full = {"svc-a100": (1, full_job("svc-a100", "gpu-a100", 3, 2)),
                  "other": (1, full_job("other", "default", 1, 0, models=None))}
    view._scale = {"svc-a100": (1, {"TaskGroups": {"triton": {"Events": [
        {"Time": 1_000_000_000, "Message": "old", "Count": 1},
        {"Time": 2_000_000_000, "Message": "autoscaler: queue building", "Count": 3}]}}})}
    rows, pools = view.rows()
    [row] = rows  # "other" has no NOMAD_TRITON_MODELS: not a toolkit job
    assert (row.job, row.pool, row.version, row.desired, row.running, row.healthy) == ("svc-a100", "gpu-a100", 3, 3, 2, 1)
    assert row.deployment == "running" and row.models == 2 and row.models_ready == "-"
    assert row.gpus == 4 and "autoscaler: queue building (count 3)" in row.last_scaling
    by_pool = {p.pool: (p.gpus_used, p.gpus_free, p.gpus_total) for p in pools}
    assert by_pool == {"default": (0, 0, 0), "gpu-a100": (4, 4, 8)}
    view.close()


def test_helpers() -> None:
    assert job_models(full_job("x", "p", 1, 0, models="a,b")) == ["a", "b"]
    assert job_models(full_job("x", "p", 1, 0, models=None)) == []
    assert gpus_per_alloc(full_job("x", "p", 1, 2)) == 2
    assert last_scaling_event(None) == "-" and last_scaling_event({"TaskGroups": {"g": {"Events": []}}}) == "-"
    assert "error: refused" in last_scaling_event(
        {"TaskGroups": {"g": {"Events": [{"Time": 1, "Message": "refused", "Error": True}]}}})
