"""`GET /v1/event/stream`: Nomad's NDJSON event stream with topic filters, resume and heartbeats.

Semantics followed (Nomad's event broker): each line is `{"Index": N, "Events": [...]}` grouping
the events of one raft index; `{}` is a heartbeat; `topic=Topic:Key` (repeatable, `*` wildcards;
a key matches an event's Key or any of its FilterKeys, e.g. allocations by job ID); `index=N`
starts from buffered events at index >= N (0, the default, = everything still buffered); `namespace=` (default
"default", `*` = all).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ..errors import ApiError
from ..store import TOPIC_BY_TABLE, Event
from .common import SLICE_S, Ctx

KNOWN_TOPICS = set(TOPIC_BY_TABLE.values()) | {"*", "ACLToken", "ACLPolicy", "ACLRole", "Operator"}


def parse_topics(values: list[str]) -> dict[str, set[str]]:
    """`["Job:web", "Deployment"]` -> {"Job": {"web"}, "Deployment": {"*"}}; none -> everything."""
    topics: dict[str, set[str]] = {}
    for raw in values:
        # Nomad's parseTopic: split on ":"; one part is Topic:*, two are Topic:Key, more is a 400.
        parts = raw.split(":")
        if len(parts) > 2:
            raise ApiError(400, "Invalid topic query: error parsing topics: "
                                f"Invalid key value pair for topic, topic: {raw}")
        topic, key = parts[0], parts[1] if len(parts) == 2 else "*"
        topics.setdefault(topic, set()).add(key)
    return topics or {"*": {"*"}}


def event_matches(event: Event, topics: dict[str, set[str]], namespace: str) -> bool:
    if namespace != "*" and event.namespace not in ("", namespace):
        return False
    keys = topics.get(event.topic, set()) | topics.get("*", set())
    if not keys:
        return False
    if "*" in keys:
        return True
    return event.key in keys or any(k in keys for k in event.filter_keys)


async def stream_events(
    ctx: Ctx, topics: dict[str, set[str]], namespace: str, start_index: int, heartbeat_s: float
) -> AsyncIterator[bytes]:
    store = ctx.store
    tables = tuple(TOPIC_BY_TABLE)
    # index=0 (the default) plays back every buffered event, then follows (Nomad's event broker
    # starts a subscription at the buffer's oldest item unless an index is given; see #9418).
    last = (start_index - 1) if start_index > 0 else 0
    while True:
        batch: dict[int, list[dict[str, Any]]] = {}
        seen_max = last
        for ev in store.events_since(last):
            seen_max = max(seen_max, ev.index)
            if event_matches(ev, topics, namespace):
                batch.setdefault(ev.index, []).append(ev.to_api())
        last = max(last, seen_max)
        for idx in sorted(batch):
            yield (json.dumps({"Index": idx, "Events": batch[idx]}) + "\n").encode()
        before = store.max_index(tables)
        deadline = time.monotonic() + heartbeat_s
        while store.max_index(tables) == before and not ctx.closing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                yield b"{}\n"
                break
            await store.wait_for_change(tables, before, min(remaining, SLICE_S))
        if ctx.closing:
            return


async def event_stream(request: Request) -> Response:
    ctx: Ctx = request.app.state.ctx
    qp = request.query_params
    namespace = qp.get("namespace") or "default"
    topics = parse_topics(qp.getlist("topic"))
    raw_index = qp.get("index", "") or "0"
    try:
        start = int(raw_index)
    except ValueError:
        raise ApiError(400, f'Unable to parse index: strconv.Atoi: parsing "{raw_index}": invalid syntax') from None
    token = ctx.token(request)
    if ctx.config.server.acl and not ctx.authorizer.is_management(token):
        check_ns = "default" if namespace == "*" else namespace
        needs_node = any(t in ("Node", "NodePool", "*") for t in topics)
        if not ctx.authorizer.allow_namespace(token, check_ns, "read-job") or (
            needs_node and not ctx.authorizer.allow_coarse(token, "node", "read")
        ):
            raise ApiError(403, "Permission denied")
    heartbeat = float(ctx.config.server.event_heartbeat_s)
    gen = stream_events(ctx, topics, namespace, start, heartbeat)
    # command/agent/event_endpoint.go sets Content-Type application/json and Cache-Control no-cache.
    return StreamingResponse(_guard(gen), media_type="application/json", headers={"Cache-Control": "no-cache"})


async def _guard(gen: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Yield once immediately so clients see headers before the first event (as Nomad flushes)."""
    try:
        yield b""
        async for chunk in gen:
            yield chunk
    except asyncio.CancelledError:
        return


ROUTES = [Route("/v1/event/stream", event_stream, methods=["GET"])]
