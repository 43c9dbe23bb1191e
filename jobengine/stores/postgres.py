"""PostgresStore: the Store contract on PostgreSQL (psycopg 3).

Tables are prefixed with the namespace (`<ns>_instances`, `<ns>_states`, `<ns>_logs`),
so namespaces share a database and clear() deletes only its own rows.  One connection
guarded by a lock; each batch is one transaction.  The distributed queue verbs (claim,
lease, ...) are not here yet: they arrive with the distributed-store issue."""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence

from ..errors import StoreError
from ..query import Query
from ..records import InstanceRecord, LogLevel, LogRecord, StateRecord
from ..state import State
from .base import Store

try:
    import psycopg
except ImportError:  # pragma: no cover - exercised only without the extra
    psycopg = None

_NAMESPACE = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


class PostgresStore(Store):
    """PostgresStore(dsn="postgresql://postgres@127.0.0.1:5432/test", namespace="jobengine")."""

    def __init__(
        self, dsn: str = "postgresql://postgres@127.0.0.1:5432/test", namespace: str = "jobengine"
    ):
        if psycopg is None:
            raise StoreError("PostgresStore needs psycopg: pip install 'jobengine[postgres]'")
        if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
            raise StoreError(
                f"PostgreSQL namespace {namespace!r} must be lower-case letters, digits, _"
            )
        self.namespace = namespace
        self.dsn = dsn
        self._lock = threading.Lock()
        ns = namespace
        self._t = {"i": f"{ns}_instances", "s": f"{ns}_states", "l": f"{ns}_logs"}
        try:
            self._db = psycopg.connect(dsn, autocommit=True)
            with self._lock, self._db.transaction():
                self._db.execute(f"""
                    CREATE TABLE IF NOT EXISTS {ns}_instances (
                        seq BIGSERIAL, uuid TEXT PRIMARY KEY, kind TEXT, state INTEGER,
                        priority INTEGER, attempts INTEGER, created_ns BIGINT,
                        scheduled_ns BIGINT, processed_ns BIGINT, completed_ns BIGINT)""")
                self._db.execute(f"""
                    CREATE TABLE IF NOT EXISTS {ns}_states (
                        id BIGSERIAL PRIMARY KEY, uuid TEXT, kind TEXT, state INTEGER,
                        time_ns BIGINT, attempt INTEGER, worker INTEGER, run INTEGER,
                        cause TEXT)""")
                self._db.execute(
                    f"CREATE INDEX IF NOT EXISTS {ns}_states_uuid ON {ns}_states(uuid)"
                )
                self._db.execute(f"""
                    CREATE TABLE IF NOT EXISTS {ns}_logs (
                        id BIGSERIAL PRIMARY KEY, uuid TEXT, kind TEXT, level INTEGER,
                        time_ns BIGINT, message TEXT, attempt INTEGER)""")
                self._db.execute(f"CREATE INDEX IF NOT EXISTS {ns}_logs_uuid ON {ns}_logs(uuid)")
        except psycopg.Error as e:
            raise StoreError(f"cannot open PostgreSQL store {dsn!r}: {e}") from e

    def _batch(self, sql: str, rows: list[tuple]) -> None:
        if not rows:
            return
        with self._lock:
            try:
                with self._db.transaction(), self._db.cursor() as cur:
                    cur.executemany(sql, rows)
            except psycopg.Error as e:
                raise StoreError(f"PostgreSQL store {self.dsn!r}: {e}") from e

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except psycopg.Error as e:
                raise StoreError(f"PostgreSQL store {self.dsn!r}: {e}") from e

    # -- writes ------------------------------------------------------------------------
    def put_instances(self, batch: Sequence[InstanceRecord]) -> None:
        self._batch(
            f"""INSERT INTO {self._t["i"]} (uuid, kind, state, priority, attempts, created_ns,
                    scheduled_ns, processed_ns, completed_ns) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)
                ON CONFLICT (uuid) DO UPDATE SET kind=EXCLUDED.kind, state=EXCLUDED.state,
                priority=EXCLUDED.priority, attempts=EXCLUDED.attempts,
                created_ns=EXCLUDED.created_ns, scheduled_ns=EXCLUDED.scheduled_ns,
                processed_ns=EXCLUDED.processed_ns, completed_ns=EXCLUDED.completed_ns""",
            [(r.uuid, r.kind, int(r.state), r.priority, r.attempts, r.created_ns,
              r.scheduled_ns, r.processed_ns, r.completed_ns) for r in batch],
        )  # fmt: skip

    def append_states(self, batch: Sequence[StateRecord]) -> None:
        self._batch(
            f"INSERT INTO {self._t['s']} (uuid, kind, state, time_ns, attempt, worker, run, cause)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
            [(r.uuid, r.kind, int(r.state), r.time_ns, r.attempt, r.worker, r.run, r.cause)
             for r in batch],
        )  # fmt: skip

    def append_logs(self, batch: Sequence[LogRecord]) -> None:
        self._batch(
            f"INSERT INTO {self._t['l']} (uuid, kind, level, time_ns, message, attempt)"
            " VALUES (%s,%s,%s,%s,%s,%s)",
            [(r.uuid, r.kind, int(r.level), r.time_ns, r.message, r.attempt) for r in batch],
        )

    # -- reads -------------------------------------------------------------------------
    _COLS = (
        "uuid, kind, state, priority, attempts, created_ns, scheduled_ns, processed_ns,"
        " completed_ns"
    )

    @staticmethod
    def _instance(row: tuple) -> InstanceRecord:
        uuid, kind, state, prio, attempts, c, s, p, d = row
        return InstanceRecord(uuid, kind, State(state), prio, attempts, c, s, p, d)

    def get_instance(self, uuid: str) -> InstanceRecord | None:
        rows = self._query(f"SELECT {self._COLS} FROM {self._t['i']} WHERE uuid = %s", (uuid,))
        return self._instance(rows[0]) if rows else None

    def lookup_instances(self, query: Query) -> list[InstanceRecord]:
        where, args = [], []
        for cond, value in (
            ("uuid = %s", query.uuid),
            ("kind = %s", query.kind),
            ("(state & %s) <> 0", None if query.state is None else int(query.state)),
            ("created_ns >= %s", query.after_ns),
            ("created_ns < %s", query.before_ns),
        ):
            if value is not None:
                where.append(cond)
                args.append(value)
        sql = f"SELECT {self._COLS} FROM {self._t['i']}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq"
        if query.limit is not None:
            sql += f" LIMIT {int(query.limit)}"
        return [self._instance(r) for r in self._query(sql, tuple(args))]

    def lookup_history(self, uuid: str) -> list[StateRecord]:
        rows = self._query(
            f"SELECT uuid, kind, state, time_ns, attempt, worker, run, cause FROM {self._t['s']}"
            " WHERE uuid = %s ORDER BY id",
            (uuid,),
        )
        return [StateRecord(u, k, State(s), t, a, w, r, c) for u, k, s, t, a, w, r, c in rows]

    def lookup_logs(self, uuid: str) -> list[LogRecord]:
        rows = self._query(
            f"SELECT uuid, kind, level, time_ns, message, attempt FROM {self._t['l']}"
            " WHERE uuid = %s ORDER BY id",
            (uuid,),
        )
        return [LogRecord(u, k, LogLevel(lv), t, m, a) for u, k, lv, t, m, a in rows]

    # -- deletes -----------------------------------------------------------------------
    def _delete(self, table: str, before_ns: int | None, after_ns: int | None) -> int:
        where, args = [], []
        if after_ns is not None:
            where.append("time_ns >= %s")
            args.append(after_ns)
        if before_ns is not None:
            where.append("time_ns < %s")
            args.append(before_ns)
        sql = f"DELETE FROM {table}" + (" WHERE " + " AND ".join(where) if where else "")
        with self._lock:
            try:
                return self._db.execute(sql, tuple(args)).rowcount
            except psycopg.Error as e:
                raise StoreError(f"PostgreSQL store {self.dsn!r}: {e}") from e

    def clear_history(self, before_ns: int | None = None, after_ns: int | None = None) -> int:
        return self._delete(self._t["s"], before_ns, after_ns)

    def clear_logs(self, before_ns: int | None = None, after_ns: int | None = None) -> int:
        return self._delete(self._t["l"], before_ns, after_ns)

    def clear(self) -> None:
        with self._lock, self._db.transaction():
            for t in self._t.values():
                self._db.execute(f"DELETE FROM {t}")

    def close(self) -> None:
        with self._lock:
            self._db.close()
