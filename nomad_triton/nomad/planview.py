"""A plan reply as the lines `plan` prints: diff, scheduler dry-run, placement failures, index.

Shared by `plan` and `fleet plan`, so a job reads the same whichever command planned it.
"""

from __future__ import annotations

from typing import Any

from nomad_triton.nomad.client import PlanResult
from nomad_triton.nomad.diff import render_diff, render_updates
from nomad_triton.nomad.failures import explain_failed_tg_allocs


def plan_lines(plan: PlanResult, verbose: bool = False, job: dict[str, Any] | None = None) -> list[str]:
    """`job` (the parsed job) lets placement failures name the devices it asked for."""
    lines = render_diff(plan.diff, verbose)
    if plan.desired_updates:
        lines += ["", "Scheduler dry-run:"] + render_updates(plan.desired_updates)
    if plan.failed_tg_allocs:
        lines += ["", "Placement failures:"] + explain_failed_tg_allocs(plan.failed_tg_allocs, job)
    if plan.warnings:
        lines += ["", f"Warnings: {plan.warnings}"]
    lines += ["", f"Job Modify Index: {plan.job_modify_index}"]
    return lines
