"""SQLiteStore: a durable store in one SQLite file (stdlib sqlite3, WAL mode).

Tables are prefixed with the namespace (`<ns>_instances`, `<ns>_states`, ...), so
several namespaces share a file and clear() drops only its own rows.  One connection,
guarded by a lock (the engine writes in batches from one thread; lookups come from any);
each batch is one transaction.  The SQL itself is shared with PostgresStore (sql.py).

Owns: its connection and tables.  Never does: decide what to write (the contract is
base.py, the SQL sql.py)."""

from __future__ import annotations

import re
import sqlite3

from ..errors import StoreError
from .sql import SQLStore

_NAMESPACE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class SQLiteStore(SQLStore):
    """SQLiteStore(path, namespace="jobengine"); path ":memory:" for a private database."""

    _ph = "?"
    _order = "rowid"
    _driver_error = sqlite3.Error

    def __init__(self, path: str, namespace: str = "jobengine"):
        if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
            raise StoreError(
                f"SQLite namespace {namespace!r} must be a letter or _ then letters, digits, _"
            )
        self._init_tables(namespace)
        self.path = path
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as e:
            raise StoreError(f"cannot open SQLite store {path!r}: {e}") from e
        ns = namespace
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
                CREATE TABLE IF NOT EXISTS {ns}_recurrences (
                    uuid TEXT PRIMARY KEY, kind TEXT, key TEXT UNIQUE, payload BLOB,
                    priority INTEGER, run INTEGER, fire_ns INTEGER, created_ns INTEGER,
                    owner TEXT, lease_until_ns INTEGER);
                CREATE TABLE IF NOT EXISTS {ns}_ticks (key TEXT PRIMARY KEY, fire_ns INTEGER);
            """)  # fmt: skip

    def _fail(self, e: Exception) -> StoreError:
        return StoreError(f"SQLite store {self.path!r}: {e}")

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
                raise self._fail(e) from e
