"""Evaluations, allocations (+stop, logs), deployments (+promote/fail), nodes, node pools,
services, status, agent and ACL-self endpoints.

Handlers only read the store or ask the runtime to change desired state (stop an allocation,
promote/fail a deployment); the runtime does the work and writes the results back.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import ApiError
from .common import (
    Ctx,
    blocking_reply,
    go_parse_bool,
    ns_filter,
    prefix_filter,
    query_bool,
    read_json,
    reply,
)
from .jobs_logic import alloc_stub

LEADER = "127.0.0.1:4647"
TERMINAL_CLIENT = ("complete", "failed", "lost")


def _ctx(request: Request) -> Ctx:
    return request.app.state.ctx


def _need_runtime(ctx: Ctx) -> Any:
    if ctx.runtime is None:
        raise ApiError(500, "devcluster runtime not running")
    return ctx.runtime


def _listing(table: str, *, cap: str = "read-job", stub: Any = None, ns_scoped: bool = True) -> Any:
    async def handler(request: Request) -> Response:
        ctx = _ctx(request)
        ns = ctx.namespace(request)
        if ns_scoped:
            if ns != "*":
                ctx.require_ns(request, ns, cap)
        else:
            ctx.require_coarse(request, "node", "read")
        token = ctx.token(request)

        def produce() -> tuple[Any, int]:
            items = ctx.store.list(table)
            if ns_scoped:
                items = [i for i in ns_filter(items, ns)
                         if ctx.authorizer.allow_namespace(token, i.get("Namespace", "default"), cap)]
            items = prefix_filter(items, request)
            items.sort(key=lambda i: i.get("CreateIndex", 0))
            return [stub(i, request) if stub else i for i in items], ctx.store.max_index((table,))

        return await blocking_reply(ctx, request, (table,), produce)

    return handler


def _alloc_list_stub(alloc: dict[str, Any], request: Request) -> dict[str, Any]:
    """alloc_endpoint.go AllocsRequest: `resources` / `task_states` select stub fields (parseBool)."""
    task_states = request.query_params.get("task_states", "") == "" or \
        query_bool(request, "task_states", strict=True)
    return alloc_stub(alloc, resources=query_bool(request, "resources", strict=True), task_states=task_states)


def _item(table: str, not_found: str, *, cap: str = "read-job", ns_scoped: bool = True) -> Any:
    async def handler(request: Request) -> Response:
        ctx = _ctx(request)
        key = request.path_params["id"]
        token = ctx.token(request)

        def produce() -> tuple[Any, int]:
            # Exact IDs only: Nomad's AllocByID/EvalByID/DeploymentByID/NodeByID do no prefix
            # matching (its CLI expands short IDs through `?prefix=` on the list endpoints).
            obj = ctx.store.get(table, key)
            if obj is None:
                raise ApiError(404, not_found)
            if ns_scoped:
                if not ctx.authorizer.allow_namespace(token, obj.get("Namespace", "default"), cap):
                    raise ApiError(403, "Permission denied")
            elif not ctx.authorizer.allow_coarse(token, "node", "read"):
                raise ApiError(403, "Permission denied")
            return obj, obj.get("ModifyIndex", 1)

        return await blocking_reply(ctx, request, (table,), produce)

    return handler


async def alloc_stop(request: Request) -> Response:
    ctx = _ctx(request)
    alloc = ctx.store.get("allocs", request.path_params["id"])
    if alloc is None:  # alloc_endpoint.go allocStop: CodedError(404, allocNotFoundErr)
        raise ApiError(404, "allocation not found")
    ctx.require_ns(request, alloc.get("Namespace", "default"), "alloc-lifecycle")
    ev = await _maybe_await(_need_runtime(ctx).stop_alloc(alloc["ID"]))
    return reply({"EvalID": ev["ID"], "Index": ev.get("CreateIndex", ctx.store.index)}, ctx.store.index)


async def _maybe_await(value: Any) -> Any:
    if asyncio.iscoroutine(value):
        return await value
    return value


async def logs(request: Request) -> Response:
    """`/v1/client/fs/logs/:alloc_id`: plain text with plain=true, else Nomad's JSON frames.

    Argument checks follow command/agent/fs_endpoint.go Logs, in its order and with its 400 texts:
    task, follow, plain, type (required, no default), offset, origin.
    """
    ctx = _ctx(request)
    qp = request.query_params
    task, kind = qp.get("task", ""), qp.get("type", "")
    if not task:
        raise ApiError(400, "must provide task name")
    follow = _log_flag(request, "follow")
    plain = _log_flag(request, "plain")
    if kind not in ("stdout", "stderr"):
        raise ApiError(400, "must provide log type (stdout/stderr)")
    try:
        offset = int(qp.get("offset", "0") or 0)
    except ValueError:
        raise ApiError(400, f'error parsing offset: strconv.ParseInt: parsing "{qp["offset"]}": '
                            "invalid syntax") from None
    origin = qp.get("origin") or "start"
    if origin not in ("start", "end"):
        raise ApiError(400, "origin must be start or end")
    alloc_id = request.path_params["id"]
    alloc = ctx.store.get("allocs", alloc_id)
    if alloc is None:
        raise ApiError(404, f'Unknown allocation "{alloc_id}"')  # structs.NewErrUnknownAllocation
    ctx.require_ns(request, alloc.get("Namespace", "default"), "read-logs")
    path = Path(_need_runtime(ctx).alloc_log_path(alloc["ID"], task, kind))
    data = path.read_bytes() if path.exists() else b""
    start = max(0, len(data) - offset) if origin == "end" else min(offset, len(data))
    chunk = data[start:]
    if not follow:
        if plain:
            return PlainTextResponse(chunk.decode("utf-8", "replace"))
        frame = {"File": f"alloc/logs/{task}.{kind}.0", "Offset": start + len(chunk),
                 "Data": base64.b64encode(chunk).decode()} if chunk else {}
        return reply(frame, ctx.store.index)
    return StreamingResponse(_follow(ctx, alloc["ID"], path, task, kind, start, plain),
                             media_type="text/plain" if plain else "application/json")


def _log_flag(request: Request, name: str) -> bool:
    """Logs' follow/plain: Go ParseBool, a bad value is 400 "failed to parse <name> field ..."."""
    raw = request.query_params.get(name, "")
    if raw == "":
        return False
    try:
        return go_parse_bool(raw)
    except ValueError as exc:
        raise ApiError(400, f"failed to parse {name} field to boolean: {exc}") from None


