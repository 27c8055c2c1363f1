"""The store's SQLite persistence: what is committed when, and what a reopened file restores.

Real SQLite files in tmp_path (no mocks): a second connection reads what the first committed,
which is what a restarted devcluster would see after kill -9 at that moment.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from nomad_triton.devcluster import task_handles as th
from nomad_triton.devcluster.state_db import (
    DB_FILE,
    StateDB,
    StateWriteError,
    decode_key,
    encode_key,
    open_state,
)
from nomad_triton.devcluster.store import Store


def committed(path: Path) -> dict[tuple[str, object], dict]:
    """What another process reading the file right now would find."""
    conn = sqlite3.connect(str(path))
    try:
        return {(t, decode_key(k)): __import__("json").loads(b)
                for t, k, b in conn.execute("SELECT tbl, key, body FROM objects")}
    finally:
        conn.close()


def durable_store(tmp_path: Path, durability: str = "process") -> Store:
    store = Store()
    db = open_state(tmp_path, durability)
    assert db is not None
    assert store.attach(db) is False  # a fresh file holds no cluster
    return store


def test_keys_round_trip() -> None:
    for key in ("abc", ("default", "web"), ("default", "web", 3)):
        assert decode_key(encode_key(key)) == key


def test_each_write_outside_a_batch_is_committed_before_it_returns(tmp_path: Path) -> None:
    store = durable_store(tmp_path)
    store.upsert("jobs", ("default", "web"), {"ID": "web"})
    assert committed(tmp_path / DB_FILE)[("jobs", ("default", "web"))]["ModifyIndex"] == store.index
    store.delete("jobs", ("default", "web"))
    assert ("jobs", ("default", "web")) not in committed(tmp_path / DB_FILE)


def test_a_batch_is_one_transaction_and_holds_events_until_it_commits(tmp_path: Path) -> None:
    store = durable_store(tmp_path)
    seen: list[int] = []
    store.subscribe(lambda: seen.append(store.index))
    with store.batch():
        idx = store.next_index()
        store.upsert("jobs", ("default", "web"), {"ID": "web"}, index=idx, event_type="JobRegistered",
                     payload_name="Job")
        store.upsert("evals", "e1", {"ID": "e1", "JobID": "web"}, index=idx, event_type="EvaluationUpdated")
        with store.batch():  # nested: joins the outer one
            store.upsert("job_versions", ("default", "web", 0), {"ID": "web", "Version": 0}, index=idx)
        assert committed(tmp_path / DB_FILE) == {}, "nothing is visible to a restart before the commit"
        assert not store.events and not seen, "nothing is published before the commit"
        assert store.get("jobs", ("default", "web")) is not None, "the writer reads its own writes"
    rows = committed(tmp_path / DB_FILE)
    assert {k[0] for k in rows} == {"jobs", "evals", "job_versions"}
    assert [e.index for e in store.events] == [idx, idx] and seen == [idx]


def test_a_reopened_file_restores_tables_and_indexes_and_counting_goes_on(tmp_path: Path) -> None:
    store = durable_store(tmp_path)
    store.upsert("jobs", ("default", "web"), {"ID": "web"})
    store.upsert("allocs", "a1", {"ID": "a1"})
    store.upsert("var_locks", ("default", "lock"), {"ID": "l", "TTL": 10.0, "LockDelay": 15.0})
    store.next_index()  # an index handed out with no object written counts once flushed (the HTTP
    store.flush()  # layer flushes before every answer, so no acknowledged index is ever reused)
    last, allocs_index = store.index, store.table_index["allocs"]
    assert store.db is not None
    store.db.close()

    again = Store()
    db = StateDB(tmp_path / DB_FILE)
    assert again.attach(db) is True
    assert again.index == last and again.table_index["allocs"] == allocs_index
    assert again.get("jobs", ("default", "web"))["ID"] == "web"
    assert again.get("var_locks", ("default", "lock"))["TTL"] == 10.0
    assert again.upsert("jobs", ("default", "api"), {"ID": "api"}) == last + 1


def test_power_durability_and_memory_only(tmp_path: Path) -> None:
    store = durable_store(tmp_path, "power")
    assert store.db is not None
    assert store.db.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: fsync per commit
    assert store.db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert open_state(tmp_path / "none", "none") is None


def test_a_failed_commit_is_reported_and_retried_with_the_next_flush(tmp_path: Path) -> None:
    store = durable_store(tmp_path)
    assert store.db is not None
    blocker = sqlite3.connect(str(tmp_path / DB_FILE), timeout=0)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the file
    store.db.conn.execute("PRAGMA busy_timeout = 0")
    with pytest.raises(StateWriteError):
        store.upsert("jobs", ("default", "web"), {"ID": "web"})
    blocker.rollback()
    blocker.close()
    store.upsert("jobs", ("default", "api"), {"ID": "api"})
    assert {k[1] for k in committed(tmp_path / DB_FILE)} == {("default", "web"), ("default", "api")}


def test_detach_stops_persisting(tmp_path: Path) -> None:
    store = durable_store(tmp_path)
    store.upsert("allocs", "a1", {"ID": "a1", "ClientStatus": "running"})
    store.detach()
    store.upsert("allocs", "a1", {"ID": "a1", "ClientStatus": "complete"})
    assert committed(tmp_path / DB_FILE)[("allocs", "a1")]["ClientStatus"] == "running"


def test_tasks_started_inside_a_batch_commit_on_their_own(tmp_path: Path) -> None:
    """A task spawned while a batch is open (e.g. an alloc runner started by a plan apply) must
    not inherit the batch: its writes commit at once."""

    async def main() -> None:
        store = durable_store(tmp_path)
        with store.batch():
            child = asyncio.ensure_future(asyncio.sleep(0))
            store.upsert("jobs", ("default", "web"), {"ID": "web"})

        async def write_later() -> None:
            store.upsert("allocs", "a1", {"ID": "a1"})

        with store.batch():
            writer = asyncio.ensure_future(write_later())
        await child
        await writer
        assert ("allocs", "a1") in committed(tmp_path / DB_FILE)

    asyncio.run(main())


def test_start_time_tells_a_process_from_a_recycled_pid() -> None:
    me = os.getpid()
    started = th.start_time(me)
    assert started is not None and th.is_same_process(me, started)
    assert not th.is_same_process(me, started + 1), "same pid, other start time: not our process"


def test_kill_group_refuses_a_group_that_is_not_ours(tmp_path: Path) -> None:
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        started = th.start_time(proc.pid)
        assert started is not None
        assert th.kill_group(proc.pid, started + 1) is False, "leader started at another time: someone else's"
        assert proc.poll() is None
        assert th.kill_group(proc.pid, started) is True
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_handle_files_round_trip(tmp_path: Path) -> None:
    handle_file, exit_file = th.handle_paths(tmp_path, "web")
    h = th.TaskHandle("web", 10, 20, 11, 21)
    h.save(handle_file)
    assert th.load_handle(handle_file) == h and h.pgid == 10
    assert th.read_exit(exit_file) is None
    exit_file.write_text('{"Pid": 11, "ExitCode": 0, "Signal": 15, "FinishedAt": 1.0}')
    assert th.read_exit(exit_file) == (0, 15)
    handle_file.write_text("{not json")
    assert th.load_handle(handle_file) is None


def test_http_answers_start_only_after_the_commit(tmp_path: Path) -> None:
    """CommitBeforeReply: a write request is one transaction, committed before the first byte."""
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from nomad_triton.devcluster.api.commit import CommitBeforeReply

    store = durable_store(tmp_path)

    async def register(request: Request) -> JSONResponse:
        idx = store.next_index()
        store.upsert("jobs", ("default", "web"), {"ID": "web"}, index=idx)
        store.upsert("evals", "e1", {"ID": "e1"}, index=idx)
        assert committed(tmp_path / DB_FILE) == {}, "inside the request: one transaction, not yet committed"
        return JSONResponse({"Index": idx})

    seen_at_start: list[set[str]] = []
    inner = CommitBeforeReply(Starlette(routes=[Route("/v1/jobs", register, methods=["POST"])]), store)

    async def outer(scope, receive, send):  # type: ignore[no-untyped-def]
        async def spy(message):  # type: ignore[no-untyped-def]
            if message["type"] == "http.response.start":
                seen_at_start.append({k[0] for k in committed(tmp_path / DB_FILE)})
            await send(message)

        await inner(scope, receive, spy)

    async def main() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=outer), base_url="http://t") as c:
            r = await c.post("/v1/jobs", json={})
        assert r.status_code == 200
        assert seen_at_start == [{"jobs", "evals"}]

    asyncio.run(main())


def test_a_state_file_that_is_not_ours_is_one_clear_error(tmp_path: Path) -> None:
    from nomad_triton.devcluster.state_db import StateOpenError

    (tmp_path / DB_FILE).write_text("not a database, just text that happens to be here\n" * 20)
    with pytest.raises(StateOpenError) as err:
        open_state(tmp_path, "process")
    assert str(tmp_path / DB_FILE) in str(err.value) and "cannot open devcluster state" in str(err.value)
