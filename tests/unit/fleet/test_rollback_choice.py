"""Which version `fleet deploy --rollback-on-failure` goes back to, decided from Nomad's version list.

Pure decision logic: the Nomad client is a small fake holding a version list, and the follower is
replaced by one that reports the revert's deployment as successful (the real follower is covered by
tests/unit/nomad/test_watch.py and the fleet e2e test).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nomad_triton.fleet import jobs
from nomad_triton.fleet.jobs import JobRun, rollback_job
from nomad_triton.fleet.model import FleetJob
from nomad_triton.nomad.watch import Outcome, WatchResult
from nomad_triton.spec import DeploymentSpec


class FakeNomad:
    def __init__(self, versions: list[tuple[int, int, bool]]) -> None:
        """versions: (Version, JobModifyIndex, Stable)."""
        self._versions = [{"Version": v, "JobModifyIndex": i, "Stable": s} for v, i, s in versions]
        self.calls: list[tuple[Any, ...]] = []

    def versions(self, job_id: str) -> list[dict[str, Any]]:
        return sorted(self._versions, key=lambda v: -v["Version"])

    def deregister(self, job_id: str, purge: bool = False) -> dict[str, Any]:
        self.calls.append(("deregister", job_id))
        return {}

    def revert(self, job_id: str, version: int, enforce_prior_version: int | None = None) -> dict[str, Any]:
        self.calls.append(("revert", job_id, version, enforce_prior_version))
        return {"EvalID": "e1", "EvalCreateIndex": 99}


class FollowerOk:
    def __init__(self, client: Any, job_id: str, *, deadline: float) -> None:
        pass

    def run(self, eval_id: str, start_index: int = 0) -> WatchResult:
        return WatchResult(Outcome.SUCCESSFUL, "Deployment completed successfully")


def follow_ok(client: Any, job_id: str, eval_id: str, start_index: int = 0, **_: Any) -> WatchResult:
    return WatchResult(Outcome.SUCCESSFUL, "Deployment completed successfully")


@pytest.fixture(autouse=True)
def _follower(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "DeploymentWatcher", FollowerOk)
    monkeypatch.setattr(jobs.rollout, "follow", follow_ok)


def run_of(plan_index: int, registered_index: int, outcome: Outcome = Outcome.FAILED) -> JobRun:
    spec = DeploymentSpec.model_validate({"name": "svc", "driver": {"type": "raw_exec"},
                                          "model_repository": {"path": "/m", "models": ["m"]}})
    run = JobRun(FleetJob(spec, Path("svc.toml"), None, 0, "stages.0: specs.0"))
    run.eval_id, run.plan_index, run.registered_index, run.outcome = "e0", plan_index, registered_index, outcome
    return run


def test_reverts_to_the_stable_version_before_ours() -> None:
    nomad = FakeNomad([(0, 10, True), (1, 20, True), (2, 30, False)])
    run = run_of(plan_index=20, registered_index=30)
    assert rollback_job(nomad, run, deadline=0.0)  # type: ignore[arg-type]
    assert nomad.calls == [("revert", "svc", 1, 2)]
    assert run.rollback == "reverted version 2 to version 1: successful"


def test_skips_an_unstable_previous_version() -> None:
    nomad = FakeNomad([(0, 10, True), (1, 20, False), (2, 30, False)])
    assert rollback_job(nomad, run_of(20, 30), deadline=0.0)  # type: ignore[arg-type]
    assert nomad.calls == [("revert", "svc", 0, 2)]


def test_a_job_the_fleet_created_is_stopped() -> None:
    nomad = FakeNomad([(0, 30, False)])
    run = run_of(plan_index=0, registered_index=30)
    assert rollback_job(nomad, run, deadline=0.0)  # type: ignore[arg-type]
    assert nomad.calls == [("deregister", "svc")] and "did not exist" in run.rollback


def test_an_unchanged_registration_is_left_alone() -> None:
    nomad = FakeNomad([(0, 10, True)])
    run = run_of(plan_index=10, registered_index=10)
    assert rollback_job(nomad, run, deadline=0.0)  # type: ignore[arg-type]
    assert nomad.calls == [] and run.rollback.startswith("unchanged")


def test_a_newer_version_by_someone_else_is_not_overwritten() -> None:
    nomad = FakeNomad([(0, 10, True), (1, 30, False), (2, 40, False)])
    run = run_of(plan_index=10, registered_index=30)
    assert not rollback_job(nomad, run, deadline=0.0)  # type: ignore[arg-type]
    assert nomad.calls == [] and "version 2 was registered since ours (1); left alone" in run.rollback


def test_no_stable_version_to_go_back_to_fails() -> None:
    nomad = FakeNomad([(0, 10, False), (1, 30, False)])
    run = run_of(plan_index=10, registered_index=30)
    assert not rollback_job(nomad, run, deadline=0.0)  # type: ignore[arg-type]
    assert nomad.calls == [] and "no stable version older than 1" in run.rollback


def test_nothing_registered_nothing_to_undo() -> None:
    run = run_of(0, 0)
    run.eval_id = ""
    nomad = FakeNomad([])
    assert rollback_job(nomad, run, deadline=0.0) and nomad.calls == []  # type: ignore[arg-type]
