"""PostgresStore: the Store contract on PostgreSQL (psycopg 3).

Tables are prefixed with the namespace (`<ns>_instances`, `<ns>_states`, `<ns>_logs`,
`<ns>_recurrences`, `<ns>_ticks`), so namespaces share a database and clear() deletes
only its own rows.  One connection guarded by a lock; each batch is one transaction:
the instances in one multi-row upsert, the state and log records by COPY.  Shared over
the network, so it keeps a pickle only if it is signed (payloads.py).  After a failed
operation (the server restarted, the backend was terminated) reconnect() opens a new
connection.  The SQL itself is shared with SQLiteStore (sql.py).

Owns: its connection and tables.  Never does: decide what to write (the contract is
base.py, the SQL sql.py).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from typing import Any

from ..errors import StoreError
from ..records import QueueEntry
from .sql import ADDED_INSTANCE_COLUMNS, SQLStore

try:
    import psycopg
except ImportError:  # pragma: no cover - exercised only without the extra
    psycopg = None

_NAMESPACE = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


class PostgresStore(SQLStore):
    """PostgresStore(dsn="postgresql://postgres@127.0.0.1:5432/test",
    namespace="jobengine", max_instances=None, max_age=None)."""

    _ph = "%s"
    _order = "seq"
    _driver_error = psycopg.Error if psycopg is not None else Exception
    _lost_connection = (psycopg.OperationalError,) if psycopg is not None else ()
    requires_signed_pickles = True
    _skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(
        self,
        dsn: str = "postgresql://postgres@127.0.0.1:5432/test",
        namespace: str = "jobengine",
        max_instances: int | None = None,
        max_age: float | None = None,
    ):
        if psycopg is None:
            raise StoreError("PostgresStore needs psycopg: pip install 'jobengine[postgres]'")
        if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
            raise StoreError(
                f"PostgreSQL namespace {namespace!r} must be lower-case letters, digits, _"
            )
        self._init_tables(namespace)
        self.set_retention(max_instances, max_age)
        self.dsn = dsn
        self._scratch_of = None  # the connection whose scratch table exists
        ns = namespace
        self._connect()
        try:
            with self._lock, self._db.transaction():
                # One creator at a time: concurrent CREATE/ALTER of one namespace's tables
                # deadlock each other (managers starting together on a fresh namespace).
                self._db.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (ns,))
                self._db.execute(f"""
                    CREATE TABLE IF NOT EXISTS {ns}_instances (
                        seq BIGSERIAL, uuid TEXT PRIMARY KEY, kind TEXT, state INTEGER,
                        priority INTEGER, attempts INTEGER, created_ns BIGINT,
                        scheduled_ns BIGINT, processed_ns BIGINT, completed_ns BIGINT,
                        result BYTEA, error TEXT, note TEXT) WITH (fillfactor = 40)""")
                # A finished job's row is written twice (queued, then final): at 40% full
                # a page keeps room for every row's update beside it, so the update is
                # HOT (no new index entry) -- 13% less WAL per job than at 70%.  Applies
                # to the pages an older table fills from now on.
                opts = self._db.execute(
                    "SELECT reloptions FROM pg_class WHERE oid = to_regclass(%s)",
                    (f"{ns}_instances",),
                ).fetchone()
                if "fillfactor=40" not in (opts[0] or []):  # (ALTER only when needed: locks)
                    self._db.execute(f"ALTER TABLE {ns}_instances SET (fillfactor = 40)")
                for column, sql_type in ADDED_INSTANCE_COLUMNS:  # tables of an older version
                    pg_type = "BYTEA" if sql_type == "BLOB" else sql_type
                    self._db.execute(
                        f"ALTER TABLE {ns}_instances ADD COLUMN IF NOT EXISTS {column} {pg_type}"
                    )
                self._db.execute(f"""
                    CREATE TABLE IF NOT EXISTS {ns}_history (
                        id BIGSERIAL, uuid TEXT, kind TEXT, records TEXT,
                        first_ns BIGINT, last_ns BIGINT)""")
                # No index on id: every read goes by uuid (then id, in that instance's few
                # rows); a second index would cost each history row another B-tree insert
                # (a third of the index work per job).  An older table loses it here.
                pkey = self._db.execute("SELECT conname FROM pg_constraint WHERE conrelid = "
                                        "to_regclass(%s) AND contype = 'p'",
                                        (f"{ns}_history",)).fetchone()  # fmt: skip
                if pkey is not None:
                    self._db.execute(f'ALTER TABLE {ns}_history DROP CONSTRAINT "{pkey[0]}"')
                self._db.execute(
                    f"CREATE INDEX IF NOT EXISTS {ns}_history_uuid ON {ns}_history(uuid)"
                )
                old = self._db.execute("SELECT to_regclass(%s)", (f"{ns}_states",)).fetchone()
                if old[0] is not None:  # an older version's one row per record, once
                    self._db.execute(f"""
                        INSERT INTO {ns}_history (uuid, kind, records, first_ns, last_ns)
                        SELECT uuid, kind, json_build_array(json_build_array(state, time_ns,
                            attempt, worker, run, cause))::text, time_ns, time_ns
                        FROM {ns}_states ORDER BY id""")
                    self._db.execute(f"DROP TABLE {ns}_states")
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
                self._db.execute(
                    f"CREATE TABLE IF NOT EXISTS {ns}_writers (node TEXT PRIMARY KEY, seq BIGINT)"
                )
                self._db.execute(f"""
                    CREATE TABLE IF NOT EXISTS {ns}_queue (
                        seq BIGSERIAL, uuid TEXT PRIMARY KEY, kind TEXT, priority INTEGER,
                        due_ns BIGINT, payload BYTEA, target TEXT, executor BYTEA,
                        options TEXT, attempts INTEGER, created_ns BIGINT, origin TEXT,
                        owner TEXT, lease_until_ns BIGINT DEFAULT 0, reaped INTEGER DEFAULT 0,
                        canceled INTEGER DEFAULT 0)""")
                self._db.execute(f"DROP INDEX IF EXISTS {ns}_queue_order")
                self._db.execute(
                    f"CREATE INDEX IF NOT EXISTS {ns}_queue_ready"
                    f" ON {ns}_queue(priority DESC, due_ns, seq) WHERE owner IS NULL"
                )
                self._db.execute(
                    f"CREATE TABLE IF NOT EXISTS {ns}_leases"
                    " (owner TEXT PRIMARY KEY, lease_until_ns BIGINT)"
                )
                self._db.execute(
                    f"CREATE INDEX IF NOT EXISTS {ns}_queue_owner ON {ns}_queue(owner)"
                )
                self._db.execute(
                    f"CREATE TABLE IF NOT EXISTS {ns}_done (origin TEXT, uuid TEXT, t BIGINT)"
                )
                self._db.execute(
                    f"CREATE INDEX IF NOT EXISTS {ns}_done_origin ON {ns}_done(origin)"
                )
        except psycopg.Error as e:
            raise StoreError(f"cannot open PostgreSQL store {dsn!r}: {e}") from e

    def _connect(self) -> None:
        try:
            self._db = psycopg.connect(self.dsn, autocommit=True)
        except psycopg.Error as e:
            raise StoreError(f"cannot open PostgreSQL store {self.dsn!r}: {e}") from e

    def reconnect(self) -> None:
        with self._lock:
            with contextlib.suppress(psycopg.Error):
                self._db.close()
            self._connect()

    def spec(self) -> dict[str, Any] | None:
        return {
            "url": self.dsn,
            "namespace": self.namespace,
            "max_instances": self.max_instances,
            "max_age": self.max_age,
        }

    def _fail(self, e: Exception) -> StoreError:
        return StoreError(f"PostgreSQL store {self.dsn!r}: {e}")

    def _tx(self, fn):
        def go():
            with self._db.transaction(), self._db.cursor() as cur:
                return fn(cur)

        return self._call(go)

    def _scratch(self) -> str:
        """A temporary table shaped as the instances' columns, emptied at every commit
        (per connection: made again after a reconnect)."""
        name = f"{self.namespace}_batch"
        if self._scratch_of is not self._db:
            self._db.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {name} (uuid TEXT, kind TEXT, state INTEGER, "
                "priority INTEGER, attempts INTEGER, created_ns BIGINT, scheduled_ns BIGINT, "
                "processed_ns BIGINT, completed_ns BIGINT, result BYTEA, error TEXT, note TEXT)"
                " ON COMMIT DELETE ROWS"
            )
            self._scratch_of = self._db
        return name

    def _upsert_from_scratch_sql(self) -> str:
        t = self._t["i"]
        return f"""INSERT INTO {t} (uuid, kind, state, priority, attempts, created_ns,
            scheduled_ns, processed_ns, completed_ns, result, error, note)
            SELECT * FROM {self.namespace}_batch
            ON CONFLICT (uuid) DO UPDATE SET kind=excluded.kind, state=excluded.state,
            priority=excluded.priority, attempts=excluded.attempts,
            created_ns=excluded.created_ns, scheduled_ns=excluded.scheduled_ns,
            processed_ns=excluded.processed_ns, completed_ns=excluded.completed_ns,
            result=COALESCE(excluded.result, {t}.result),
            error=COALESCE(excluded.error, {t}.error),
            note=COALESCE(excluded.note, {t}.note)"""

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
        t = self._t
        added = 0
        with self._lock:
            try:
                with self._db.transaction(), self._db.cursor() as cur:
                    if token is not None:
                        read, record = self._token_sql()
                        last = cur.execute(read + " FOR UPDATE", (token[0],)).fetchone()
                        if last is not None and last[0] >= token[1]:
                            return 0  # applied already: at most once
                        cur.execute(record, token)
                    added, instances, states = self._queue_in(cur, instances, states, entries)
                    if instances:  # COPY into a scratch table, then one upsert from it
                        with cur.copy(f"COPY {self._scratch()} FROM STDIN") as copy:
                            for row in instances:
                                copy.write_row(row)
                        cur.execute(self._upsert_from_scratch_sql())
                    for table, columns, rows in (
                        (t["s"], self.HISTORY_COLUMNS, states),
                        (t["l"], "uuid, kind, level, time_ns, message, attempt", logs),
                    ):
                        if rows:  # appends go by COPY: one stream, no statement per row
                            with cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                                for row in rows:
                                    copy.write_row(row)
            except psycopg.Error as e:
                raise self._fail(e) from e
        return added
