"""`nomad-triton status JOB`: job, latest deployment, and per allocation health, models, node and GPUs.

Why probe models here: Nomad's view (alloc running, deployment health) says the process answers;
Triton's per-model /v2/models/<m>/ready says whether each model can actually serve. Probes use
short timeouts so a hung allocation costs at most a second, never the whole command.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import typer
from rich.table import Table

from nomad_triton.cli.common import JSON_OPT, emit_json, table_console
from nomad_triton.cli.connection import Connection, nomad_errors, with_connection
from nomad_triton.nomad.canary import alloc_http_address
from nomad_triton.nomad.client import NomadClient
from nomad_triton.nomad.watch import DeploymentState

MODEL_CHECK_RE = re.compile(r"^/v2/models/([^/]+)/ready$")
LIVE = {"pending", "running"}


def job_models(job: dict[str, Any]) -> list[str]:
    """Model names from the job's per-model readiness checks (the renderer adds one per model)."""
    names: list[str] = []
    for tg in job.get("TaskGroups") or []:
        services = list(tg.get("Services") or [])
        for task in tg.get("Tasks") or []:
            services += task.get("Services") or []
        for svc in services:
            for check in svc.get("Checks") or []:
                m = MODEL_CHECK_RE.match(check.get("Path") or "")
                if m and m.group(1) not in names:
                    names.append(m.group(1))
    return names


def alloc_gpus(alloc: dict[str, Any]) -> list[str]:
    ids: list[str] = []
    for res in ((alloc.get("AllocatedResources") or {}).get("Tasks") or {}).values():
        for dev in res.get("Devices") or []:
            ids += [f"{dev.get('Vendor')}/{dev.get('Type')}/{i}" for i in dev.get("DeviceIDs") or []]
    return ids


def model_readiness(addr: str, models: list[str], timeout_s: float = 1.0) -> dict[str, bool | None]:
    """Triton answers 200 when a model is ready and 400 otherwise; None means no answer in time."""
    out: dict[str, bool | None] = {}
    with httpx.Client(timeout=timeout_s) as http:
        for model in models:
            try:
                out[model] = http.get(f"http://{addr}/v2/models/{model}/ready").status_code == 200
            except httpx.HTTPError:
                out[model] = None
    return out


def _versions(versions: list[str]) -> str:
    """Shown only when a model serves more than the usual single version 1: ' v[1 2]'."""
    return "" if versions in ([], ["1"]) else f" v[{' '.join(versions)}]"


def model_versions(addr: str, models: list[str], timeout_s: float = 1.0) -> dict[str, list[str]]:
    """The ready versions of each model, from Triton's model metadata (`versions`); [] when unknown."""
    out: dict[str, list[str]] = {}
    with httpx.Client(timeout=timeout_s) as http:
        for model in models:
            try:
                resp = http.get(f"http://{addr}/v2/models/{model}")
                out[model] = [str(v) for v in resp.json().get("versions", [])] if resp.status_code == 200 else []
            except (httpx.HTTPError, ValueError, AttributeError):
                out[model] = []
    return out


