"""`nomad-triton autoscale run|simulate`: the autoscaling controller, and offline replay of a policy.

`simulate --trace FILE`: a .json trace is a synthetic load trace run through the simulator's
queueing model; a .jsonl trace is recorded observations (`nomad-triton probe JOB --record FILE`)
replayed through our policy. `run JOB`: the controller loop (nomad_triton.autoscale.controller).
`agent`: every group with our scaling policy, found through Nomad (nomad_triton.autoscale.agent).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer
from rich.table import Table

from nomad_triton.autoscale.policy import ScalingPolicyConfig
from nomad_triton.autoscale.simulate import replay_observations, run_both
from nomad_triton.autoscale.trace import TraceError, is_observation_trace, load_trace, read_observations
from nomad_triton.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, JSON_OPT, emit_json, fail, table_console
from nomad_triton.cli.connection import Connection, with_connection

app = typer.Typer(help="Autoscale Triton task groups from their own metrics, or replay a policy on a trace.",
                  no_args_is_help=True)


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
    report: Path = typer.Option(None, "--report", metavar="FILE.html",
                                help="Also write a self-contained plot page (load traces only)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Replay TRACE and print replica-seconds, SLO-violation seconds, actions and reversals."""
    if report is not None and report.suffix.lower() not in (".html", ".htm"):
        fail(f"--report: {str(report)!r} is not an .html file", EXIT_BAD_INPUT, as_json)
    try:
        if is_observation_trace(trace):
            if report is not None:
                fail("--report: plots need a load trace (.json); recorded observations (.jsonl) have no load "
                     "model to plot", EXIT_BAD_INPUT, as_json)
            _replay(trace, min_count, max_count, as_json)
            return
        results = run_both(load_trace(trace), policy.value)
    except (TraceError, ValueError) as exc:
        fail(str(exc), EXIT_BAD_INPUT, as_json)
    if report is not None:
        from nomad_triton.autoscale.report import report_html

        try:
            report.write_text(report_html(results, f"simulate {trace.name}"))
        except OSError as exc:
            fail(f"--report: cannot write {str(report)!r}: {exc.strerror}", EXIT_BAD_INPUT, as_json)
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
    table_console().print(table)
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
    table_console().print(table)
    print(f"{len(decisions)} scale actions")


def _job_bounds(client, job: str, group: str, as_json: bool) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """min/max of the group's scaling block (Nomad enforces them; the policy must agree)."""
    for tg in client.job(job).get("TaskGroups") or []:
        if tg.get("Name") == group:
            sc = tg.get("Scaling") or {}
            return int(sc.get("Min") or 0), int(sc.get("Max") or tg.get("Count") or 1)
    fail(f"job {job!r} has no task group {group!r}", EXIT_BAD_INPUT, as_json)


@app.command("run")
@with_connection
def run(
    job: str = typer.Argument(..., help="Nomad job ID."),
    group: str = typer.Option("triton", "--group", help="Task group to scale."),
    spec: Path = typer.Option(None, "--spec", help="Deployment spec whose [scaling] section configures the policy."),
    model: list[str] = typer.Option([], "--model", help="Model to check readiness of. Repeatable."),
    interval: float = typer.Option(None, "--interval", help="Seconds between decisions (default: spec, else 1)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Record decisions as scaling events without a count."),
    metrics_port: int = typer.Option(0, "--metrics-port", help="Serve the controller's own /metrics on 127.0.0.1 (0 = off)."),
    duration: float = typer.Option(None, "--duration", help="Stop after this many seconds (default: run until SIGTERM)."),
    ha: bool = typer.Option(False, "--ha", help="Act only while holding a Nomad variable lock (run several replicas)."),
    lock_ttl: float = typer.Option(15.0, "--lock-ttl", help="Lock TTL in seconds (>= 10) with --ha."),
    as_json: bool = JSON_OPT,
    conn: Connection | None = None,
) -> None:
    """Autoscale JOB's GROUP from Triton's own metrics (no Prometheus server needed)."""
    import asyncio
    import logging
    import signal

    from prometheus_client import start_http_server

    from nomad_triton.autoscale.controller import Controller, ControllerSettings
    from nomad_triton.cli.common import load_spec_or_exit
    from nomad_triton.nomad.errors import NomadError

    assert conn is not None
    if (interval is not None and interval <= 0) or (duration is not None and duration <= 0):
        fail("--interval and --duration must be > 0", EXIT_BAD_INPUT, as_json)
    client = conn.client
    source_spec = None
    try:
        if spec is not None:
            scaling = load_spec_or_exit(spec, [], [], as_json).scaling
            cfg = ScalingPolicyConfig.from_spec(scaling)
            source_spec = scaling.policy.prometheus if scaling.policy.source == "prometheus" else None
        else:
            lo, hi = _job_bounds(client, job, group, as_json)
            cfg = ScalingPolicyConfig(min_count=lo, max_count=hi)
    except NomadError as exc:
        fail(f"autoscale {job}: {exc}", EXIT_FAILED, as_json)
    except ValueError as exc:
        fail(f"autoscale {job}: bad scaling policy: {exc}", EXIT_BAD_INPUT, as_json)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per PromQL request is noise, not events
    settings = ControllerSettings(job=job, group=group, models=tuple(model), dry_run=dry_run,
                                  interval_s=interval if interval is not None else cfg.interval_s)
    lock = None
    if ha:
        from nomad_triton.autoscale.lock import LeaderLock, lock_path

        try:
            lock = LeaderLock(client, lock_path(job, group), ttl_s=lock_ttl)
        except ValueError as exc:
            fail(f"--lock-ttl: {exc}", EXIT_BAD_INPUT, as_json)
    source = _prometheus_source(client, source_spec, job, group, tuple(model), as_json) if source_spec else None
    ctl = Controller(client, settings, cfg, lock=lock, source=source)
    if metrics_port:
        start_http_server(metrics_port, addr="127.0.0.1", registry=ctl.registry)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await ctl.run(stop, deadline_s=duration)

    failures = asyncio.run(main())
    summary = {"job": job, "group": group, "failed_steps": failures,
               "desired": ctl.state.desired if ctl.state else None,
               "last_decision": ctl.last_decision.reason if ctl.last_decision else None}
    if as_json:
        emit_json(summary)
    else:
        print(f"autoscaler stopped: desired={summary['desired']} failed_steps={failures}")


