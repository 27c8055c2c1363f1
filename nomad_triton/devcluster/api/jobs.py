"""/v1/jobs, /v1/job/:id/* and /v1/validate/job: parse, validate, register, read, plan, stop."""

from __future__ import annotations

import copy
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import ApiError
from .common import Ctx, blocking_reply, ns_filter, query_bool, read_json, reply, write_namespace
from .jobs_logic import (
    alloc_stub,
    enforce_index,
    get_job,
    job_allocs,
    job_deployments,
    job_stub,
    job_summary,
    latest_deployment,
    multi_error,
    register_reply,
    upsert_job_version,
)


class _Jobspec:
    """Engineer A's jobspec modules, imported on first use (parse, canonicalize, validate, diff)."""

    @staticmethod
    def parse_job_hcl(text: str, variables: Any = None, canonicalize: bool = False) -> dict[str, Any]:
        from ..hclparse import parse_job_hcl

        return parse_job_hcl(text, variables=variables, canonicalize=canonicalize)

    @staticmethod
    def canonicalize_job(job: dict[str, Any]) -> dict[str, Any]:
        from ..canonical import canonicalize_job

        return canonicalize_job(job)

    @staticmethod
    def validate_job(job: dict[str, Any]) -> tuple[list[str], list[str]]:
        from ..validate import validate_job

        return validate_job(job)

    @staticmethod
    def diff_jobs(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
        from ..jobdiff import diff_jobs

        return diff_jobs(old, new)

    @staticmethod
    def annotate_diff(diff: dict[str, Any], desired_tg_updates: dict[str, Any] | None) -> dict[str, Any]:
        from ..jobdiff import annotate_diff

        return annotate_diff(diff, desired_tg_updates)


def _hcl() -> type[_Jobspec]:
    return _Jobspec


def _ctx(request: Request) -> Ctx:
    return request.app.state.ctx


def _require_job_region(ctx: Ctx, request: Request, body: dict[str, Any], job: dict[str, Any]) -> None:
    """job_endpoint.go regionForJob: `?region=`, else the body's Region, else the job's Region picks
    where the write is forwarded ("global" means the agent's own region). Another region has no
    servers here: 500 "No path to region", as Nomad's RPC forwarding answers."""
    wanted = request.query_params.get("region") or body.get("Region") or job.get("Region") or ""
    if wanted and wanted not in ("global", ctx.config.server.region):
        raise ApiError(500, "No path to region")


def _canonical_and_valid(job: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Canonicalize and validate a submitted job; 400 with go-multierror text on errors."""
    hcl = _hcl()
    job = hcl.canonicalize_job(job)
    errors, warnings = hcl.validate_job(job)
    if errors:
        raise ApiError(400, multi_error(list(errors)))
    return job, multi_error(list(warnings)) if warnings else ""


async def parse(request: Request) -> Response:
    ctx = _ctx(request)
    body = await read_json(request)
    ctx.require_ns(request, ctx.namespace(request), "parse-job", "submit-job")
    text = body.get("JobHCL")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "Job spec is empty")  # Nomad's JobsParseRequest text
    variables = body.get("Variables") or None
    try:
        job = _hcl().parse_job_hcl(text, variables=variables, canonicalize=bool(body.get("Canonicalize")))
    except ApiError as exc:
        if exc.status != 400:
            raise
        raise ApiError(400, _parse_failure(exc.message)) from None
    except Exception as exc:  # hclparse reports syntax/shape errors as exceptions
        raise ApiError(400, _parse_failure(str(exc))) from None
    return reply(job, ctx.store.index)


def _parse_failure(detail: str) -> str:
    """JobsParseRequest's text: CodedError(400, "Failed to parse job: " + jobspec2's diagnostics),
    e.g. "Failed to parse job: input.hcl:2,5-6: Invalid expression; ..." (hclparse says
    "error parsing: <diagnostics>" for the same failure)."""
    return "Failed to parse job: " + detail.removeprefix("error parsing: ")


async def validate(request: Request) -> Response:
    ctx = _ctx(request)
    body = await read_json(request)
    job = body.get("Job")
    if not isinstance(job, dict):
        raise ApiError(400, "Job must be specified")
    ctx.require_ns(request, write_namespace(request, body, job), "read-job", "submit-job")
    hcl = _hcl()
    errors, warnings = hcl.validate_job(hcl.canonicalize_job(copy.deepcopy(job)))
    out = {
        "DriverConfigValidated": True,
        "ValidationErrors": list(errors),
        "Error": multi_error(list(errors)) if errors else "",
        "Warnings": multi_error(list(warnings)) if warnings else "",
    }
    return reply(out, ctx.store.index)


async def jobs_list(request: Request) -> Response:
    ctx = _ctx(request)
    ns = ctx.namespace(request)
    if ns != "*":
        ctx.require_ns(request, ns, "list-jobs", "read-job")
    token = ctx.token(request)
    prefix = request.query_params.get("prefix", "")

    def produce() -> tuple[Any, int]:
        jobs = [j for j in ns_filter(ctx.store.list("jobs"), ns) if j["ID"].startswith(prefix)
                and ctx.authorizer.allow_namespace(token, j.get("Namespace", "default"), "list-jobs")]
        jobs.sort(key=lambda j: (j.get("Namespace", ""), j["ID"]))
        return [job_stub(ctx.store, j) for j in jobs], ctx.store.max_index(("jobs", "allocs", "evals"))

    return await blocking_reply(ctx, request, ("jobs", "allocs", "evals"), produce)


async def register(request: Request, path_id: str | None = None) -> Response:
    ctx = _ctx(request)
    body = await read_json(request)
    job = body.get("Job")
    if not isinstance(job, dict):
        raise ApiError(400, "Job must be specified")
    if not job.get("ID"):
        raise ApiError(400, "Job ID hasn't been provided")
    if path_id is not None and job["ID"] != path_id:
        raise ApiError(400, "Job ID does not match name")
    _require_job_region(ctx, request, body, job)
    ns = write_namespace(request, body, job)
    job["Namespace"] = ns
    ctx.require_ns(request, ns, "submit-job")
    ctx.require_known_namespace(ns)
    job, warnings = _canonical_and_valid(job)
    job["Namespace"] = ns
    existing = ctx.store.get("jobs", (ns, job["ID"]))
    if body.get("EnforceIndex"):
        enforce_index(existing, int(body.get("JobModifyIndex") or 0))
    if body.get("PreserveCounts") and existing is not None:
        old_counts = {tg["Name"]: tg.get("Count") for tg in existing.get("TaskGroups") or []}
        for tg in job.get("TaskGroups") or []:
            if tg["Name"] in old_counts:
                tg["Count"] = old_counts[tg["Name"]]
    stored, ev, idx = upsert_job_version(ctx, job, "job-register")
    return reply(register_reply(stored, ev, idx, warnings), idx)


async def jobs_root(request: Request) -> Response:
    if request.method == "GET":
        return await jobs_list(request)
    return await register(request)


async def job_item(request: Request) -> Response:
    ctx = _ctx(request)
    job_id = request.path_params["job_id"]
    ns = ctx.namespace(request)
    if request.method in ("PUT", "POST"):
        return await register(request, job_id)
    if request.method == "DELETE":
        return _deregister(ctx, request, ns, job_id)
    ctx.require_ns(request, ns, "read-job")

    def produce() -> tuple[Any, int]:
        job = ctx.store.get("jobs", (ns, job_id))
        if job is None:
            raise ApiError(404, "job not found")
        return job, job.get("ModifyIndex", 1)

    return await blocking_reply(ctx, request, ("jobs",), produce)


def _deregister(ctx: Ctx, request: Request, ns: str, job_id: str) -> Response:
    # Nomad's jobDelete parses its flags before anything else (a bad value is an uncoded 500).
    purge = query_bool(request, "purge", strict=True)
    query_bool(request, "global", strict=True)  # multi-region only: parsed, nothing to do here
    ctx.require_ns(request, ns, "submit-job")
    job = get_job(ctx.store, ns, job_id)
    if purge:
        idx = ctx.store.next_index()
        ctx.store.delete("jobs", (ns, job_id), event_type="JobDeregistered", namespace=ns,
                         payload_name="Job", index=idx, event_key=job_id)
        for key in [k for k in ctx.store.tables["job_versions"] if k[:2] == (ns, job_id)]:
            ctx.store.delete("job_versions", key, index=idx)
        ctx.store.delete("scaling_events", (ns, job_id), index=idx)
        purged = dict(job, Stop=True)
        ev = ctx.create_eval(purged, "job-deregister", index=idx)
        modify = job.get("JobModifyIndex", idx)
    else:
        stopped = dict(copy.deepcopy(job), Stop=True)
        stored, ev, idx = upsert_job_version(ctx, stopped, "job-deregister", create_eval=False)
        ev = ctx.create_eval(stored, "job-deregister", index=idx)
        modify = stored["JobModifyIndex"]
    out = {"EvalID": ev["ID"], "EvalCreateIndex": idx, "JobModifyIndex": modify,
           "VolumeEvalID": "", "VolumeEvalIndex": 0, "Index": idx, "LastContact": 0, "KnownLeader": True}
    return reply(out, idx)


async def plan(request: Request) -> Response:
    ctx = _ctx(request)
    body = await read_json(request)
    job = body.get("Job")
    if not isinstance(job, dict):
        raise ApiError(400, "Job must be specified")
    if job.get("ID") != request.path_params["job_id"]:
        raise ApiError(400, "Job ID does not match")
    _require_job_region(ctx, request, body, job)
    ns = write_namespace(request, body, job)
    job["Namespace"] = ns
    ctx.require_ns(request, ns, "submit-job")
    job, warnings = _canonical_and_valid(job)
    job["Namespace"] = ns
    existing = ctx.store.get("jobs", (ns, job["ID"]))
    if ctx.runtime is None:
        raise ApiError(500, "plan unavailable: devcluster runtime not running")
    result = dict(ctx.runtime.plan(copy.deepcopy(job)))
    diff = None
    if body.get("Diff"):
        # Nomad's Job.Plan runs scheduler.Annotate over the diff: group `Updates` come from the
        # plan's DesiredTGUpdates ("create", "in-place update", "create/destroy update", ...).
        diff = _hcl().annotate_diff(_hcl().diff_jobs(existing, job),
                                    (result.get("Annotations") or {}).get("DesiredTGUpdates"))
    out: dict[str, Any] = {
        "Annotations": result.get("Annotations"),
        "FailedTGAllocs": result.get("FailedTGAllocs"),
        "JobModifyIndex": existing.get("JobModifyIndex", 0) if existing else 0,
        "CreatedEvals": result.get("CreatedEvals"),
        "Diff": diff,
        "NextPeriodicLaunch": result.get("NextPeriodicLaunch", "0001-01-01T00:00:00Z"),
        "Warnings": warnings,
        "Index": ctx.store.index,
    }
    return reply(out, ctx.store.index)


async def versions(request: Request) -> Response:
    ctx = _ctx(request)
    ns, job_id = ctx.namespace(request), request.path_params["job_id"]
    ctx.require_ns(request, ns, "read-job")
    want_diffs = query_bool(request, "diffs", strict=True)

    def produce() -> tuple[Any, int]:
        vers = sorted((v for k, v in ctx.store.tables["job_versions"].items() if k[:2] == (ns, job_id)),
                      key=lambda v: -v.get("Version", 0))
        diffs = None
        if want_diffs:
            diff = _hcl().diff_jobs
            diffs = [diff(vers[i + 1], vers[i]) for i in range(len(vers) - 1)]
        if not vers:  # Nomad's jobVersions: `len(out.Versions) == 0` -> 404 with its own text
            raise ApiError(404, "job versions not found")
        return {"Versions": vers, "Diffs": diffs}, ctx.store.max_index(("job_versions",))

    return await blocking_reply(ctx, request, ("job_versions",), produce)


async def revert(request: Request) -> Response:
    ctx = _ctx(request)
    body = await read_json(request)
    job_id = request.path_params["job_id"]
    if body.get("JobID", job_id) != job_id:
        raise ApiError(400, "Job ID does not match")
    ns = write_namespace(request, body)
    ctx.require_ns(request, ns, "submit-job")
    current = get_job(ctx.store, ns, job_id)
    want = body.get("JobVersion")
    if not isinstance(want, int):
        raise ApiError(400, "JobVersion must be specified")
    prior = body.get("EnforcePriorVersion")
    if prior is not None and prior != current.get("Version"):
        raise ApiError(500, f"Current job has version {current.get('Version')}; enforcing version {prior}")
    if want == current.get("Version"):
        raise ApiError(500, f"can't revert to current version {want}")
    old = ctx.store.get("job_versions", (ns, job_id, want))
    if old is None:
        raise ApiError(404, f'job "{job_id}" in namespace "{ns}" at version {want} not found')
    stored, ev, idx = upsert_job_version(ctx, copy.deepcopy(old), "job-register")
    return reply(register_reply(stored, ev, idx), idx)


def _job_sublist(table: str, select: Any, extra_tables: tuple[str, ...] = ()) -> Any:
    async def handler(request: Request) -> Response:
        ctx = _ctx(request)
        ns, job_id = ctx.namespace(request), request.path_params["job_id"]
        ctx.require_ns(request, ns, "read-job")
        tables = (table,) + extra_tables

        def produce() -> tuple[Any, int]:
            return select(ctx, ns, job_id, request), ctx.store.max_index(tables)

        return await blocking_reply(ctx, request, tables, produce)

    return handler


def _allocs(ctx: Ctx, ns: str, job_id: str, request: Request) -> list[dict[str, Any]]:
    allocs = job_allocs(ctx.store, ns, job_id, any_create_index=query_bool(request, "all"))
    return [alloc_stub(a) for a in sorted(allocs, key=lambda a: a.get("CreateIndex", 0))]


def _evals(ctx: Ctx, ns: str, job_id: str, request: Request) -> list[dict[str, Any]]:
    return sorted((e for e in ctx.store.list("evals") if e.get("JobID") == job_id
                   and e.get("Namespace", "default") == ns), key=lambda e: -e.get("CreateIndex", 0))


def _deployments(ctx: Ctx, ns: str, job_id: str, request: Request) -> list[dict[str, Any]]:
    deps = job_deployments(ctx.store, ns, job_id, any_create_index=query_bool(request, "all"))
    return sorted(deps, key=lambda d: -d.get("CreateIndex", 0))


def _latest_deployment(ctx: Ctx, ns: str, job_id: str, request: Request) -> dict[str, Any] | None:
    return latest_deployment(ctx.store, ns, job_id, any_create_index=query_bool(request, "all"))


def _services(ctx: Ctx, ns: str, job_id: str, request: Request) -> list[dict[str, Any]]:
    """`/v1/job/:id/services` (Nomad's jobServiceRegistrations): the job's registrations, 404
    "job not found" when the job does not exist (an existing job without services gives [])."""
    get_job(ctx.store, ns, job_id)
    regs = [r for r in ctx.store.list("services")
            if r.get("JobID") == job_id and r.get("Namespace", "default") == ns]
    return sorted(regs, key=lambda r: r.get("CreateIndex", 0))


def _summary(ctx: Ctx, ns: str, job_id: str, request: Request) -> dict[str, Any]:
    return job_summary(ctx.store, get_job(ctx.store, ns, job_id))


ROUTES = [
    Route("/v1/jobs/parse", parse, methods=["POST", "PUT"]),
    Route("/v1/jobs", jobs_root, methods=["GET", "POST", "PUT"]),
    Route("/v1/validate/job", validate, methods=["POST", "PUT"]),
    Route("/v1/job/{job_id}/plan", plan, methods=["POST", "PUT"]),
    Route("/v1/job/{job_id}/versions", versions, methods=["GET"]),
    Route("/v1/job/{job_id}/revert", revert, methods=["POST", "PUT"]),
    Route("/v1/job/{job_id}/allocations", _job_sublist("allocs", _allocs), methods=["GET"]),
    Route("/v1/job/{job_id}/evaluations", _job_sublist("evals", _evals), methods=["GET"]),
    Route("/v1/job/{job_id}/deployments", _job_sublist("deployments", _deployments), methods=["GET"]),
    Route("/v1/job/{job_id}/deployment",
          _job_sublist("deployments", _latest_deployment), methods=["GET"]),
    Route("/v1/job/{job_id}/services", _job_sublist("services", _services, ("jobs",)), methods=["GET"]),
    Route("/v1/job/{job_id}/summary", _job_sublist("allocs", _summary, ("jobs", "evals")), methods=["GET"]),
    Route("/v1/job/{job_id}", job_item, methods=["GET", "POST", "PUT", "DELETE"]),
]
