"""devcluster's durable state: one SQLite file (WAL) under the state dir, one transaction per flush.

Why SQLite and not a JSON dump: a dump rewrites the whole cluster on every change (slow, and a
crash mid-write loses everything); SQLite writes only the changed rows, atomically, and WAL mode
makes each commit one append. Why rows of Nomad API JSON: the store already keeps objects in
exactly that shape, so the file needs no schema of its own beyond (table, key) -> JSON, plus the
raft-like indexes so a restarted cluster keeps counting upwards (blocking queries, EnforceIndex).

Durability levels (`[server] durability` in devcluster.toml):
- "process" (default): WAL with synchronous=NORMAL. A commit has reached the kernel when it
  returns, so a killed devcluster (kill -9, OOM, crash) loses nothing it acknowledged.
- "power": synchronous=FULL, an fsync per commit: also survives an OS crash or power cut.
- "none": no file at all (state lives in memory, as before devcluster was durable).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

DB_FILE = "state.db"
SCHEMA_VERSION = 1
SYNC_BY_DURABILITY = {"process": "NORMAL", "power": "FULL"}


class StateOpenError(Exception):
    """The state file cannot be used; the message is one line for the user."""


class StateWriteError(Exception):
    """A commit to the state file failed; the write was not acknowledged (retried on next flush)."""


def encode_key(key: Any) -> str:
    """Store keys are strings or tuples of strings/ints; JSON keeps them distinct and reversible."""
    return json.dumps(list(key) if isinstance(key, tuple) else key, separators=(",", ":"))


def decode_key(text: str) -> Any:
    value = json.loads(text)
    return tuple(value) if isinstance(value, list) else value


class StateDB:
    """The SQLite file: `objects(tbl, key, body)` and `meta(name, value)` (index, table indexes)."""

    def __init__(self, path: Path, durability: str = "process") -> None:
        if durability not in SYNC_BY_DURABILITY:
            raise ValueError(f"unknown durability {durability!r}")
        self.path = path
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per flush.
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={SYNC_BY_DURABILITY[durability]}")
        self.conn.execute("CREATE TABLE IF NOT EXISTS objects (tbl TEXT NOT NULL, key TEXT NOT NULL, "
                          "body TEXT NOT NULL, PRIMARY KEY (tbl, key)) WITHOUT ROWID")
        self.conn.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = self.conn.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
        if row is None:
            self.conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise ValueError(f"{path}: state file schema {row[0]} is not the supported {SCHEMA_VERSION}")

    def load(self) -> tuple[int, dict[str, int], dict[str, dict[Any, Any]]]:
        """(index, table_index, tables) as last committed; index 0 for a fresh file."""
        meta = dict(self.conn.execute("SELECT name, value FROM meta").fetchall())
        index = int(meta.get("index", 0))
        table_index = {str(k): int(v) for k, v in json.loads(meta.get("table_index", "{}")).items()}
        tables: dict[str, dict[Any, Any]] = {}
        for tbl, key, body in self.conn.execute("SELECT tbl, key, body FROM objects"):
            tables.setdefault(tbl, {})[decode_key(key)] = json.loads(body)
        return index, table_index, tables

    def commit(self, index: int, table_index: dict[str, int],
               rows: Iterable[tuple[str, Any, Any | None]]) -> None:
        """One transaction: upsert (obj) or delete (None) each (table, key), then the indexes."""
        upserts, deletes = [], []
        for tbl, key, obj in rows:
            if obj is None:
                deletes.append((tbl, encode_key(key)))
            else:
                upserts.append((tbl, encode_key(key), json.dumps(obj, separators=(",", ":"))))
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                if upserts:
                    self.conn.executemany("INSERT OR REPLACE INTO objects (tbl, key, body) VALUES (?, ?, ?)",
                                          upserts)
                if deletes:
                    self.conn.executemany("DELETE FROM objects WHERE tbl = ? AND key = ?", deletes)
                self.conn.executemany("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)",
                                      [("index", str(index)), ("table_index", json.dumps(table_index))])
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StateWriteError(f"cannot write devcluster state to {self.path}: {exc}") from exc

    def close(self) -> None:
        self.conn.close()


def open_state(state_dir: Path, durability: str) -> StateDB | None:
    """The state file of `state_dir` for `durability`, or None when durability is "none"."""
    if durability == "none":
        return None
    try:
        return StateDB(state_dir / DB_FILE, durability)
    except (sqlite3.Error, ValueError) as exc:  # not ours, corrupt, or a newer schema
        raise StateOpenError(f"{state_dir / DB_FILE}: cannot open devcluster state: {exc} "
                             "(move the state dir away for a fresh cluster)") from None
