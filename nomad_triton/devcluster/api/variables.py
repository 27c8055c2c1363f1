"""/v1/vars and /v1/var/:path: Nomad Variables with check-and-set and locks.

Shapes follow Nomad's Variables API: list returns VariableMetadata (no Items); read returns the
variable with Items (404 "variable not found"); PUT needs Items, `?cas=N` conflicts answer 409
with the current variable; DELETE answers 204. Locks (`?lock-acquire|lock-renew|lock-release`)
answer 409 while held by another holder; the lock ID is only ever returned to its holder.
Variable events carry metadata only, so secrets never reach the event stream.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import ApiError
from ..store import Event
from .common import Ctx, blocking_reply, format_duration, now_ns, parse_duration, read_json, reply
from .locks import MAX_TTL_S, MIN_TTL_S, HeldLock, LockTable

META_KEYS = ("Namespace", "Path", "CreateIndex", "ModifyIndex", "CreateTime", "ModifyTime", "Lock")


def _ctx(request: Request) -> Ctx:
    return request.app.state.ctx


def locks(ctx: Ctx) -> LockTable:
    """The lock table; after a restart it is rebuilt from the stored holders with a full TTL
    (as Nomad restarts its lock TTL timers when a new leader takes over)."""
    table = ctx.extras.get("locks")
    if table is None:
        table = ctx.extras["locks"] = LockTable()
        for key, held in ctx.store.tables["var_locks"].items():
            table.restore(key, held["ID"], float(held["TTL"]), float(held["LockDelay"]))
    return table


def _remember_lock(ctx: Ctx, key: tuple[str, str], lock: HeldLock | None, idx: int) -> None:
    """Keep the holder in the store (same transaction as the variable) so a restart keeps it."""
    if lock is None:
        ctx.store.delete("var_locks", key, index=idx)
    else:
        ctx.store.upsert("var_locks", key, {"ID": lock.id, "TTL": lock.ttl_s, "LockDelay": lock.delay_s},
                         index=idx)


def metadata(var: dict[str, Any]) -> dict[str, Any]:
    return {k: var[k] for k in META_KEYS if k in var}


def _write(ctx: Ctx, key: tuple[str, str], var: dict[str, Any] | None, event_type: str) -> int:
    store = ctx.store
    idx = store.next_index()
    if var is None:
        old = store.get("vars", key) or {"Namespace": key[0], "Path": key[1]}
        store.delete("vars", key, index=idx)
        payload = metadata(old)
    else:
        store.upsert("vars", key, var, index=idx)
        payload = metadata(var)
    store.publish(Event("Variables", event_type, key[1], key[0], idx, {"Variable": payload}))
    return idx


async def vars_list(request: Request) -> Response:
    ctx = _ctx(request)
    ns = ctx.namespace(request)
    prefix = request.query_params.get("prefix", "")
    token = ctx.token(request)

    def produce() -> tuple[Any, int]:
        out = [metadata(v) for (vns, path), v in sorted(ctx.store.tables["vars"].items())
               if (ns == "*" or vns == ns) and path.startswith(prefix)
               and ctx.authorizer.allow_variable(token, vns, path, "list")]
        return out, ctx.store.max_index(("vars",))

    return await blocking_reply(ctx, request, ("vars",), produce)


def _parse_cas(request: Request) -> int | None:
    raw = request.query_params.get("cas")
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()):  # ParseUint: digits only, no sign or spaces
        # variable_endpoint.go parseCAS: strconv.ParseUint's error after Nomad's prefix
        raise ApiError(400, f'can not parse cas: strconv.ParseUint: parsing "{raw}": invalid syntax')
    return int(raw)


def _conflict(var: dict[str, Any] | None, key: tuple[str, str], with_items: bool = False) -> Response:
    """409 with the current variable; Items only where the caller may read them (CAS conflicts)."""
    body = (copy.deepcopy(var) if with_items else metadata(var)) if var else {"Namespace": key[0], "Path": key[1], "CreateIndex": 0,
                                            "ModifyIndex": 0, "CreateTime": 0, "ModifyTime": 0}
    return reply(body, body.get("ModifyIndex", 0), status=409)


def _lock_params(body: dict[str, Any]) -> tuple[float, float]:
    lock = body.get("Lock") or {}
    try:
        ttl = parse_duration(str(lock.get("TTL") or "15s"))
        delay = parse_duration(str(lock.get("LockDelay") or "15s"))
    except ValueError as exc:
        raise ApiError(400, f"invalid lock: {exc}") from None
    if not MIN_TTL_S <= ttl <= MAX_TTL_S:
        raise ApiError(400, f"lock TTL must be between {format_duration(MIN_TTL_S)} and 24h")
    return ttl, delay


async def var_item(request: Request) -> Response:
    ctx = _ctx(request)
    path = request.path_params["path"]
    if not path:
        raise ApiError(400, "missing variable path")
    if request.method not in ("GET", "PUT", "POST", "DELETE"):
        raise ApiError(400, "Invalid method")  # VariableSpecificRequest answers 400 here, not 405
    qp = request.query_params
    body: dict[str, Any] = {}
    if request.method in ("PUT", "POST"):
        body = await read_json(request, required=False)
    ns = qp.get("namespace") or body.get("Namespace") or "default"
    key = (ns, path)
    token = ctx.token(request)
    table = locks(ctx)

    if request.method == "GET":
        ctx.authorizer.require_variable(token, ns, path, "read")

        def produce() -> tuple[Any, int]:
            var = ctx.store.get("vars", key)
            if var is None:
                raise ApiError(404, "variable not found")
            return var, var.get("ModifyIndex", 1)

        return await blocking_reply(ctx, request, ("vars",), produce)

    if request.method == "DELETE":
        ctx.authorizer.require_variable(token, ns, path, "destroy")
        var = ctx.store.get("vars", key)
        cas = _parse_cas(request)
        if cas is not None and (var or {}).get("ModifyIndex", 0) != cas:
            return _conflict(var, key, ctx.authorizer.allow_variable(token, ns, path, "read"))
        if table.holder(key) is not None:
            return _conflict(var, key)
        if var is not None:
            idx = _write(ctx, key, None, "VariableDeleted")
        else:
            idx = ctx.store.index
        return Response(status_code=204, headers={"X-Nomad-Index": str(idx)})

    ctx.authorizer.require_variable(token, ns, path, "write")
    existing = ctx.store.get("vars", key)
    given_id = (body.get("Lock") or {}).get("ID", "")
    if "lock-acquire" in qp:
        ttl, delay = _lock_params(body)
        lock = table.acquire(key, ttl, delay)
        if lock is None:
            return _conflict(existing, key)
        var = _merged(existing, ns, path, body.get("Items"))
        var["Lock"] = {"TTL": format_duration(ttl), "LockDelay": format_duration(delay)}
        idx = _write(ctx, key, var, "VariableUpserted")
        _remember_lock(ctx, key, lock, idx)
        out = copy.deepcopy(var)
        out["Lock"]["ID"] = lock.id
        return reply(out, idx)
    if "lock-renew" in qp:
        lock = table.renew(key, given_id)
        if lock is None or existing is None:
            return _conflict(existing, key)
        out = metadata(existing)
        out["Lock"] = dict(existing.get("Lock") or {}, ID=lock.id)
        return reply(out, existing.get("ModifyIndex", 1))
    if "lock-release" in qp:
        if existing is None or not table.release(key, given_id):
            return _conflict(existing, key)
        var = copy.deepcopy(existing)
        var.pop("Lock", None)
        var["ModifyTime"] = now_ns()
        idx = _write(ctx, key, var, "VariableUpserted")
        _remember_lock(ctx, key, None, idx)
        return reply(var, idx)

    items = body.get("Items")
    if not isinstance(items, dict) or not items:
        raise ApiError(400, "variable missing required Items object")
    cas = _parse_cas(request)
    if cas is not None and (existing or {}).get("ModifyIndex", 0) != cas:
        return _conflict(existing, key, ctx.authorizer.allow_variable(token, ns, path, "read"))
    held = table.holder(key)
    if held is not None and held.id != given_id:
        return _conflict(existing, key)
    var = _merged(existing, ns, path, items)
    idx = _write(ctx, key, var, "VariableUpserted")
    return reply(var, idx)


def _merged(existing: dict[str, Any] | None, ns: str, path: str, items: Any) -> dict[str, Any]:
    ts = now_ns()
    var = copy.deepcopy(existing) if existing else {"Namespace": ns, "Path": path, "CreateTime": ts,
                                                    "CreateIndex": 0, "Items": {}}
    if isinstance(items, dict) and items:
        var["Items"] = {str(k): str(v) for k, v in items.items()}
    var["ModifyTime"] = ts
    return var


async def expire_locks_forever(ctx: Ctx, poll_s: float = 1.0) -> None:
    """Background task: drop TTL-expired locks from stored variables (so readers see them gone)."""
    table = locks(ctx)
    while True:
        nxt = table.next_expiry()
        delay = poll_s if nxt is None else max(0.01, min(poll_s, nxt - table.clock()))
        await asyncio.sleep(delay)
        table.expire()
        # every lock no longer held (expired here or lazily by a request) leaves the variable
        for key in [k for k in ctx.store.tables["var_locks"] if k not in table.held]:
            var = ctx.store.get("vars", key)
            with ctx.store.batch():
                if var is not None and "Lock" in var:
                    var = copy.deepcopy(var)
                    var.pop("Lock", None)
                    _remember_lock(ctx, key, None, _write(ctx, key, var, "VariableUpserted"))
                elif key in ctx.store.tables["var_locks"]:
                    _remember_lock(ctx, key, None, ctx.store.next_index())


ROUTES = [
    Route("/v1/vars", vars_list, methods=["GET"]),
    Route("/v1/var/{path:path}", var_item, methods=["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"]),
]
