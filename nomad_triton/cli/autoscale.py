"""`nomad-triton autoscale simulate --trace FILE`: replay a trace through our policy and the baseline.

A .json trace is a synthetic load trace run through the simulator's queueing model; a .jsonl trace
is recorded observations (`nomad-triton probe JOB --record FILE`) replayed through our policy.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from nomad_triton.autoscale.policy import ScalingPolicyConfig
from nomad_triton.autoscale.simulate import replay_observations, run_both
from nomad_triton.autoscale.trace import TraceError, is_observation_trace, load_trace, read_observations
from nomad_triton.cli.common import EXIT_BAD_INPUT, JSON_OPT, emit_json, fail

app = typer.Typer(help="Autoscale Triton task groups (simulate a policy on a trace).", no_args_is_help=True)


class PolicyChoice(StrEnum):
    ours = "ours"
    baseline = "baseline"
    both = "both"


@app.command("simulate")
def simulate(
    trace: Path = typer.Option(..., "--trace", help="Load trace (.json) or recorded observations (.jsonl)."),
    policy: PolicyChoice = typer.Option(PolicyChoice.both, "--policy", help="Which policy to run."),
    min_count: int = typer.Option(1, "--min", help="Recorded traces: minimum count."),
    max_count: int = typer.Option(10, "--max", help="Recorded traces: maximum count."),
    as_json: bool = JSON_OPT,
) -> None:
    """Replay TRACE and print replica-seconds, SLO-violation seconds, actions and reversals."""
    try:
        if is_observation_trace(trace):
            _replay(trace, min_count, max_count, as_json)
            return
        results = run_both(load_trace(trace), policy.value)
    except (TraceError, ValueError) as exc:
        fail(str(exc), EXIT_BAD_INPUT, as_json)
    if as_json:
        emit_json({"trace": str(trace), "results": [
            {**r.summary(), "actions": [{"t": t, "count": c, "direction": d, "reason": why} for t, c, d, why in r.actions]}
            for r in results
        ]})
        return
    table = Table(title=f"simulate {trace.name}")
    for col in ("policy", "replica-seconds", "SLO-violation s", "scale actions", "reversals", "max replicas"):
        table.add_column(col)
    for r in results:
        s = r.summary()
        table.add_row(*(str(s[k]) for k in ("policy", "replica_seconds", "slo_violation_s", "scale_actions",
                                             "reversals", "max_replicas")))
    Console().print(table)
    if len(results) == 2 and results[1].replica_seconds:
        print(f"replica-seconds ours/baseline: {results[0].replica_seconds / results[1].replica_seconds:.2f}")


def _replay(trace: Path, min_count: int, max_count: int, as_json: bool) -> None:
    try:
        cfg = ScalingPolicyConfig(min_count=min_count, max_count=max_count)
    except ValueError as exc:
        fail(f"--min/--max: {exc}", EXIT_BAD_INPUT, as_json)
    decisions = [(t, d) for t, d in replay_observations(read_observations(trace), cfg) if d.new_count is not None]
    if as_json:
        emit_json({"trace": str(trace), "decisions": [
            {"t": t, "count": d.new_count, "direction": d.direction, "reason": d.reason, "signals": d.signals}
            for t, d in decisions
        ]})
        return
    table = Table(title=f"replay {trace.name} (policy: ours)")
    for col in ("t", "count", "direction", "reason"):
        table.add_column(col)
    for t, d in decisions:
        table.add_row(f"{t:.1f}", str(d.new_count), d.direction, d.reason)
    Console().print(table)
    print(f"{len(decisions)} scale actions")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="autoscale")
