"""Failure inspector: turn Nomad's placement metrics, task events and logs into sentences.

Why its own module (Levant's failure_inspector.go lesson): when a deploy fails the user needs to
know *why* — "no node has nvidia/gpu", "the command exited 127" — not a deployment ID. The
explanation functions are pure (tested on recorded shapes); `inspect()` does the fetching.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nomad_triton.nomad import errors
from nomad_triton.nomad.client import NomadClient

# Task event types worth showing; the rest (Received, Task Setup, ...) are routine.
INTERESTING_EVENTS = {
    "Driver Failure",
    "Failed Validation",
    "Setup Failure",
    "Terminated",
    "Killing",
    "Not Restarting",
    "Restarting",
    "Failed Artifact Download",
    "Task hook failed",
    "Alloc Unhealthy",
    "Signaling",
    "Sibling Task Failed",
}
TERMINAL_CLIENT_STATUS = {"complete", "failed", "lost"}


def device_requests(job: dict[str, Any] | None, group: str) -> list[str]:
    """`nvidia/gpu x4` for each device the group's tasks ask for.

    Nomad's placement metrics say "missing devices" / "devices: no devices match request" without
    naming the device (one key per node, so the counts add up); the job says which it was.
    """
    out: list[str] = []
    for tg in (job or {}).get("TaskGroups") or []:
        if tg.get("Name") != group:
            continue
        for task in tg.get("Tasks") or []:
            for dev in (task.get("Resources") or {}).get("Devices") or []:
                out.append(f"{dev.get('Name', '?')} x{int(dev.get('Count') or 1)}")
    return out


def explain_placement(group: str, metric: dict[str, Any], devices: list[str] | None = None) -> list[str]:
    """Why Nomad could not place allocations of `group`, in the words the nomad CLI would use.

    `devices` (from device_requests) names what a device reason is about."""
    asked = f": {', '.join(devices)}" if devices else ""
    lines: list[str] = []
    coalesced = int(metric.get("CoalescedFailures") or 0)
    lines.append(f'Task group "{group}" failed to place {coalesced + 1} allocation(s):')
    evaluated = int(metric.get("NodesEvaluated") or 0)
    available = metric.get("NodesAvailable") or {}
    if evaluated == 0:
        lines.append("  * No nodes were eligible for evaluation")
    for dc, n in sorted(available.items()):
        if n == 0:
            lines.append(f'  * No nodes are available in datacenter "{dc}"')
    if metric.get("NodesInPool") == 0:
        lines.append("  * No nodes are in the job's node pool")
    for cls, n in sorted((metric.get("ClassFiltered") or {}).items()):
        lines.append(f'  * Class "{cls}": {n} node(s) excluded by filter')
    for constraint, n in sorted((metric.get("ConstraintFiltered") or {}).items()):
        hint = ""
        if "missing drivers" in constraint:
            hint = " (no node runs that task driver)"
        elif "devices" in constraint or "device" in constraint:
            hint = f" (no node has the requested device{asked})"
        lines.append(f'  * Constraint "{constraint}": {n} node(s) excluded by filter{hint}')
    exhausted = int(metric.get("NodesExhausted") or 0)
    if exhausted:
        lines.append(f"  * Resources exhausted on {exhausted} node(s)")
    for cls, n in sorted((metric.get("ClassExhausted") or {}).items()):
        lines.append(f'  * Class "{cls}" exhausted on {n} node(s)')
    for dim, n in sorted((metric.get("DimensionExhausted") or {}).items()):
        hint = f" (all matching devices are in use or too few per node{asked})" if dim.startswith("devices") else ""
        lines.append(f'  * Dimension "{dim}" exhausted on {n} node(s){hint}')
    for quota in metric.get("QuotaExhausted") or []:
        lines.append(f'  * Quota limit hit "{quota}"')
    if len(lines) == 1:
        lines.append("  * No reason reported by the scheduler")
    return lines


def explain_failed_tg_allocs(failed: dict[str, Any] | None, job: dict[str, Any] | None = None) -> list[str]:
    """Explain every task group of an evaluation's or plan's FailedTGAllocs (`job` names devices)."""
    out: list[str] = []
    for group, metric in sorted((failed or {}).items()):
        out.extend(explain_placement(group, metric or {}, device_requests(job, group)))
    return out


def _mentions_devices(failed: dict[str, Any] | None) -> bool:
    keys = [k for m in (failed or {}).values() for field in ("ConstraintFiltered", "DimensionExhausted")
            for k in ((m or {}).get(field) or {})]
    return any("device" in k for k in keys)


def task_event_lines(alloc: dict[str, Any], limit: int = 6) -> list[str]:
    """The notable task events of an allocation, oldest first, at most `limit` per task."""
    out: list[str] = []
    for task, state in sorted((alloc.get("TaskStates") or {}).items()):
        events = [e for e in (state.get("Events") or []) if e.get("Type") in INTERESTING_EVENTS]
        for ev in events[-limit:]:
            msg = ev.get("DisplayMessage") or ev.get("Message") or ev.get("DriverError") or ""
            if ev.get("Type") == "Terminated" and "ExitCode" in ev and "Exit Code" not in msg:
                msg = f"exit code {ev.get('ExitCode')}; {msg}".rstrip("; ")
            out.append(f"{task}: {ev.get('Type')}: {msg}".rstrip(": "))
        if state.get("Failed") and not events:
            out.append(f"{task}: failed (state {state.get('State', '?')})")
    return out


def health_failed(alloc: dict[str, Any]) -> bool:
    """An allocation counts as failed if its client status says so or the deployment marked it unhealthy."""
    if alloc.get("ClientStatus") in ("failed", "lost"):
        return True
    return (alloc.get("DeploymentStatus") or {}).get("Healthy") is False


def _health_word(alloc: dict[str, Any]) -> str:
    status = alloc.get("ClientStatus", "?")
    if status in TERMINAL_CLIENT_STATUS:
        return status
    if (alloc.get("DeploymentStatus") or {}).get("Healthy") is False:
        return "unhealthy"
    return f"{status}, not healthy yet"


@dataclass
class AllocFailure:
    alloc_id: str
    group: str
    node: str
    client_status: str
    events: list[str]
    logs: dict[str, list[str]] = field(default_factory=dict)  # "task stderr" -> last lines


@dataclass
class FailureReport:
    placement: list[str] = field(default_factory=list)
    allocations: list[AllocFailure] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = list(self.placement)
        for a in self.allocations:
            out.append(f"Allocation {a.alloc_id[:8]} (group {a.group}, node {a.node}) is {a.client_status}:")
            out.extend(f"  event  {e}" for e in a.events)
            for name, log in a.logs.items():
                out.extend(f"  {name}| {line}" for line in log)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "placement": self.placement,
            "allocations": [a.__dict__ for a in self.allocations],
        }


def inspect(
    client: NomadClient,
    job_id: str,
    *,
    deployment_id: str | None = None,
    failed_tg_allocs: dict[str, Any] | None = None,
    log_lines: int = 15,
    max_allocs: int = 3,
    include_not_healthy: bool = False,
) -> FailureReport:
    """Gather placement reasons, task events and last log lines of the failed allocations.

    With include_not_healthy (a deadline passed) allocations still waiting to become healthy are
    shown too: they are usually why the deadline passed.
    """
    job = None
    if _mentions_devices(failed_tg_allocs):
        try:
            job = client.job(job_id)
        except errors.NomadError:
            job = None  # the explanation just does not name the device
    report = FailureReport(placement=explain_failed_tg_allocs(failed_tg_allocs, job))
    try:
        allocs = client.job_allocations(job_id)
    except errors.NotFound:
        return report
    if deployment_id:
        allocs = [a for a in allocs if a.get("DeploymentID") == deployment_id] or allocs
    failed = [
        a
        for a in allocs
        if health_failed(a)
        or (
            include_not_healthy
            and a.get("ClientStatus") in ("pending", "running")
            and (a.get("DeploymentStatus") or {}).get("Healthy") is not True
        )
    ]
    failed.sort(key=lambda a: a.get("ModifyIndex", 0), reverse=True)
    for alloc in failed[:max_allocs]:
        item = AllocFailure(
            alloc_id=alloc.get("ID", ""),
            group=alloc.get("TaskGroup", ""),
            node=alloc.get("NodeName") or alloc.get("NodeID", "")[:8],
            client_status=_health_word(alloc),
            events=task_event_lines(alloc),
        )
        for task in sorted(alloc.get("TaskStates") or {}):
            for stream in ("stderr", "stdout"):
                try:
                    lines = client.alloc_logs(item.alloc_id, task, stream, log_lines)
                except errors.NomadError:
                    continue
                if lines:
                    item.logs[f"{task} {stream}"] = lines
        report.allocations.append(item)
    return report
