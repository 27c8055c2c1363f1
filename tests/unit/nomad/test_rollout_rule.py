"""The "is what I asked for really running healthy" rule (nomad.rollout), table-driven on API shapes.

Pure: a job (its current version and counts) and an allocation list in, a verdict and one line
out. The follow-through against a real devcluster is in tests/e2e/test_rollout_never_empty.py.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from nomad_triton.nomad.client import NomadClient
from nomad_triton.nomad.rollout import follow, from_deployment, summarize
from nomad_triton.nomad.settings import ConnectionSettings
from nomad_triton.nomad.watch import DeploymentState, Outcome


def job(version: int, count: int = 1, groups: tuple[str, ...] = ("triton",)) -> dict[str, Any]:
    return {"ID": "web", "Version": version, "TaskGroups": [{"Name": g, "Count": count} for g in groups]}


def alloc(version: int, status: str = "running", healthy: bool | None = True, *, group: str = "triton",
          desired: str = "run", deployment: str | None = "d1") -> dict[str, Any]:
    a = {"TaskGroup": group, "JobVersion": version, "ClientStatus": status, "DesiredStatus": desired,
         "DeploymentStatus": None if healthy is None else {"Healthy": healthy}}
    if deployment is not None:  # list stubs have none: the follower reads it where it matters
        a["DeploymentID"] = deployment
    return a


# (name, job, allocs, version asked for, ok, words the one-line description must contain)
CASES = [
    ("desired count healthy", job(2), [alloc(2)], 2, True, ["triton: 1/1 healthy of version 2"]),
    ("nothing runs at all (the empty rollout)", job(2), [alloc(1, "failed", False)], 2, False,
     ["0/1 healthy of version 2", "nothing running"]),
    ("only the broken version runs", job(2), [alloc(1, healthy=False)], 2, False,
     ["version 1: 1 running (0 healthy)"]),
    ("running but not yet healthy", job(2), [alloc(2, healthy=None)], 2, False, ["version 2: 1 running (0 healthy)"]),
    ("starting", job(2), [alloc(2, "pending", None)], 2, False, ["1 starting"]),
    ("unhealthy", job(2), [alloc(2, healthy=False)], 2, False, ["0/1 healthy"]),
    ("one of two", job(2, count=2), [alloc(2), alloc(2, "failed", False)], 2, False, ["1/2 healthy"]),
    ("old allocs still stopping do not matter", job(2), [alloc(2), alloc(1, desired="stop")], 2, True, []),
    ("an old version's healthy allocs are not the asked version", job(2), [alloc(1)], 2, False,
     ["0/1 healthy of version 2", "version 1: 1 running (1 healthy)"]),
    ("no verdict and no DeploymentID known (a list stub): not healthy", job(2),
     [alloc(2, healthy=None, deployment=None)], 2, False, ["0/1 healthy"]),
    ("no deployment placed it: running is all Nomad knows", job(2), [alloc(2, healthy=None, deployment="")], 2,
     True, []),
    ("every group counts", job(2, groups=("a", "b")), [alloc(2, group="a")], 2, False, ["a: 1/1", "b: 0/1"]),
    ("count 0 is satisfied by nothing", job(2, count=0), [], 2, True, []),
    ("the job moved on to another version", job(3), [alloc(3)], 2, False, ["the job is at version 3"]),
    ("the job is gone", None, [], 2, False, ["no longer exists"]),
]


@pytest.mark.parametrize("name,j,allocs,version,ok,words", CASES, ids=[c[0] for c in CASES])
def test_running_rule(name: str, j: dict[str, Any] | None, allocs: list[dict[str, Any]], version: int, ok: bool,
                      words: list[str]) -> None:
    state = summarize(j, allocs, version, "web")
    assert state.ok is ok, state.describe()
    line = state.describe()
    assert all(w in line for w in words), line
    assert state.to_dict()["ok"] is ok


def test_no_deployment_with_nothing_running_is_not_ok_at_the_deadline(fake_nomad) -> None:
    """Nomad says no deployment was needed, yet nothing of the version runs: exit-1 outcome, bounded."""
    fake_nomad.on("GET", "/v1/evaluation/e1", 200, {"ID": "e1", "Status": "complete", "DeploymentID": ""},
                  {"X-Nomad-Index": "10"})
    fake_nomad.on("GET", "/v1/job/web", 200, {**job(2), "JobModifyIndex": 9}, {"X-Nomad-Index": "10"})
    fake_nomad.on("GET", "/v1/job/web/allocations", 200, [alloc(1, "failed", False)], {"X-Nomad-Index": "10"})
    fake_nomad.on("GET", "/v1/job/web/deployment", 200, None, {"X-Nomad-Index": "10"})
    client = NomadClient(ConnectionSettings.from_env(env={}, address=fake_nomad.url, retries=0))
    t0 = time.monotonic()
    res = follow(client, "web", "e1", deadline=time.monotonic() + 1.5, job_modify_index=9)
    assert res.outcome is Outcome.NOT_RUNNING, res.message
    assert "no deployment was needed, but version 2 is not running healthy" in res.message, res.message
    assert "nothing running" in res.message and res.running is not None and not res.running.ok
    assert time.monotonic() - t0 < 8


@pytest.mark.parametrize("healthy,ok", [(2, True), (1, False)])
def test_successful_deployment_is_read_off_its_counters(healthy: int, ok: bool) -> None:
    """No request after a success (deploy returns within 100 ms of the end): its counters are the verdict."""
    dep = DeploymentState.from_api({"ID": "d1", "Status": "successful", "JobVersion": 4, "TaskGroups": {
        "triton": {"DesiredTotal": 2, "PlacedAllocs": 2, "HealthyAllocs": healthy}}})
    state = from_deployment(dep, "web")
    assert state.ok is ok and state.version == 4
    assert f"triton: {healthy}/2 healthy of version 4" in state.describe()


def test_wait_ends_early_when_the_versions_deployment_failed(fake_nomad) -> None:
    """Version 0 included: a failed deployment of the awaited version ends the wait, not the deadline."""
    fake_nomad.on("GET", "/v1/evaluation/e1", 200, {"ID": "e1", "Status": "complete", "DeploymentID": ""},
                  {"X-Nomad-Index": "10"})
    fake_nomad.on("GET", "/v1/job/web", 200, {**job(0), "JobModifyIndex": 9}, {"X-Nomad-Index": "10"})
    fake_nomad.on("GET", "/v1/job/web/allocations", 200, [alloc(0, "failed", False)], {"X-Nomad-Index": "10"})
    fake_nomad.on("GET", "/v1/job/web/deployment", 200,
                  {"ID": "d0", "JobVersion": 0, "Status": "failed", "StatusDescription": "Failed due to progress deadline",
                   "TaskGroups": {"triton": {"DesiredTotal": 1}}}, {"X-Nomad-Index": "10"})
    client = NomadClient(ConnectionSettings.from_env(env={}, address=fake_nomad.url, retries=0))
    t0 = time.monotonic()
    res = follow(client, "web", "e1", deadline=time.monotonic() + 30, job_modify_index=9)
    assert time.monotonic() - t0 < 5
    assert res.outcome is Outcome.NOT_RUNNING
    assert "deployment d0 of version 0 failed: Failed due to progress deadline" in res.message, res.message