def _prometheus_source(client, spec, job: str, group: str, models: tuple[str, ...], as_json: bool):  # type: ignore[no-untyped-def]
    """The Prometheus source, checked before the loop: a query that does not parse, returns no series
    or many, or a Prometheus that does not answer, is one line naming the policy and query, exit 2."""
    import asyncio

    from nomad_triton.autoscale.sources import Target
    from nomad_triton.autoscale.sources.prometheus import PrometheusSource, QueryError, SourceUnavailable

    source = PrometheusSource(client, spec.settings(), policy=f"{job}/{group}")
    target = Target(job=job, group=group, models=models)

    async def check() -> str | None:
        try:
            await source.check(target)
            return None
        except (QueryError, SourceUnavailable) as exc:
            return str(exc)
        finally:
            await source.aclose()

    problem = asyncio.run(check())
    if problem:
        fail(problem, EXIT_BAD_INPUT, as_json)
    # The check's HTTP client belonged to that event loop; the loop that runs the policy gets its own.
    return PrometheusSource(client, spec.settings(), policy=f"{job}/{group}")


def _listen(value: str, as_json: bool) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        fail(f"--listen: expected HOST:PORT such as 127.0.0.1:9464, got {value!r}", EXIT_BAD_INPUT, as_json)
    return host, int(port)


@app.command("agent")
@with_connection
def agent(
    listen: str = typer.Option("127.0.0.1:9464", "--listen", help="HOST:PORT for /metrics and /healthz."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Record decisions as scaling events without a count."),
    ha: bool = typer.Option(True, "--ha/--no-ha", help="Act only while holding the Nomad variable lock."),
    lock_path: str = typer.Option("nomad-triton/autoscaler/agent", "--lock-path", help="Variable path of the lock."),
    lock_ttl: float = typer.Option(15.0, "--lock-ttl", help="Lock TTL in seconds (>= 10): the take-over time."),
    probe_timeout: float = typer.Option(0.8, "--probe-timeout", help="Deadline of one allocation probe, seconds."),
    duration: float = typer.Option(None, "--duration", help="Stop after this many seconds (default: until SIGTERM)."),
    sd: bool = typer.Option(
        False, "--sd", help="Also serve Prometheus HTTP service discovery at /sd/v1/targets (as `nomad-triton sd`)."
    ),
    as_json: bool = JSON_OPT,
    conn: Connection | None = None,
) -> None:
    """Autoscale every task group whose scaling policy is ours, found through Nomad (one agent per cluster)."""
    import asyncio
    import logging
    import signal

    from nomad_triton.autoscale.agent import Agent, AgentSettings
    from nomad_triton.autoscale.lock import MIN_TTL_S

    assert conn is not None
    host, port = _listen(listen, as_json)
    if (duration is not None and duration <= 0) or probe_timeout <= 0:
        fail("--duration and --probe-timeout must be > 0", EXIT_BAD_INPUT, as_json)
    if ha and lock_ttl < MIN_TTL_S:
        fail(f"--lock-ttl: must be >= {MIN_TTL_S:.0f} seconds (Nomad's minimum), got {lock_ttl:g}",
             EXIT_BAD_INPUT, as_json)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = AgentSettings(tune_gc=True, dry_run=dry_run, probe_timeout_s=probe_timeout, lock_path=lock_path if ha else None,
                             lock_ttl_s=lock_ttl)
    ag = Agent(conn.client, settings)
    catalogue = None
    if sd:
        from nomad_triton.observe.sd import ServiceCatalogue, aiohttp_routes

        catalogue = ServiceCatalogue(conn.client, namespace=conn.settings.namespace)
        catalogue.follow()
        ag.extra_routes.extend(aiohttp_routes(catalogue))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if duration is not None:
            loop.call_later(duration, stop.set)
        try:
            web_runner = await ag.serve_http(host, port)
        except OSError as exc:
            fail(f"--listen {listen}: cannot listen ({exc.strerror or exc})", EXIT_FAILED, as_json)
        try:
            await ag.run(stop)
        finally:
            await web_runner.cleanup()
            if catalogue is not None:
                catalogue.close()

    asyncio.run(main())
    summary = {"targets": len(ag.runners), "leader": ag.leading}
    if as_json:
        emit_json(summary)
    else:
        print(f"autoscale agent stopped: targets={summary['targets']}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="autoscale")