async def _follow(ctx: Ctx, alloc_id: str, path: Path, task: str, kind: str, pos: int, plain: bool) -> Any:
    """Tail a log file until the allocation is terminal and the file is drained."""
    while True:
        data = path.read_bytes() if path.exists() else b""
        if len(data) > pos:
            chunk, pos = data[pos:], len(data)
            if plain:
                yield chunk
            else:
                frame = {"File": f"alloc/logs/{task}.{kind}.0", "Offset": pos,
                         "Data": base64.b64encode(chunk).decode()}
                import json

                yield (json.dumps(frame) + "\n").encode()
        alloc = ctx.store.get("allocs", alloc_id) or {}
        if alloc.get("ClientStatus") in TERMINAL_CLIENT or not alloc:
            return
        await asyncio.sleep(0.2)


async def deployment_action(request: Request) -> Response:
    ctx = _ctx(request)
    dep_id = request.path_params["id"]
    promote = request.url.path.startswith("/v1/deployment/promote/")
    body: dict[str, Any] = {}
    if promote:
        # deployment_endpoint.go deploymentPromote checks its body before the lookup; fail takes none.
        body = await read_json(request)
        if not body.get("DeploymentID"):
            raise ApiError(400, "DeploymentID must be specified")
        if body["DeploymentID"] != dep_id:
            raise ApiError(400, "Deployment ID does not match")
    dep = ctx.store.get("deployments", dep_id)
    if dep is None:
        raise ApiError(404, "deployment not found")
    ctx.require_ns(request, dep.get("Namespace", "default"), "submit-job")
    runtime = _need_runtime(ctx)
    if promote:
        groups = None if body.get("All") or not body.get("Groups") else list(body["Groups"])
        ev = await _maybe_await(runtime.promote_deployment(dep_id, groups))
    else:
        ev = await _maybe_await(runtime.fail_deployment(dep_id))
    dep = ctx.store.get("deployments", dep_id) or dep
    out = {"EvalID": ev["ID"] if ev else "", "EvalCreateIndex": ev.get("CreateIndex", 0) if ev else 0,
           "DeploymentModifyIndex": dep.get("ModifyIndex", 0), "RevertedJobVersion": None,
           "Index": ctx.store.index}
    return reply(out, ctx.store.index)


