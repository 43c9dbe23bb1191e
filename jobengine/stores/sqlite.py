"""SQLiteStore: a durable store in one SQLite file (stdlib sqlite3, WAL mode).

Tables are prefixed with the namespace (`<ns>_instances`, `<ns>_states`, `<ns>_logs`), so
several namespaces share a file and clear() drops only its own rows.  One connection,
guarded by a lock (the engine writes in batches from one thread; lookups come from any);
each batch is one transaction."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Sequence

from ..errors import StoreError
from ..query import Query
from ..records import InstanceRecord, LogLevel, LogRecord, StateRecord
from ..state import State
from .base import Store

_NAMESPACE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class SQLiteStore(Store):
    """SQLiteStore(path, namespace="jobengine"); path ":memory:" for a private database."""

    def __init__(self, path: str, namespace: str = "jobengine"):
        if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
            raise StoreError(
                f"SQLite namespace {namespace!r} must be a letter or _ then letters, digits, _"
            )
        self.namespace = namespace
        self.path = path
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as e:
            raise StoreError(f"cannot open SQLite store {path!r}: {e}") from e
        self._lock = threading.Lock()
        ns = namespace
        self._t = {"i": f"{ns}_instances", "s": f"{ns}_states", "l": f"{ns}_logs"}
        with self._lock:
            self._db.executescript(f"""
                CREATE TABLE IF NOT EXISTS {ns}_instances (
                    uuid TEXT PRIMARY KEY, kind TEXT, state INTEGER, priority INTEGER,
                    attempts INTEGER, created_ns INTEGER, scheduled_ns INTEGER,
                    processed_ns INTEGER, completed_ns INTEGER);
                CREATE TABLE IF NOT EXISTS {ns}_states (
                    id INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT, kind TEXT,
                    state INTEGER, time_ns INTEGER, attempt INTEGER, worker INTEGER,
                    run INTEGER, cause TEXT);
                CREATE INDEX IF NOT EXISTS {ns}_states_uuid ON {ns}_states(uuid);
                CREATE TABLE IF NOT EXISTS {ns}_logs (
                    id INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT, kind TEXT,
                    level INTEGER, time_ns INTEGER, message TEXT, attempt INTEGER);
                CREATE INDEX IF NOT EXISTS {ns}_logs_uuid ON {ns}_logs(uuid);
            """)  # fmt: skip

    def _batch(self, sql: str, rows: list[tuple]) -> None:
        if not rows:
            return
        with self._lock:
            try:
                self._db.execute("BEGIN")
                self._db.executemany(sql, rows)
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                self._db.execute("ROLLBACK")
                raise StoreError(f"SQLite store {self.path!r}: {e}") from e

    # -- writes ------------------------------------------------------------------------
    def put_instances(self, batch: Sequence[InstanceRecord]) -> None:
        # Upsert keeps the row (and so its rowid, the creation order) of a known uuid.
        self._batch(
            f"""INSERT INTO {self._t["i"]} VALUES (?,?,?,?,?,?,?,?,?)
                ON CONFLICT(uuid) DO UPDATE SET kind=excluded.kind, state=excluded.state,
                priority=excluded.priority, attempts=excluded.attempts,
                created_ns=excluded.created_ns, scheduled_ns=excluded.scheduled_ns,
                processed_ns=excluded.processed_ns, completed_ns=excluded.completed_ns""",
            [(r.uuid, r.kind, int(r.state), r.priority, r.attempts, r.created_ns,
              r.scheduled_ns, r.processed_ns, r.completed_ns) for r in batch],
        )  # fmt: skip

    def append_states(self, batch: Sequence[StateRecord]) -> None:
        self._batch(
            f"INSERT INTO {self._t['s']} (uuid, kind, state, time_ns, attempt, worker, run, cause)"
            " VALUES (?,?,?,?,?,?,?,?)",
            [(r.uuid, r.kind, int(r.state), r.time_ns, r.attempt, r.worker, r.run, r.cause)
             for r in batch],
        )  # fmt: skip

    def append_logs(self, batch: Sequence[LogRecord]) -> None:
        self._batch(
            f"INSERT INTO {self._t['l']} (uuid, kind, level, time_ns, message, attempt)"
            " VALUES (?,?,?,?,?,?)",
            [(r.uuid, r.kind, int(r.level), r.time_ns, r.message, r.attempt) for r in batch],
        )

    # -- reads -------------------------------------------------------------------------
    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise StoreError(f"SQLite store {self.path!r}: {e}") from e

    @staticmethod
    def _instance(row: tuple) -> InstanceRecord:
        uuid, kind, state, prio, attempts, c, s, p, d = row
        return InstanceRecord(uuid, kind, State(state), prio, attempts, c, s, p, d)

    def get_instance(self, uuid: str) -> InstanceRecord | None:
        rows = self._query(f"SELECT * FROM {self._t['i']} WHERE uuid = ?", (uuid,))
        return self._instance(rows[0]) if rows else None

    def lookup_instances(self, query: Query) -> list[InstanceRecord]:
        where, args = [], []
        if query.uuid is not None:
            where.append("uuid = ?")
            args.append(query.uuid)
        if query.kind is not None:
            where.append("kind = ?")
            args.append(query.kind)
        if query.state is not None:
            where.append("(state & ?) != 0")
            args.append(int(query.state))
        if query.after_ns is not None:
            where.append("created_ns >= ?")
            args.append(query.after_ns)
        if query.before_ns is not None:
            where.append("created_ns < ?")
            args.append(query.before_ns)
        sql = f"SELECT * FROM {self._t['i']}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY rowid"
        if query.limit is not None:
            sql += f" LIMIT {int(query.limit)}"
        return [self._instance(r) for r in self._query(sql, tuple(args))]

    def lookup_history(self, uuid: str) -> list[StateRecord]:
        rows = self._query(
            f"SELECT uuid, kind, state, time_ns, attempt, worker, run, cause FROM {self._t['s']}"
            " WHERE uuid = ? ORDER BY id",
            (uuid,),
        )
        return [StateRecord(u, k, State(s), t, a, w, r, c) for u, k, s, t, a, w, r, c in rows]

    def lookup_logs(self, uuid: str) -> list[LogRecord]:
        rows = self._query(
            f"SELECT uuid, kind, level, time_ns, message, attempt FROM {self._t['l']}"
            " WHERE uuid = ? ORDER BY id",
            (uuid,),
        )
        return [LogRecord(u, k, LogLevel(lv), t, m, a) for u, k, lv, t, m, a in rows]

    # -- deletes -----------------------------------------------------------------------
    def _delete(self, table: str, before_ns: int | None, after_ns: int | None) -> int:
        where, args = [], []
        if after_ns is not None:
            where.append("time_ns >= ?")
            args.append(after_ns)
        if before_ns is not None:
            where.append("time_ns < ?")
            args.append(before_ns)
        sql = f"DELETE FROM {table}" + (" WHERE " + " AND ".join(where) if where else "")
        with self._lock:
            try:
                return self._db.execute(sql, tuple(args)).rowcount
            except sqlite3.Error as e:
                raise StoreError(f"SQLite store {self.path!r}: {e}") from e

    def clear_history(self, before_ns: int | None = None, after_ns: int | None = None) -> int:
        return self._delete(self._t["s"], before_ns, after_ns)

    def clear_logs(self, before_ns: int | None = None, after_ns: int | None = None) -> int:
        return self._delete(self._t["l"], before_ns, after_ns)

    def clear(self) -> None:
        with self._lock:
            for t in self._t.values():
                self._db.execute(f"DELETE FROM {t}")

    def close(self) -> None:
        with self._lock:
            self._db.close()
