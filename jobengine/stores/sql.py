"""What the SQL stores share: the Store contract written once as SQL.

A driver subclass (sqlite.py, postgres.py) opens the connection, creates the tables and
provides `_batch` (executemany in one transaction) and `_fail` (a StoreError naming the
store), plus `_db` (a DB-API connection in autocommit mode), `_driver_error`, `_ph`
(its parameter placeholder) and `_order` (the column that keeps instances in creation
order).  Tables: `<ns>_instances`, `<ns>_states`, `<ns>_logs`,
`<ns>_recurrences`, `<ns>_ticks`.  Each recurrence verb is one statement, so the database makes it
atomic (PostgreSQL re-checks an UPDATE's WHERE on a row another transaction just
changed: two managers claiming at once never both win).

Owns: the SQL every SQL store runs.  Never does: open connections or create tables (the
drivers do)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ..errors import StoreError
from ..query import Query
from ..records import InstanceRecord, LogLevel, LogRecord, RecurrenceRecord, StateRecord
from ..state import State
from .base import Store

RECURRENCE_COLUMNS = ", ".join(RecurrenceRecord.FIELDS)
INSTANCE_COLUMNS = (
    "uuid, kind, state, priority, attempts, created_ns, scheduled_ns, processed_ns, completed_ns"
)


class SQLStore(Store):
    _ph = "?"
    _order = "rowid"
    _driver_error: type[Exception] = Exception

    def _init_tables(self, namespace: str) -> None:
        self.namespace = namespace
        self._lock = threading.Lock()
        self._t = {"i": f"{namespace}_instances", "s": f"{namespace}_states",
                   "l": f"{namespace}_logs", "r": f"{namespace}_recurrences",
                   "t": f"{namespace}_ticks"}  # fmt: skip

    # -- driver hooks, and the statements every driver runs the same way -------------
    def _batch(self, sql: str, rows: list[tuple]) -> None:
        raise NotImplementedError

    def _fail(self, e: Exception) -> StoreError:
        raise NotImplementedError

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except self._driver_error as e:
                raise self._fail(e) from e

    def _execute(self, sql: str, args: tuple = ()) -> int:
        """Run one statement; return its rowcount."""
        with self._lock:
            try:
                return self._db.execute(sql, args).rowcount
            except self._driver_error as e:
                raise self._fail(e) from e

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _marks(self, n: int) -> str:
        return ",".join([self._ph] * n)

    # -- writes ------------------------------------------------------------------------
    def put_instances(self, batch: Sequence[InstanceRecord]) -> None:
        # Upsert keeps the row (and so its place in creation order) of a known uuid.
        self._batch(
            f"""INSERT INTO {self._t["i"]} ({INSTANCE_COLUMNS}) VALUES ({self._marks(9)})
                ON CONFLICT (uuid) DO UPDATE SET kind=excluded.kind, state=excluded.state,
                priority=excluded.priority, attempts=excluded.attempts,
                created_ns=excluded.created_ns, scheduled_ns=excluded.scheduled_ns,
                processed_ns=excluded.processed_ns, completed_ns=excluded.completed_ns""",
            [(r.uuid, r.kind, int(r.state), r.priority, r.attempts, r.created_ns,
              r.scheduled_ns, r.processed_ns, r.completed_ns) for r in batch],
        )  # fmt: skip

    def append_states(self, batch: Sequence[StateRecord]) -> None:
        self._batch(
            f"INSERT INTO {self._t['s']} (uuid, kind, state, time_ns, attempt, worker, run, cause)"
            f" VALUES ({self._marks(8)})",
            [(r.uuid, r.kind, int(r.state), r.time_ns, r.attempt, r.worker, r.run, r.cause)
             for r in batch],
        )  # fmt: skip

    def append_logs(self, batch: Sequence[LogRecord]) -> None:
        self._batch(
            f"INSERT INTO {self._t['l']} (uuid, kind, level, time_ns, message, attempt)"
            f" VALUES ({self._marks(6)})",
            [(r.uuid, r.kind, int(r.level), r.time_ns, r.message, r.attempt) for r in batch],
        )

    # -- reads -------------------------------------------------------------------------
    @staticmethod
    def _instance(row: tuple) -> InstanceRecord:
        uuid, kind, state, prio, attempts, c, s, p, d = row
        return InstanceRecord(uuid, kind, State(state), prio, attempts, c, s, p, d)

    def get_instance(self, uuid: str) -> InstanceRecord | None:
        rows = self._query(
            f"SELECT {INSTANCE_COLUMNS} FROM {self._t['i']} WHERE uuid = {self._ph}", (uuid,)
        )
        return self._instance(rows[0]) if rows else None

    def lookup_instances(self, query: Query) -> list[InstanceRecord]:
        where, args = [], []
        ph = self._ph
        for cond, value in (
            (f"uuid = {ph}", query.uuid),
            (f"kind = {ph}", query.kind),
            (f"(state & {ph}) <> 0", None if query.state is None else int(query.state)),
            (f"created_ns >= {ph}", query.after_ns),
            (f"created_ns < {ph}", query.before_ns),
        ):
            if value is not None:
                where.append(cond)
                args.append(value)
        sql = f"SELECT {INSTANCE_COLUMNS} FROM {self._t['i']}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {self._order}"
        if query.limit is not None:
            sql += f" LIMIT {int(query.limit)}"
        return [self._instance(r) for r in self._query(sql, tuple(args))]

    def lookup_history(self, uuid: str) -> list[StateRecord]:
        rows = self._query(
            f"SELECT uuid, kind, state, time_ns, attempt, worker, run, cause FROM {self._t['s']}"
            f" WHERE uuid = {self._ph} ORDER BY id",
            (uuid,),
        )
        return [StateRecord(u, k, State(s), t, a, w, r, c) for u, k, s, t, a, w, r, c in rows]

    def lookup_logs(self, uuid: str) -> list[LogRecord]:
        rows = self._query(
            f"SELECT uuid, kind, level, time_ns, message, attempt FROM {self._t['l']}"
            f" WHERE uuid = {self._ph} ORDER BY id",
            (uuid,),
        )
        return [LogRecord(u, k, LogLevel(lv), t, m, a) for u, k, lv, t, m, a in rows]

    # -- recurrences -------------------------------------------------------------------
    def add_recurrence(self, rec: RecurrenceRecord) -> RecurrenceRecord:
        t, ph = self._t["r"], self._ph
        self._execute(
            f"INSERT INTO {t} ({RECURRENCE_COLUMNS}) VALUES ({self._marks(10)})"
            " ON CONFLICT DO NOTHING",
            rec.as_tuple(),
        )
        rows = self._query(f"SELECT {RECURRENCE_COLUMNS} FROM {t} WHERE key = {ph}", (rec.key,))
        return RecurrenceRecord(*rows[0])

    def save_recurrence(self, rec: RecurrenceRecord) -> bool:
        ph = self._ph
        return bool(
            self._execute(
                f"UPDATE {self._t['r']} SET run = {ph}, fire_ns = {ph}, lease_until_ns = {ph}"
                f" WHERE uuid = {ph} AND owner = {ph}",
                (rec.run, rec.fire_ns, rec.lease_until_ns, rec.uuid, rec.owner),
            )
        )

    def claim_recurrences(
        self, owner: str, kinds: Sequence[str], now_ns: int, lease_until_ns: int
    ) -> list[RecurrenceRecord]:
        if not kinds:
            return []
        ph = self._ph
        rows = self._query(
            f"UPDATE {self._t['r']} SET owner = {ph}, lease_until_ns = {ph}"
            f" WHERE kind IN ({self._marks(len(kinds))})"
            f" AND (owner IS NULL OR lease_until_ns < {ph}) RETURNING {RECURRENCE_COLUMNS}",
            (owner, lease_until_ns, *kinds, now_ns),
        )
        return sorted((RecurrenceRecord(*r) for r in rows), key=lambda r: r.created_ns)

    def renew_recurrences(self, owner: str, lease_until_ns: int) -> set[str]:
        ph = self._ph
        rows = self._query(
            f"UPDATE {self._t['r']} SET lease_until_ns = {ph} WHERE owner = {ph} RETURNING uuid",
            (lease_until_ns, owner),
        )
        return {r[0] for r in rows}

    def release_recurrences(self, owner: str) -> int:
        return self._execute(
            f"UPDATE {self._t['r']} SET owner = NULL, lease_until_ns = 0 WHERE owner = {self._ph}",
            (owner,),
        )

    def delete_recurrence(self, uuid: str) -> None:
        t, ph = self._t, self._ph
        self._execute(
            f"DELETE FROM {t['t']} WHERE key IN (SELECT key FROM {t['r']} WHERE uuid = {ph})",
            (uuid,),
        )
        self._execute(f"DELETE FROM {t['r']} WHERE uuid = {ph}", (uuid,))

    def claim_tick(self, schedule_key: str, fire_ns: int) -> bool:
        # One statement: insert the key's first tick, or move it forward; a tick at or
        # before the stored one changes nothing (rowcount 0).
        ph = self._ph
        return bool(
            self._execute(
                f"INSERT INTO {self._t['t']} (key, fire_ns) VALUES ({ph}, {ph})"
                f" ON CONFLICT (key) DO UPDATE SET fire_ns = excluded.fire_ns"
                f" WHERE {self._t['t']}.fire_ns < excluded.fire_ns",
                (schedule_key, fire_ns),
            )
        )

    def lookup_recurrences(self, kind: str | None = None) -> list[RecurrenceRecord]:
        sql = f"SELECT {RECURRENCE_COLUMNS} FROM {self._t['r']}"
        args: tuple = ()
        if kind is not None:
            sql += f" WHERE kind = {self._ph}"
            args = (kind,)
        rows = self._query(sql + " ORDER BY created_ns", args)
        return [RecurrenceRecord(*r) for r in rows]

    # -- deletes -----------------------------------------------------------------------
    def _delete(self, table: str, before_ns: int | None, after_ns: int | None) -> int:
        where, args = [], []
        if after_ns is not None:
            where.append(f"time_ns >= {self._ph}")
            args.append(after_ns)
        if before_ns is not None:
            where.append(f"time_ns < {self._ph}")
            args.append(before_ns)
        sql = f"DELETE FROM {table}" + (" WHERE " + " AND ".join(where) if where else "")
        return self._execute(sql, tuple(args))

    def clear_history(self, before_ns: int | None = None, after_ns: int | None = None) -> int:
        return self._delete(self._t["s"], before_ns, after_ns)

    def clear_logs(self, before_ns: int | None = None, after_ns: int | None = None) -> int:
        return self._delete(self._t["l"], before_ns, after_ns)

    def clear(self) -> None:
        for t in self._t.values():
            self._execute(f"DELETE FROM {t}")