async def deployment_allocs(request: Request) -> Response:
    ctx = _ctx(request)
    dep_id = request.path_params["id"]
    # nomad/deployment_endpoint.go Allocations: read-job on the request's namespace, then
    # AllocsByDeployment filtered to that namespace; an unknown deployment is simply [] (no 404).
    ns = ctx.namespace(request)
    ctx.require_ns(request, ns, "read-job")

    def produce() -> tuple[Any, int]:
        allocs = [alloc_stub(a) for a in ctx.store.list("allocs") if a.get("DeploymentID") == dep_id
                  and a.get("Namespace", "default") == ns]
        return allocs, ctx.store.max_index(("allocs",))

    return await blocking_reply(ctx, request, ("allocs", "deployments"), produce)


def node_stub(node: dict[str, Any], resources: bool = False) -> dict[str, Any]:
    keys = ("ID", "Datacenter", "Name", "NodeClass", "NodePool", "Version", "Drain", "SchedulingEligibility",
            "Status", "StatusDescription", "Drivers", "HostVolumes", "LastDrain", "Address", "CreateIndex",
            "ModifyIndex")
    stub = {k: node.get(k) for k in keys}
    stub["Address"] = node.get("HTTPAddr", "127.0.0.1").split(":")[0]
    if resources:
        stub["NodeResources"] = node.get("NodeResources")
        stub["ReservedResources"] = node.get("ReservedResources")
    return stub


async def nodes(request: Request) -> Response:
    ctx = _ctx(request)
    ctx.require_coarse(request, "node", "read")
    resources = query_bool(request, "resources")

    def produce() -> tuple[Any, int]:
        items = sorted(prefix_filter(ctx.store.list("nodes"), request), key=lambda n: n.get("Name", ""))
        return [node_stub(n, resources) for n in items], ctx.store.max_index(("nodes",))

    return await blocking_reply(ctx, request, ("nodes",), produce)


async def node_allocs(request: Request) -> Response:
    ctx = _ctx(request)
    ctx.require_coarse(request, "node", "read")
    node_id = request.path_params["id"]

    def produce() -> tuple[Any, int]:
        if ctx.store.get("nodes", node_id) is None:
            raise ApiError(404, "node not found")
        return [a for a in ctx.store.list("allocs") if a.get("NodeID") == node_id], ctx.store.max_index(("allocs",))

    return await blocking_reply(ctx, request, ("allocs",), produce)


async def node_pools(request: Request) -> Response:
    ctx = _ctx(request)
    ctx.require_coarse(request, "node", "read")

    def produce() -> tuple[Any, int]:
        pools = sorted(prefix_filter(ctx.store.list("node_pools"), request, "Name"), key=lambda p: p["Name"])
        return pools, ctx.store.max_index(("node_pools",))

    return await blocking_reply(ctx, request, ("node_pools",), produce)


async def node_pool(request: Request) -> Response:
    ctx = _ctx(request)
    ctx.require_coarse(request, "node", "read")
    name = request.path_params["name"]

    def produce() -> tuple[Any, int]:
        pool = ctx.store.get("node_pools", name)
        if pool is None:
            raise ApiError(404, "node pool not found")
        return pool, pool.get("ModifyIndex", 1)

    return await blocking_reply(ctx, request, ("node_pools",), produce)


async def services(request: Request) -> Response:
    ctx = _ctx(request)
    ns = ctx.namespace(request)
    if ns != "*":
        ctx.require_ns(request, ns, "read-job")

    def produce() -> tuple[Any, int]:
        by_ns: dict[str, dict[str, set[str]]] = {}
        for reg in ns_filter(ctx.store.list("services"), ns):
            names = by_ns.setdefault(reg.get("Namespace", "default"), {})
            names.setdefault(reg["ServiceName"], set()).update(reg.get("Tags") or [])
        out = [{"Namespace": n, "Services": [{"ServiceName": s, "Tags": sorted(t)} for s, t in sorted(v.items())]}
               for n, v in sorted(by_ns.items())]
        return out, ctx.store.max_index(("services",))

    return await blocking_reply(ctx, request, ("services",), produce)


