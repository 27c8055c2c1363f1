"""In-memory state store for devcluster: Nomad's state model in miniature.

Why this shape:
- Objects are stored *as Nomad API JSON dicts* (PascalCase keys, exactly what the HTTP API returns),
  so the API layer serialises them directly and the documented Nomad API is the only schema.
- One monotonically increasing raft-like index. Every write bumps it, stamps ModifyIndex (and
  CreateIndex on insert), records the table's last index, and publishes events. Blocking queries
  (`?index=N&wait=..`) and the event stream (`/v1/event/stream?index=N`) are both served from this.
- Single-threaded: every mutation happens on the asyncio loop that runs the HTTP server and the
  runtime (scheduler, drivers, health checks). No locks; waiters use asyncio primitives.
- Durable when a `StateDB` is attached (state_db.py): every write is committed to SQLite before
  anyone can observe it. Outside a batch each write is its own transaction; `with store.batch():`
  groups the writes of one state change (a register, a plan apply) into one transaction. Events
  and change notifications are held until the commit, so nothing that was not committed is ever
  published, answered or acted upon (the HTTP layer flushes before a response starts).

Tables (keys): jobs ((ns, id)), job_versions ((ns, id, version)), evals (id), allocs (id),
deployments (id), nodes (id), node_pools (name), vars ((ns, path)), acl_tokens (accessor id),
scaling_events ((ns, job id)) -> list.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .state_db import StateDB

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
    "var_locks",  # lock holders of variables (ID, TTL, delay): never served, kept for restarts
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


class _Batch:
    """An open `Store.batch()`: active for the task that opened it (not for tasks it spawns)."""

    def __init__(self) -> None:
        self.owner = _current_task()
        self.active = True


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop (unit tests, startup)
        return None


_BATCH: contextvars.ContextVar[_Batch | None] = contextvars.ContextVar("devcluster_store_batch", default=None)


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
    db: StateDB | None = None
    _dirty: dict[tuple[str, Any], None] = field(default_factory=dict)
    _meta_dirty: bool = False
    _held_events: list[Event] = field(default_factory=list)
    _notify_held: bool = False

    # ---- durability ----------------------------------------------------------------------------
    def attach(self, db: StateDB) -> bool:
        """Persist to `db` from now on, first loading what it holds; True if it held a cluster."""
        index, table_index, tables = db.load()
        self.db = db
        if index <= 0:
            self._meta_dirty = True
            self.flush()
            return False
        self.index = max(self.index, index)
        for t in TABLES:
            self.tables[t] = tables.get(t, {})
            self.table_index[t] = max(table_index.get(t, 1), 1)
        return True

    def detach(self) -> None:
        """Stop persisting (graceful shutdown: what the runtime does while stopping is not state)."""
        with contextlib.suppress(Exception):
            self.flush()
        db, self.db = self.db, None
        if db is not None:
            db.close()

    def _in_batch(self) -> bool:
        b = _BATCH.get()
        return b is not None and b.active and b.owner is _current_task()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group the writes of one state change into one transaction (committed on exit).

        Nested batches join the outermost one. Writes stay visible in memory at once; events and
        notifications wait for the commit. Only the opening task is batched: tasks it starts
        write (and commit) on their own.
        """
        if self._in_batch():
            yield
            return
        b = _Batch()
        token = _BATCH.set(b)
        try:
            yield
        finally:
            b.active = False
            _BATCH.reset(token)
            self.flush()

    def flush(self) -> None:
        """Commit every pending write in one transaction, then publish what it held back."""
        if self.db is not None and (self._dirty or self._meta_dirty):
            rows = [(t, k, self.tables[t].get(k)) for (t, k) in self._dirty]
            self.db.commit(self.index, self.table_index, rows)
        self._dirty.clear()
        self._meta_dirty = False
        if self._held_events:
            held, self._held_events = self._held_events, []
            self.events.extend(held)
        if self._notify_held:
            self._notify_held = False
            self._notify_now()

    def _written(self, table: str | None = None, key: Any = None) -> None:
        if table is not None:
            self._dirty[(table, key)] = None
        self._meta_dirty = True
        if not self._in_batch():
            self.flush()

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
        self._meta_dirty = True
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
        self._written(table, key)
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
        self._written(table, key)
        return idx

    def touch(self, table: str, index: int | None = None) -> int:
        """Bump a table's index without changing an object (e.g. a batch of writes finished)."""
        idx = index if index is not None else self.next_index()
        self.table_index[table] = idx
        self._notify()
        self._written()
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
        self._held_events.append(  # released by the flush that commits this write
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
        """Publish once committed: held back until the current write (or batch) is flushed."""
        self._held_events.append(event)
        if not self._in_batch():
            self.flush()

    # ---- change notification -----------------------------------------------------------------
    def _notify(self) -> None:
        self._notify_held = True

    def _notify_now(self) -> None:
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
