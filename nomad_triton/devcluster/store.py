"""In-memory state store for devcluster: Nomad's state model in miniature.

Why this shape:
- Objects are stored *as Nomad API JSON dicts* (PascalCase keys, exactly what the HTTP API returns),
  so the API layer serialises them directly and the documented Nomad API is the only schema.
- One monotonically increasing raft-like index. Every write bumps it, stamps ModifyIndex (and
  CreateIndex on insert), records the table's last index, and publishes events. Blocking queries
  (`?index=N&wait=..`) and the event stream (`/v1/event/stream?index=N`) are both served from this.
- Single-threaded: every mutation happens on the asyncio loop that runs the HTTP server and the
  runtime (scheduler, drivers, health checks). No locks; waiters use asyncio primitives.

Tables (keys): jobs ((ns, id)), job_versions ((ns, id, version)), evals (id), allocs (id),
deployments (id), nodes (id), node_pools (name), vars ((ns, path)), acl_tokens (accessor id),
scaling_events ((ns, job id)) -> list.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

TABLES = (
    "jobs",
    "job_versions",
    "evals",
    "allocs",
    "deployments",
    "nodes",
    "node_pools",
    "vars",
    "acl_tokens",
    "scaling_events",
    "services",
)

# Event-stream topic for each table that Nomad publishes events for.
TOPIC_BY_TABLE = {
    "jobs": "Job",
    "evals": "Evaluation",
    "allocs": "Allocation",
    "deployments": "Deployment",
    "nodes": "Node",
    "node_pools": "NodePool",
    "services": "Service",
    "vars": "Variables",
}

EVENT_BUFFER_SIZE = 20_000


@dataclass(frozen=True)
class Event:
    """One entry of Nomad's event stream (`{Topic, Type, Key, Namespace, Index, Payload}`)."""

    topic: str
    type: str
    key: str
    namespace: str
    index: int
    payload: dict[str, Any]
    filter_keys: tuple[str, ...] = ()

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "Topic": self.topic,
            "Type": self.type,
            "Key": self.key,
            "Namespace": self.namespace,
            "Index": self.index,
            "Payload": self.payload,
        }
        if self.filter_keys:
            out["FilterKeys"] = list(self.filter_keys)
        return out


@dataclass
class Store:
    """The cluster's whole state plus change notification."""

    index: int = 1
    tables: dict[str, dict[Any, Any]] = field(default_factory=lambda: {t: {} for t in TABLES})
    table_index: dict[str, int] = field(default_factory=lambda: {t: 1 for t in TABLES})
    events: deque[Event] = field(default_factory=lambda: deque(maxlen=EVENT_BUFFER_SIZE))
    _changed: asyncio.Event | None = None
    _subscribers: list[Callable[[], None]] = field(default_factory=list)

    # ---- reads -------------------------------------------------------------------------------
    def get(self, table: str, key: Any) -> Any | None:
        return self.tables[table].get(key)

    def list(self, table: str) -> list[Any]:
        return list(self.tables[table].values())

    def max_index(self, tables: Iterable[str]) -> int:
        """Index to report in X-Nomad-Index for a query over these tables (never below 1)."""
        return max([self.table_index[t] for t in tables] + [1])

    # ---- writes ------------------------------------------------------------------------------
    def next_index(self) -> int:
        self.index += 1
        return self.index

    def upsert(
        self,
        table: str,
        key: Any,
        obj: Any,
        *,
        event_type: str | None = None,
        event_key: str | None = None,
        namespace: str = "",
        payload_name: str | None = None,
        index: int | None = None,
        filter_keys: tuple[str, ...] = (),
    ) -> int:
        """Insert or replace one object; stamps Create/ModifyIndex on dicts and publishes an event.

        `payload_name` is the key under which the object appears in the event Payload
        (e.g. "Job", "Allocation", "Deployment", "Evaluation", "Node"). Pass `index` to group
        several writes under one raft index (as a Nomad plan apply does).
        """
        idx = index if index is not None else self.next_index()
        if isinstance(obj, dict):
            if key not in self.tables[table] and "CreateIndex" in obj and not obj["CreateIndex"]:
                obj["CreateIndex"] = idx
            elif key not in self.tables[table] and "CreateIndex" not in obj:
                obj["CreateIndex"] = idx
            obj["ModifyIndex"] = idx
        self.tables[table][key] = obj
        self.table_index[table] = idx
        if event_type:
            self._publish_change(table, key, obj, event_type, event_key, namespace, payload_name, idx, filter_keys)
        self._notify()
        return idx

    def delete(
        self,
        table: str,
        key: Any,
        *,
        event_type: str | None = None,
        event_key: str | None = None,
        namespace: str = "",
        payload_name: str | None = None,
        index: int | None = None,
    ) -> int:
        idx = index if index is not None else self.next_index()
        obj = self.tables[table].pop(key, None)
        self.table_index[table] = idx
        if event_type and obj is not None:
            self._publish_change(table, key, obj, event_type, event_key, namespace, payload_name, idx)
        self._notify()
        return idx

    def touch(self, table: str, index: int | None = None) -> int:
        """Bump a table's index without changing an object (e.g. a batch of writes finished)."""
        idx = index if index is not None else self.next_index()
        self.table_index[table] = idx
        self._notify()
        return idx

    def _publish_change(
        self,
        table: str,
        key: Any,
        obj: Any,
        event_type: str,
        event_key: str | None,
        namespace: str,
        payload_name: str | None,
        index: int,
        filter_keys: tuple[str, ...] = (),
    ) -> None:
        """Publish the event for one write; tables without an event-stream topic publish nothing."""
        topic = TOPIC_BY_TABLE.get(table)
        if topic is None:
            return
        self.publish(
            Event(
                topic=topic,
                type=event_type,
                key=event_key if event_key is not None else str(key),
                namespace=namespace,
                index=index,
                payload={payload_name or topic: copy.deepcopy(obj)},
                filter_keys=filter_keys,
            )
        )

    def publish(self, event: Event) -> None:
        self.events.append(event)

    # ---- change notification -----------------------------------------------------------------
    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        for cb in list(self._subscribers):
            cb()

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` (on the loop) after every write; returns an unsubscribe function."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    async def wait_for_change(self, tables: Iterable[str], min_index: int, timeout_s: float) -> int:
        """Blocking-query core: wait until any of `tables` has an index > min_index or timeout.

        Returns the current max index over `tables`. Like Nomad, a return does not promise a
        change (the caller re-reads and reports X-Nomad-Index).
        """
        tables = tuple(tables)
        deadline = time.monotonic() + max(0.0, timeout_s)
        while self.max_index(tables) <= min_index:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if self._changed is None:
                self._changed = asyncio.Event()
            ev = self._changed
            try:
                await asyncio.wait_for(ev.wait(), timeout=remaining)
            except TimeoutError:
                break
        return self.max_index(tables)

    def events_since(self, index: int) -> list[Event]:
        """Buffered events with Index > index (the event stream's resume semantics)."""
        return [e for e in self.events if e.index > index]
