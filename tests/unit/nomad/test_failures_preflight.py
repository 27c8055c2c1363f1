"""Pure parts: placement explanations, task events, GPU capacity arithmetic, deployment classification."""

from __future__ import annotations

from nomad_triton.nomad import failures, preflight
from nomad_triton.nomad.watch import DeploymentState, Outcome, classify

GPU_METRIC = {
    "NodesEvaluated": 2,
    "NodesFiltered": 1,
    "NodesAvailable": {"dc1": 2},
    "ConstraintFiltered": {"missing devices": 1},
    "NodesExhausted": 1,
    "DimensionExhausted": {"devices: no devices match request": 1},
    "CoalescedFailures": 1,
}


def test_explain_placement_names_device_and_counts() -> None:
    lines = failures.explain_failed_tg_allocs({"triton": GPU_METRIC})
    assert lines[0] == 'Task group "triton" failed to place 2 allocation(s):'
    assert any("devices: no devices match request" in line and "exhausted on 1 node" in line for line in lines)
    assert any("Resources exhausted on 1 node(s)" in line for line in lines)
    assert any("missing devices" in line and "excluded by filter" in line for line in lines)


def test_explain_placement_names_the_requested_devices_from_the_job() -> None:
    # Nomad's keys do not say which device; the job does (GPU_METRIC has one reason per node).
    job = {"TaskGroups": [{"Name": "triton", "Tasks": [
        {"Name": "server", "Resources": {"Devices": [{"Name": "nvidia/gpu", "Count": 4}]}}]},
        {"Name": "other", "Tasks": [{"Name": "x", "Resources": {"Devices": [{"Name": "fpga"}]}}]}]}
    assert failures.device_requests(job, "triton") == ["nvidia/gpu x4"]
    assert failures.device_requests(job, "missing") == [] and failures.device_requests(None, "triton") == []
    lines = failures.explain_failed_tg_allocs({"triton": GPU_METRIC}, job)
    assert any("missing devices" in line and "no node has the requested device: nvidia/gpu x4" in line
               for line in lines), lines
    assert any("no devices match request" in line and "too few per node: nvidia/gpu x4" in line
               for line in lines), lines
    assert not any("fpga" in line for line in lines)


def test_explain_placement_no_nodes_and_driver() -> None:
    lines = failures.explain_placement(
        "g", {"NodesEvaluated": 0, "NodesAvailable": {"dc9": 0}, "ConstraintFiltered": {"missing drivers": 1}}
    )
    assert "No nodes were eligible for evaluation" in lines[1]
    assert 'No nodes are available in datacenter "dc9"' in lines[2]
    assert "no node runs that task driver" in lines[3]


def test_task_events_pick_failures_with_exit_code() -> None:
    alloc = {"TaskStates": {"server": {"Failed": True, "State": "dead", "Events": [
        {"Type": "Received", "DisplayMessage": "Task received by client"},
        {"Type": "Terminated", "DisplayMessage": "Exit Code: 127", "ExitCode": 127},
        {"Type": "Not Restarting", "DisplayMessage": "Exceeded allowed attempts 2 in interval 30m0s"},
    ]}}}
    lines = failures.task_event_lines(alloc)
    assert lines == ["server: Terminated: Exit Code: 127",
                     "server: Not Restarting: Exceeded allowed attempts 2 in interval 30m0s"]


def test_health_failed() -> None:
    assert failures.health_failed({"ClientStatus": "failed"})
    assert failures.health_failed({"ClientStatus": "running", "DeploymentStatus": {"Healthy": False}})
    assert not failures.health_failed({"ClientStatus": "running", "DeploymentStatus": {"Healthy": None}})


def _node(node_id: str, n: int, pool: str = "default", name: str = "Tesla T4") -> dict:
    return {"ID": node_id, "Name": node_id, "Status": "ready", "SchedulingEligibility": "eligible",
            "NodePool": pool, "NodeResources": {"Devices": [{"Vendor": "nvidia", "Type": "gpu", "Name": name,
            "Instances": [{"ID": f"{node_id}-gpu{i}", "Healthy": True} for i in range(n)]}]}}


def _alloc(job: str, ids: list[str], status: str = "running") -> dict:
    return {"JobID": job, "ClientStatus": status, "DesiredStatus": "run", "AllocatedResources": {"Tasks": {
        "server": {"Devices": [{"Vendor": "nvidia", "Type": "gpu", "Name": "Tesla T4", "DeviceIDs": ids}]}}}}


def test_capacity_counts_per_node_and_subtracts_live_allocs() -> None:
    nodes = [_node("n1", 4), _node("n2", 2), _node("n3", 8, pool="other")]
    allocs = {"n1": [_alloc("other-job", ["n1-gpu0", "n1-gpu1"]), _alloc("dead", ["n1-gpu2"], "failed")],
              "n2": [_alloc("me", ["n2-gpu0"])]}
    res = preflight.capacity(nodes, allocs, device="nvidia/gpu", per_alloc=2, count=2, pool="default", job_id="me")
    assert res.free_by_node == {"n1": 2, "n2": 2}
    assert res.placeable == 2 and res.ok
    # 3 GPUs per allocation fit nowhere although 4 are free in total: devices cannot span nodes.
    res3 = preflight.capacity(nodes, allocs, device="nvidia/gpu", per_alloc=3, count=1, pool="default")
    assert res3.free_by_node == {"n1": 2, "n2": 1} and res3.placeable == 0 and not res3.ok
    assert "not enough nvidia/gpu capacity" in res3.message()


def test_device_name_forms() -> None:
    assert preflight.device_matches("gpu", "nvidia", "gpu", "A100")
    assert preflight.device_matches("nvidia/gpu", "nvidia", "gpu", "A100")
    assert preflight.device_matches("nvidia/gpu/A100", "nvidia", "gpu", "A100")
    assert not preflight.device_matches("nvidia/gpu/A100", "nvidia", "gpu", "T4")
    assert not preflight.device_matches("amd/gpu", "nvidia", "gpu", "A100")


def _dep(status: str, desc: str = "", **tg: object) -> DeploymentState:
    group = {"DesiredTotal": 2, "PlacedAllocs": 2, "HealthyAllocs": 1, "DesiredCanaries": 1,
             "PlacedCanaries": ["c1"], "Promoted": False, **tg}
    return DeploymentState.from_api({"ID": "d1", "Status": status, "StatusDescription": desc, "JobVersion": 3,
                                     "TaskGroups": {"triton": group}})


def test_classify_rollback_and_canaries() -> None:
    assert classify(_dep("successful")) == (Outcome.SUCCESSFUL, None)
    assert classify(_dep("failed", "Failed due to unhealthy allocations - rolling back to job version 2")) == (
        Outcome.ROLLED_BACK, 2)
    assert classify(_dep("failed", "Failed due to unhealthy allocations - not rolling back to current job "
                                   "version 0"))[0] is Outcome.FAILED
    assert classify(_dep("cancelled"))[0] is Outcome.CANCELLED
    running = _dep("running")
    assert running.awaiting_promotion and not running.terminal
    assert "canaries 1/1" in running.summary()
    assert not _dep("running", Promoted=True).awaiting_promotion
