"""`fleet plan`: every job of the fleet planned on the server, placement failures first.

Why failures first: in a fleet of many pools the one pool without capacity is what the reader
must see, not the twentieth unchanged job. Each job's lines are exactly those `plan` prints.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from nomad_triton.fleet.jobs import server_parse
from nomad_triton.fleet.model import Fleet, FleetJob
from nomad_triton.nomad import errors
from nomad_triton.nomad.client import NomadClient, PlanResult
from nomad_triton.nomad.diff import allocation_changes
from nomad_triton.nomad.failures import explain_failed_tg_allocs
from nomad_triton.nomad.planview import plan_lines
from nomad_triton.nomad.settings import ConnectionSettings


@dataclass
class JobPlan:
    job: FleetJob
    result: PlanResult | None = None
    error: errors.NomadError | None = None
    parsed: dict[str, Any] | None = None  # the job as the server parsed it (names devices in failures)

    @property
    def changed(self) -> bool:
        r = self.result
        return r is not None and (r.has_changes or allocation_changes(r.desired_updates))

    @property
    def placement_fails(self) -> bool:
        return self.result is not None and bool(self.result.failed_tg_allocs)

    def lines(self, verbose: bool = False) -> list[str]:
        if self.error is not None:
            return [f"  error: {self.error}"]
        assert self.result is not None
        return plan_lines(self.result, verbose, self.parsed)

    def to_dict(self) -> dict[str, Any]:
        r = self.result
        return {
            "job": self.job.name,
            "stage": self.job.stage_index,
            "pool": self.job.pool,
            "changes": self.changed,
            "error": str(self.error) if self.error else None,
            "job_modify_index": r.job_modify_index if r else None,
            "desired_updates": r.desired_updates if r else None,
            "placement_failures": explain_failed_tg_allocs(r.failed_tg_allocs, self.parsed) if r else [],
            "diff": r.diff if r else None,
            "warnings": r.warnings if r else "",
        }


def plan_fleet(settings: ConnectionSettings, fleet: Fleet) -> list[JobPlan]:
    """Plan every job in parallel; the list puts jobs whose placement would fail first."""
    plans = [JobPlan(job) for job in fleet.jobs]

    def one(p: JobPlan) -> None:
        client = NomadClient(settings)
        try:
            p.parsed = server_parse(client, p.job)
            p.result = client.plan(p.parsed)
        except errors.NomadError as exc:
            p.error = exc

    threads = [threading.Thread(target=one, args=(p,), daemon=True) for p in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(plans, key=lambda p: 0 if (p.placement_fails or p.error is not None) else 1)
