"""Reads about allocations that Nomad's API has and the official Go client calls:
`/v1/evaluation/:id/allocations`, `/v1/allocation/:id/services` and
`/v1/client/allocation/:id/checks`.

Why: tools written against Nomad (the `nomad` CLI's eval status, alloc status, our conformance
program) call these; without them devcluster answered 404 where Nomad answers with data.
Shapes follow the Go client's types (AllocationListStub, ServiceRegistration, AllocCheckStatuses).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import ApiError
from .common import Ctx, blocking_reply, reply
from .jobs_logic import alloc_stub


def _ctx(request: Request) -> Ctx:
    return request.app.state.ctx


async def eval_allocations(request: Request) -> Response:
    """Allocation stubs an evaluation created; read-job on the request namespace, [] if none."""
    ctx = _ctx(request)
    eval_id = request.path_params["id"]
    ns = ctx.namespace(request)
    ctx.require_ns(request, ns, "read-job")

    def produce() -> tuple[Any, int]:
        allocs = [alloc_stub(a) for a in ctx.store.list("allocs")
                  if a.get("EvalID") == eval_id and a.get("Namespace", "default") == ns]
        allocs.sort(key=lambda a: a.get("CreateIndex", 0))
        return allocs, ctx.store.max_index(("allocs",))

    return await blocking_reply(ctx, request, ("allocs",), produce)


async def alloc_services(request: Request) -> Response:
    """Service registrations of one allocation; read-job in its namespace."""
    ctx = _ctx(request)
    alloc_id = request.path_params["id"]

    def produce() -> tuple[Any, int]:
        alloc = ctx.store.get("allocs", alloc_id)
        ns = (alloc or {}).get("Namespace") or ctx.namespace(request)
        ctx.require_ns(request, ns, "read-job")
        regs = [r for r in ctx.store.list("services") if r.get("AllocID") == alloc_id]
        regs.sort(key=lambda r: r.get("CreateIndex", 0))
        return regs, ctx.store.max_index(("services",))

    return await blocking_reply(ctx, request, ("services",), produce)


async def alloc_checks(request: Request) -> Response:
    """Latest result of each Nomad service check of a running allocation (client endpoint)."""
    ctx = _ctx(request)
    alloc_id = request.path_params["id"]
    alloc = ctx.store.get("allocs", alloc_id)
    if alloc is None:
        raise ApiError(404, f'Unknown allocation "{alloc_id}"')  # structs.NewErrUnknownAllocation
    ctx.require_ns(request, alloc.get("Namespace", "default"), "read-job")
    results = ctx.runtime.alloc_checks(alloc_id) if ctx.runtime is not None else {}
    return reply(results, ctx.store.index)


ROUTES = [
    Route("/v1/evaluation/{id}/allocations", eval_allocations, methods=["GET"]),
    Route("/v1/allocation/{id}/services", alloc_services, methods=["GET"]),
    Route("/v1/client/allocation/{id}/checks", alloc_checks, methods=["GET"]),
]