def collect(
    client: NomadClient, job_id: str, models: list[str] | None, all_allocs: bool, probe_timeout_s: float = 2.0
) -> dict[str, Any]:
    job = client.job(job_id)
    dep = client.latest_deployment(job_id)
    stubs = client.job_allocations(job_id)
    if not all_allocs:
        stubs = [s for s in stubs if s.get("ClientStatus") in LIVE or s.get("DesiredStatus") == "run"]
    models = models or job_models(job)
    # The full allocation lacks the stub's JobVersion; keep the stub's fields alongside it.
    allocs = [{**s, **client.allocation(s["ID"])} for s in stubs]

    def row(alloc: dict[str, Any]) -> dict[str, Any]:
        addr = alloc_http_address(alloc)
        running = addr and alloc.get("ClientStatus") == "running"
        ready = model_readiness(addr, models, probe_timeout_s) if running else {}
        versions = model_versions(addr, models, probe_timeout_s) if running else {}
        health = (alloc.get("DeploymentStatus") or {}).get("Healthy")
        return {
            "id": alloc.get("ID"),
            "group": alloc.get("TaskGroup"),
            "version": alloc.get("JobVersion"),
            "node": alloc.get("NodeName") or (alloc.get("NodeID") or "")[:8],
            "client_status": alloc.get("ClientStatus"),
            "desired_status": alloc.get("DesiredStatus"),
            "healthy": health,
            "canary": bool((alloc.get("DeploymentStatus") or {}).get("Canary")),
            "http": addr,
            "models_ready": ready,
            "models_versions": versions,
            "gpus": alloc_gpus(alloc),
        }

    with ThreadPoolExecutor(max_workers=8) as pool:
        rows = list(pool.map(row, allocs))
    return {
        "job": {
            "id": job.get("ID"),
            "status": job.get("Status"),
            "version": job.get("Version"),
            "stable": job.get("Stable"),
            "type": job.get("Type"),
            "node_pool": job.get("NodePool"),
        },
        "deployment": DeploymentState.from_api(dep).to_dict() if dep else None,
        "allocations": rows,
        "models": models,
    }


def _yn(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def print_status(data: dict[str, Any]) -> None:
    # Piped output (scripts, CI logs) gets full IDs and addresses instead of 80-column ellipses.
    console = table_console()
    job, dep = data["job"], data["deployment"]
    console.print(
        f"Job {job['id']}: {job['status']}, version {job['version']} (stable {_yn(job['stable'])}), "
        f"pool {job['node_pool']}",
        markup=False,
    )
    if dep:
        console.print(f"Deployment {dep['id'][:8]}: {dep['status']} {dep['description']}", markup=False)
        for name, g in dep["groups"].items():
            canary = (
                f" canaries {len(g['placed_canaries'])}/{g['desired_canaries']}"
                if g["desired_canaries"]
                else ""
            )
            console.print(
                f"  {name}: desired {g['desired']} placed {g['placed']} healthy {g['healthy']} "
                f"unhealthy {g['unhealthy']}{canary}",
                markup=False,
            )
    table = Table(title="Allocations")
    for col in ("id", "group", "ver", "node", "status", "healthy", "http", "models ready", "gpus"):
        table.add_column(col)
    for a in data["allocations"]:
        ready = ", ".join(f"{m}:{_yn(r)}{_versions(a.get('models_versions', {}).get(m, []))}"
                          for m, r in a["models_ready"].items()) or "-"
        table.add_row(
            a["id"][:8],
            a["group"],
            str(a["version"]),
            a["node"],
            f"{a['client_status']}/{a['desired_status']}",
            _yn(a["healthy"]) + (" canary" if a["canary"] else ""),
            a["http"] or "-",
            ready,
            ", ".join(a["gpus"]) or "-",
        )
    console.print(table)


@with_connection
def status(
    job: str | None = typer.Argument(None, help="Job ID (the spec's name); without it: every toolkit job."),
    model: list[str] = typer.Option([], "--model", help="Model to probe (default: from the job's checks)."),
    all_allocs: bool = typer.Option(False, "--all", help="Include stopped and failed allocations."),
    probe_timeout: float = typer.Option(2.0, "--probe-timeout", help="Seconds per Triton readiness probe."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Without JOB: keep the table live."),
    as_json: bool = JSON_OPT,
    conn: Connection | None = None,
) -> None:
    """Show JOB: deployment, allocation health, per-model readiness, nodes and GPUs.

    Without JOB: one table of every toolkit job (pool, version, counts, deployment, models ready,
    GPUs per pool, last scaling event), from blocking queries; --watch keeps it live.
    """
    assert conn is not None
    if job is None:
        from nomad_triton.cli.fleet import show_cluster

        show_cluster(conn, None, watch, True, as_json, "nomad-triton jobs")
        return
    with nomad_errors(as_json):
        data = collect(conn.client, job, model or None, all_allocs, probe_timeout)
    if as_json:
        emit_json(data)
    else:
        print_status(data)


def register(app: typer.Typer) -> None:
    app.command("status")(status)