async def service(request: Request) -> Response:
    ctx = _ctx(request)
    ns = ctx.namespace(request)
    name = request.path_params["name"]
    if request.method == "DELETE":
        raise ApiError(405, "Invalid method")
    ctx.require_ns(request, ns, "read-job")

    def produce() -> tuple[Any, int]:
        regs = [r for r in ns_filter(ctx.store.list("services"), ns) if r.get("ServiceName") == name]
        regs.sort(key=lambda r: r.get("CreateIndex", 0))
        return regs, ctx.store.max_index(("services",))

    return await blocking_reply(ctx, request, ("services",), produce)


async def leader(request: Request) -> Response:
    return reply(LEADER, _ctx(request).store.index)


async def peers(request: Request) -> Response:
    return reply([LEADER], _ctx(request).store.index)


async def regions(request: Request) -> Response:
    return reply([_ctx(request).config.server.region], _ctx(request).store.index)


async def agent_self(request: Request) -> Response:
    ctx = _ctx(request)
    ctx.require_coarse(request, "agent", "read")
    cfg = ctx.config.server
    port = request.url.port or cfg.port
    out = {
        "config": {"Region": cfg.region, "Datacenter": cfg.datacenter, "Version": {"Version": "1.9.0-devcluster"},
                   "ACL": {"Enabled": cfg.acl}, "Server": {"Enabled": True}, "Client": {"Enabled": True},
                   "BindAddr": cfg.bind, "Ports": {"HTTP": port}},
        "member": {"Name": "devcluster.global", "Addr": cfg.bind, "Port": 4648, "Status": "alive",
                   "Tags": {"region": cfg.region, "dc": cfg.datacenter, "role": "nomad", "build": "1.9.0",
                            "port": "4647"}},
        "stats": {"nomad": {"leader": "true", "server": "true"}},
    }
    return reply(out, ctx.store.index)


async def token_self(request: Request) -> Response:
    ctx = _ctx(request)
    if not ctx.config.server.acl:
        raise ApiError(400, "ACL support disabled")
    tok = ctx.token(request)
    if tok is None:
        raise ApiError(403, "Permission denied")
    return reply(tok, tok.get("ModifyIndex", 1))


ROUTES = [
    Route("/v1/evaluations", _listing("evals"), methods=["GET"]),
    Route("/v1/evaluation/{id}", _item("evals", "eval not found"), methods=["GET"]),
    Route("/v1/allocations", _listing("allocs", stub=_alloc_list_stub), methods=["GET"]),
    Route("/v1/allocation/{id}/stop", alloc_stop, methods=["POST", "PUT"]),
    Route("/v1/allocation/{id}", _item("allocs", "alloc not found"), methods=["GET"]),
    Route("/v1/client/allocation/{id}/stop", alloc_stop, methods=["POST", "PUT"]),
    Route("/v1/client/fs/logs/{id}", logs, methods=["GET"]),
    Route("/v1/deployments", _listing("deployments"), methods=["GET"]),
    Route("/v1/deployment/promote/{id}", deployment_action, methods=["POST", "PUT"]),
    Route("/v1/deployment/fail/{id}", deployment_action, methods=["POST", "PUT"]),
    Route("/v1/deployment/allocations/{id}", deployment_allocs, methods=["GET"]),
    Route("/v1/deployment/{id}", _item("deployments", "deployment not found"), methods=["GET"]),
    Route("/v1/nodes", nodes, methods=["GET"]),
    Route("/v1/node/pools", node_pools, methods=["GET"]),
    Route("/v1/node/pool/{name}", node_pool, methods=["GET"]),
    Route("/v1/node/{id}/allocations", node_allocs, methods=["GET"]),
    Route("/v1/node/{id}", _item("nodes", "node not found", ns_scoped=False), methods=["GET"]),
    Route("/v1/services", services, methods=["GET"]),
    Route("/v1/service/{name}", service, methods=["GET"]),
    Route("/v1/status/leader", leader, methods=["GET"]),
    Route("/v1/status/peers", peers, methods=["GET"]),
    Route("/v1/regions", regions, methods=["GET"]),
    Route("/v1/agent/self", agent_self, methods=["GET"]),
    Route("/v1/acl/token/self", token_self, methods=["GET"]),
]
