"""`nomad-triton probe JOB`: health, readiness and load of every allocation, or a recorded trace.

Thin: discovery (probe.discovery), probing (probe.triton) and trace writing (autoscale.trace) do
the work. Exit 0 when every allocation answered, 1 when one did not (or none was found), 2 on bad
input.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import typer
from rich.table import Table

from nomad_triton.autoscale.trace import append_observations
from nomad_triton.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, JSON_OPT, emit_json, fail, table_console
from nomad_triton.cli.connection import Connection, with_connection
from nomad_triton.probe.observations import Endpoint, Observation
from nomad_triton.probe.triton import Prober


def _parse_endpoint(raw: str, models: tuple[str, ...]) -> Endpoint:
    """ID=HTTP_ADDR[,METRICS_ADDR] -> Endpoint."""
    alloc, sep, rest = raw.partition("=")
    if not sep or not alloc or not rest:
        raise ValueError(f"--endpoint {raw!r}: expected ID=HOST:PORT[,HOST:PORT]")
    http, _, metrics = rest.partition(",")
    return Endpoint(alloc_id=alloc, http=http, metrics=metrics or None, models=models)


def _discover(
    job: str | None, group: str | None, models: tuple[str, ...], conn: Connection, as_json: bool
) -> list[Endpoint]:
    from nomad_triton.nomad.errors import NomadError
    from nomad_triton.probe.discovery import job_endpoints

    assert job is not None
    try:
        client = conn.client
        endpoints = job_endpoints(client, job, group=group, models=models)
        if not endpoints:
            client.job(job)  # Nomad lists no allocations for an unknown job: say which it is
        return endpoints
    except NomadError as exc:
        fail(f"probe {job}: {exc}", EXIT_FAILED, as_json)


def _fmt(v: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if v is None else f"{v * scale:.{digits}f}"


def _versions(versions: tuple[str, ...]) -> str:
    """'' for the usual single version 1, else the loaded versions: 'm[1 2]' (a '!' after means not ready)."""
    return "" if versions in ((), ("1",)) else f"[{' '.join(versions)}]"


def _row(o: Observation) -> list[str]:
    compute = o.total("compute_infer_us_per_s")
    sat = o.total("queue_us_per_s") / max(compute, 1.0) if o.has_rates() else None
    success = o.total("success_per_s") if o.has_rates() else None
    lat = o.total("request_us_per_s") / success / 1000.0 if success else None
    models = ",".join(f"{m}{_versions(r.versions)}{'' if r.ready else '!'}" for m, r in sorted(o.models.items())) or "-"
    return [
        o.alloc_id[:8], o.address, o.state.value, _fmt(None) if o.live is None else str(o.live).lower(),
        _fmt(None) if o.ready is None else str(o.ready).lower(), models, _fmt(success),
        _fmt(o.total("failure_per_s") if o.has_rates() else None), _fmt(sat, digits=2),
        _fmt(o.total("pending") if o.metrics_ok else None, digits=0), _fmt(lat), _fmt(o.gpu_utilization, 100, 0),
    ]


def _table(obs: list[Observation]) -> Table:
    t = Table(title="Triton allocations")
    for col in ("alloc", "address", "state", "live", "ready", "models", "ok/s", "fail/s", "saturation",
                "pending", "latency ms", "gpu %"):
        t.add_column(col)
    for o in obs:
        t.add_row(*_row(o))
    return t


async def _rounds(
    endpoints_fn, prober: Prober, rounds: int | None, duration: float | None, interval: float, record
) -> list[Observation]:
    deadline = time.monotonic() + duration if duration is not None else None
    last: list[Observation] = []
    n = 0
    while True:
        start = time.monotonic()
        last = await prober.probe_all(endpoints_fn())
        n += 1
        if record is not None:
            append_observations(record, last)
        if rounds is not None and n >= rounds:
            return last
        if deadline is not None and time.monotonic() + interval > deadline:
            return last
        await asyncio.sleep(max(0.0, interval - (time.monotonic() - start)))


@with_connection
def probe(
    job: str = typer.Argument(None, help="Nomad job ID whose allocations to probe (omit with --endpoint)."),
    group: str = typer.Option(None, "--group", help="Only this task group."),
    model: list[str] = typer.Option([], "--model", help="Model name to check /v2/models/<m>/ready for. Repeatable."),
    endpoint: list[str] = typer.Option([], "--endpoint", metavar="ID=HTTP[,METRICS]",
                                       help="Probe this address instead of discovering a job. Repeatable."),
    timeout: float = typer.Option(1.0, "--timeout", help="Per-allocation probe deadline, seconds."),
    interval: float = typer.Option(1.0, "--interval", help="Seconds between rounds (rates need two)."),
    record: Path = typer.Option(None, "--record", help="Append every observation to this JSONL trace."),
    duration: float = typer.Option(None, "--duration", help="With --record: keep probing this many seconds."),
    as_json: bool = JSON_OPT,
    conn: Connection | None = None,
) -> None:
    """Probe Triton health, per-model readiness and load (rates over --interval) of a job's allocations."""
    if timeout <= 0 or interval <= 0 or (duration is not None and duration <= 0):
        fail("--timeout, --interval and --duration must be > 0", EXIT_BAD_INPUT, as_json)
    if duration is not None and record is None:
        fail("--duration needs --record FILE", EXIT_BAD_INPUT, as_json)
    if not job and not endpoint:
        fail("give a JOB or at least one --endpoint", EXIT_BAD_INPUT, as_json)
    models = tuple(model)
    try:
        fixed = [_parse_endpoint(e, models) for e in endpoint]
    except ValueError as exc:
        fail(str(exc), EXIT_BAD_INPUT, as_json)

    def endpoints_fn() -> list[Endpoint]:
        assert conn is not None
        return fixed if fixed else _discover(job, group, models, conn, as_json)

    async def run() -> list[Observation]:
        async with Prober(timeout_s=timeout) as prober:
            if record is None:
                return await _rounds(endpoints_fn, prober, 2, None, interval, None)
            try:
                fh = record.open("a")
            except OSError as exc:
                fail(f"--record {record}: {exc.strerror}", EXIT_BAD_INPUT, as_json)
            with fh:
                return await _rounds(endpoints_fn, prober, None if duration else 2, duration, interval, fh)

    obs = asyncio.run(run())
    if not obs:
        fail(f"probe {job}: no running allocation with an 'http' port" + (f" in group {group!r}" if group else ""),
             EXIT_FAILED, as_json)
    if as_json:
        emit_json({"job": job, "allocations": [o.to_dict() for o in obs]})
    else:
        table_console().print(_table(obs))
    if not obs or not all(o.reachable for o in obs):
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    app.command("probe")(probe)
