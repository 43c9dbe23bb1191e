"""SQLiteStore: a durable store in one SQLite file (stdlib sqlite3, WAL mode).

Tables are prefixed with the namespace (`<ns>_instances`, `<ns>_states`, ...), so
several namespaces share a file and clear() drops only its own rows.  One connection,
guarded by a lock (the recorder writes in batches; lookups come from any thread); each
batch is one transaction.  A file store is as private as the user's own files, so it
may keep unsigned pickles (payloads.py); with a secret set, it signs them too.

Owns: its connection and tables.  Never does: decide what to write (the contract is
base.py, the SQL sql.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from collections.abc import Sequence
from typing import Any

from ..errors import StoreError
from ..records import QueueEntry
from .sql import ADDED_INSTANCE_COLUMNS, SQLStore

_NAMESPACE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class SQLiteStore(SQLStore):
    """SQLiteStore(path, namespace="jobengine", max_instances=None, max_age=None);
    path ":memory:" for a private database (then written from the manager's process)."""

    _ph = "?"
    _order = "rowid"
    _driver_error = sqlite3.Error

    def __init__(
        self,
        path: str,
        namespace: str = "jobengine",
        max_instances: int | None = None,
        max_age: float | None = None,
    ):
        if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
            raise StoreError(
                f"SQLite namespace {namespace!r} must be a letter or _ then letters, digits, _"
            )
        self._init_tables(namespace)
        self.set_retention(max_instances, max_age)
        self.path = path
        self._connect()
        ns = namespace
        with self._lock:
            self._db.executescript(f"""
                CREATE TABLE IF NOT EXISTS {ns}_instances (
                    uuid TEXT PRIMARY KEY, kind TEXT, state INTEGER, priority INTEGER,
                    attempts INTEGER, created_ns INTEGER, scheduled_ns INTEGER,
                    processed_ns INTEGER, completed_ns INTEGER, result BLOB, error TEXT,
                    note TEXT);
                CREATE TABLE IF NOT EXISTS {ns}_history (
                    id INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT, kind TEXT,
                    records TEXT, first_ns INTEGER, last_ns INTEGER);
                CREATE INDEX IF NOT EXISTS {ns}_history_uuid ON {ns}_history(uuid);
                CREATE TABLE IF NOT EXISTS {ns}_logs (
                    id INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT, kind TEXT,
                    level INTEGER, time_ns INTEGER, message TEXT, attempt INTEGER);
                CREATE INDEX IF NOT EXISTS {ns}_logs_uuid ON {ns}_logs(uuid);
                CREATE TABLE IF NOT EXISTS {ns}_recurrences (
                    uuid TEXT PRIMARY KEY, kind TEXT, key TEXT UNIQUE, payload BLOB,
                    priority INTEGER, run INTEGER, fire_ns INTEGER, created_ns INTEGER,
                    owner TEXT, lease_until_ns INTEGER);
                CREATE TABLE IF NOT EXISTS {ns}_ticks (key TEXT PRIMARY KEY, fire_ns INTEGER);
                CREATE TABLE IF NOT EXISTS {ns}_writers (node TEXT PRIMARY KEY, seq INTEGER);
                CREATE TABLE IF NOT EXISTS {ns}_queue (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT UNIQUE, kind TEXT,
                    priority INTEGER, due_ns INTEGER, payload BLOB, target TEXT,
                    executor BLOB, options TEXT, attempts INTEGER, created_ns INTEGER,
                    origin TEXT, owner TEXT, lease_until_ns INTEGER DEFAULT 0,
                    reaped INTEGER DEFAULT 0, canceled INTEGER DEFAULT 0);
                DROP INDEX IF EXISTS {ns}_queue_order;
                CREATE INDEX IF NOT EXISTS {ns}_queue_ready
                    ON {ns}_queue(priority DESC, due_ns, seq) WHERE owner IS NULL;
                CREATE TABLE IF NOT EXISTS {ns}_leases (owner TEXT PRIMARY KEY,
                    lease_until_ns INTEGER);
                CREATE INDEX IF NOT EXISTS {ns}_queue_owner ON {ns}_queue(owner);
                CREATE TABLE IF NOT EXISTS {ns}_done (origin TEXT, uuid TEXT, t INTEGER);
                CREATE INDEX IF NOT EXISTS {ns}_done_origin ON {ns}_done(origin);
            """)  # fmt: skip
            have = {r[1] for r in self._db.execute(f"PRAGMA table_info({ns}_instances)")}
            for column, sql_type in ADDED_INSTANCE_COLUMNS:  # a file made by an older version
                if column not in have:
                    self._db.execute(f"ALTER TABLE {ns}_instances ADD COLUMN {column} {sql_type}")
            old = self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (f"{ns}_states",)
            ).fetchone()
            if old:  # an older version's one row per record: into history rows, once
                self._db.executescript(f"""
                    BEGIN;
                    INSERT INTO {ns}_history (uuid, kind, records, first_ns, last_ns)
                        SELECT uuid, kind, json_array(json_array(state, time_ns, attempt,
                            worker, run, cause)), time_ns, time_ns FROM {ns}_states ORDER BY id;
                    DROP TABLE {ns}_states;
                    COMMIT;""")

    def _connect(self) -> None:
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as e:
            raise StoreError(f"cannot open SQLite store {self.path!r}: {e}") from e

    def reconnect(self) -> None:
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._connect()

    def spec(self) -> dict[str, Any] | None:
        if self.path == ":memory:" or self.path.startswith("file:"):
            return None  # a private database: only this connection sees it
        return {
            "url": "sqlite:///" + os.path.abspath(self.path),
            "namespace": self.namespace,
            "max_instances": self.max_instances,
            "max_age": self.max_age,
        }

    def _fail(self, e: Exception) -> StoreError:
        return StoreError(f"SQLite store {self.path!r}: {e}")

    def _tx(self, fn):
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                out = fn(self._db)
                self._db.execute("COMMIT")
                return out
            except sqlite3.Error as e:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise self._fail(e) from e

    def _write(
        self,
        instances: Sequence[tuple],
        states: Sequence[tuple],
        logs: Sequence[tuple],
        token: tuple[str, int] | None = None,
        entries: Sequence[QueueEntry] = (),
    ) -> int:
        if not (instances or states or logs or entries):
            return 0

        def go(db: sqlite3.Connection) -> int:
            if token is not None:
                read, record = self._token_sql()
                last = db.execute(read, (token[0],)).fetchone()
                if last is not None and last[0] >= token[1]:
                    return 0  # applied already: at most once
                db.execute(record, token)
            added, rows, history = self._queue_in(db, instances, states, entries)
            for sql, batch in (
                (self._upsert_instances_sql(), rows),
                (self._states_sql(), history),
                (self._logs_sql(), logs),
            ):
                if batch:
                    db.executemany(sql, batch)
            return added

        return self._tx(go)
