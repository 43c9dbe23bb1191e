"""PostgresStore: the Store contract on PostgreSQL (psycopg 3).

Tables are prefixed with the namespace (`<ns>_instances`, `<ns>_states`, `<ns>_logs`,
`<ns>_recurrences`, `<ns>_ticks`), so namespaces share a database and clear() deletes only its own
rows.  One connection guarded by a lock; each batch is one transaction.  The SQL itself
is shared with SQLiteStore (sql.py).  The distributed queue verbs for one-off jobs
(enqueue, claim, ...) are not here yet: they arrive with the distributed-store issue.

Owns: its connection and tables.  Never does: decide what to write (the contract is
base.py, the SQL sql.py)."""

from __future__ import annotations

import re

from ..errors import StoreError
from .sql import SQLStore

try:
    import psycopg
except ImportError:  # pragma: no cover - exercised only without the extra
    psycopg = None

_NAMESPACE = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


class PostgresStore(SQLStore):
    """PostgresStore(dsn="postgresql://postgres@127.0.0.1:5432/test", namespace="jobengine")."""

    _ph = "%s"
    _order = "seq"
    _driver_error = psycopg.Error if psycopg is not None else Exception

    def __init__(
        self, dsn: str = "postgresql://postgres@127.0.0.1:5432/test", namespace: str = "jobengine"
    ):
        if psycopg is None:
            raise StoreError("PostgresStore needs psycopg: pip install 'jobengine[postgres]'")
        if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
            raise StoreError(
                f"PostgreSQL namespace {namespace!r} must be lower-case letters, digits, _"
            )
        self._init_tables(namespace)
        self.dsn = dsn
        ns = namespace
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
                self._db.execute(f"""
                    CREATE TABLE IF NOT EXISTS {ns}_recurrences (
                        uuid TEXT PRIMARY KEY, kind TEXT, key TEXT UNIQUE, payload BYTEA,
                        priority INTEGER, run INTEGER, fire_ns BIGINT, created_ns BIGINT,
                        owner TEXT, lease_until_ns BIGINT)""")
                self._db.execute(
                    f"CREATE TABLE IF NOT EXISTS {ns}_ticks (key TEXT PRIMARY KEY, fire_ns BIGINT)"
                )
        except psycopg.Error as e:
            raise StoreError(f"cannot open PostgreSQL store {dsn!r}: {e}") from e

    def _fail(self, e: Exception) -> StoreError:
        return StoreError(f"PostgreSQL store {self.dsn!r}: {e}")

    def _batch(self, sql: str, rows: list[tuple]) -> None:
        if not rows:
            return
        with self._lock:
            try:
                with self._db.transaction(), self._db.cursor() as cur:
                    cur.executemany(sql, rows)
            except psycopg.Error as e:
                raise self._fail(e) from e
