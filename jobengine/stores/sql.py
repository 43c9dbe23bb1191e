"""What the SQL stores share: the Store contract written once as SQL.

A driver subclass (sqlite.py, postgres.py) opens the connection, creates the tables and
provides `_write` (statements with their rows, in one transaction), `_fail` (a
StoreError naming the store) and `reconnect`, plus `_db` (a DB-API connection in
autocommit mode), `_driver_error`, `_ph` (its parameter placeholder) and `_order` (the
column that keeps instances in creation order).  Tables: `<ns>_instances`,
`<ns>_states`, `<ns>_logs`, `<ns>_recurrences`, `<ns>_ticks`.  Each recurrence verb is
one statement, so the database makes it atomic (PostgreSQL re-checks an UPDATE's WHERE
on a row another transaction just changed: two managers claiming at once never both
win).

Owns: the SQL every SQL store runs.  Never does: open connections or create tables (the
drivers do)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from .. import _core
from ..errors import StoreError
from ..payloads import outcome_columns
from ..query import Query
from ..records import (
    FINAL_STATES,
    InstanceRecord,
    LogLevel,
    LogRecord,
    QueueEntry,
    RecurrenceRecord,
    StateRecord,
)
from ..state import State
from .base import Store, may_be_queued

log = logging.getLogger("jobengine")

RECURRENCE_COLUMNS = ", ".join(RecurrenceRecord.FIELDS)
INSTANCE_COLUMNS = (
    "uuid, kind, state, priority, attempts, created_ns, scheduled_ns, processed_ns, "
    "completed_ns, result, error, note"
)
# Columns added since the first version of the tables: added to an older table on open.
ADDED_INSTANCE_COLUMNS = (("result", "BLOB"), ("error", "TEXT"), ("note", "TEXT"))
FINAL = ",".join(str(s) for s in sorted(FINAL_STATES))


def _in_window(t: int, before_ns: int | None, after_ns: int | None) -> bool:
    return (after_ns is None or t >= after_ns) and (before_ns is None or t < before_ns)


def group_history(states: Sequence[tuple]) -> list[tuple]:
    """STATE_ROWs -> history rows: an instance's records of one batch in one row
    (uuid, kind, JSON [[state, time_ns, attempt, worker, run, cause], ...], first time,
    last time): a row, and an index entry, per instance and batch, not per record.
    Compiled (a quarter of the store writer's CPU in Python; tests/test_compiled_recorder.py
    holds it to the Python it replaced)."""
    return _core.group_history(states if type(states) is list else list(states), orjson.dumps)


def expand_history(uuid: str, rows: Sequence[tuple], where: str) -> list[StateRecord]:
    """History rows (kind, records JSON) -> StateRecords; a row that cannot be decoded is
    skipped with a warning naming where it is."""
    out = []
    for kind, records in rows:
        try:
            for st, t, a, w, run, c in orjson.loads(records):
                out.append(StateRecord(uuid, kind, State(st), t, a, w, run, c))
        except (orjson.JSONDecodeError, TypeError, ValueError) as e:
            log.warning("jobengine: skipping history of %s in %s: bad record (%s)", uuid, where, e)
    return out


class SQLStore(Store):
    _ph = "?"
    _order = "rowid"
    _driver_error: type[Exception] = Exception

    def _init_tables(self, namespace: str) -> None:
        self.namespace = namespace
        self._lock = threading.Lock()
        self._t = {"i": f"{namespace}_instances", "s": f"{namespace}_history",
                   "l": f"{namespace}_logs", "r": f"{namespace}_recurrences",
                   "t": f"{namespace}_ticks", "w": f"{namespace}_writers",
                   "q": f"{namespace}_queue", "d": f"{namespace}_done",
                   "o": f"{namespace}_leases"}  # fmt: skip

    # -- driver hooks, and the statements every driver runs the same way -------------
    def _fail(self, e: Exception) -> StoreError:
        raise NotImplementedError

    _lost_connection: tuple[type[Exception], ...] = ()  # the driver's "connection gone"

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        return self._call(lambda: self._db.execute(sql, args).fetchall())

    def _execute(self, sql: str, args: tuple = ()) -> int:
        """Run one statement; return its rowcount."""
        return self._call(lambda: self._db.execute(sql, args).rowcount)

    def _call(self, fn):
        """Run fn() on the connection; once more on a new connection if the old one was
        gone (then the statement never ran: a server restart, a terminated backend)."""
        for attempt in (1, 2):
            with self._lock:
                try:
                    return fn()
                except self._lost_connection as e:
                    if attempt == 2:
                        raise self._fail(e) from e
                except self._driver_error as e:
                    raise self._fail(e) from e
            self.reconnect()  # (a StoreError if the server is really down)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _marks(self, n: int) -> str:
        return ",".join([self._ph] * n)

    # -- writes ------------------------------------------------------------------------
    def _upsert_instances_sql(self) -> str:
        # Upsert keeps the row (and so its place in creation order) of a known uuid; an
        # outcome, once written, is not erased by a later snapshot without one.
        return f"""INSERT INTO {self._t["i"]} ({INSTANCE_COLUMNS}) VALUES ({self._marks(12)})
            ON CONFLICT (uuid) DO UPDATE SET kind=excluded.kind, state=excluded.state,
            priority=excluded.priority, attempts=excluded.attempts,
            created_ns=excluded.created_ns, scheduled_ns=excluded.scheduled_ns,
            processed_ns=excluded.processed_ns, completed_ns=excluded.completed_ns,
            result=COALESCE(excluded.result, {self._t["i"]}.result),
            error=COALESCE(excluded.error, {self._t["i"]}.error),
            note=COALESCE(excluded.note, {self._t["i"]}.note)"""

    def _instance_row(self, r: InstanceRecord) -> tuple:
        err = None if r.error is None else orjson.dumps(r.error).decode()
        return (r.uuid, r.kind, int(r.state), r.priority, r.attempts, r.created_ns,
                r.scheduled_ns, r.processed_ns, r.completed_ns, r.result_payload, err,
                r.note)  # fmt: skip

    HISTORY_COLUMNS = "uuid, kind, records, first_ns, last_ns"

    def _states_sql(self) -> str:
        return f"INSERT INTO {self._t['s']} ({self.HISTORY_COLUMNS}) VALUES ({self._marks(5)})"

    def _logs_sql(self) -> str:
        return (
            f"INSERT INTO {self._t['l']} (uuid, kind, level, time_ns, message, attempt)"
            f" VALUES ({self._marks(6)})"
        )

    def write_batch(
        self,
        instances: Sequence[tuple],
        states: Sequence[tuple],
        logs: Sequence[tuple],
        token: tuple[str, int] | None = None,
    ) -> None:
        self.write_prepared(self.prepare_batch(instances, states, logs, token))

    def prepare_batch(
        self,
        instances: Sequence[tuple],
        states: Sequence[tuple],
        logs: Sequence[tuple],
        token: tuple[str, int] | None = None,
    ) -> Any:
        codec = self.codec
        rows = []
        for r in instances:
            payload, error, note = outcome_columns(r[9], codec)
            rows.append((*r[:9], payload, None if error is None else orjson.dumps(error).decode(),
                         note))  # fmt: skip
        return rows, group_history(states), logs, token

    def write_prepared(self, prepared: Any) -> None:
        self._write(*prepared)

    def put_instances(self, batch: Sequence[InstanceRecord]) -> None:
        self._write([self._instance_row(r) for r in batch], (), ())

    def append_states(self, batch: Sequence[StateRecord]) -> None:
        self._write((), group_history([(r.uuid, r.kind, int(r.state), r.time_ns, r.attempt,
                                        r.worker, r.run, r.cause) for r in batch]), ())  # fmt: skip

    def append_logs(self, batch: Sequence[LogRecord]) -> None:
        self._write((), (), [(r.uuid, r.kind, int(r.level), r.time_ns, r.message, r.attempt)
                             for r in batch])  # fmt: skip

    def _write(
        self,
        instances: Sequence[tuple],
        states: Sequence[tuple],
        logs: Sequence[tuple],
        token: tuple[str, int] | None = None,
        entries: Sequence[QueueEntry] = (),
    ) -> int:
        """Upsert the instance rows (INSTANCE_COLUMNS order) and append the state and log
        rows, all in one transaction; with a token, only if its seq is newer than the
        last one applied for its node (recorded in the same transaction).  Queue
        entries of instances written in a final state are finished (_finish_in).
        entries: enqueue these first (_new_entries: the known ones are dropped with
        their records); returns how many were."""
        raise NotImplementedError

    def _token_sql(self) -> tuple[str, str]:
        """(the statement reading a node's last applied seq, the one recording it)."""
        t, ph = self._t["w"], self._ph
        return (
            f"SELECT seq FROM {t} WHERE node = {ph}",
            f"INSERT INTO {t} (node, seq) VALUES ({ph}, {ph}) ON CONFLICT (node) DO UPDATE "
            f"SET seq = excluded.seq",
        )

    # -- retention -----------------------------------------------------------------------
    def apply_retention(self, now_ns: int) -> int:
        t, ph = self._t, self._ph
        conditions, args = [], []
        if self.max_age is not None:
            conditions.append(f"completed_ns < {ph}")
            args.append(now_ns - int(self.max_age * 1e9))
        if self.max_instances is not None:
            conditions.append(
                f"uuid NOT IN (SELECT uuid FROM {t['i']} WHERE state IN ({FINAL})"
                f" ORDER BY completed_ns DESC LIMIT {int(self.max_instances)})"
            )
        if not conditions:
            return 0
        where = f"state IN ({FINAL}) AND (" + " OR ".join(conditions) + ")"
        return self._delete_instances(where, tuple(args))

    def _delete_instances(self, where: str, args: tuple) -> int:
        """Delete the instances matching `where`, with their states and logs."""
        t = self._t
        gone = [r[0] for r in self._query(f"DELETE FROM {t['i']} WHERE {where} RETURNING uuid",
                                          args)]  # fmt: skip
        for i in range(0, len(gone), 500):
            chunk = gone[i : i + 500]
            marks = self._marks(len(chunk))
            self._execute(f"DELETE FROM {t['s']} WHERE uuid IN ({marks})", tuple(chunk))
            self._execute(f"DELETE FROM {t['l']} WHERE uuid IN ({marks})", tuple(chunk))
        return len(gone)

    # -- reads -------------------------------------------------------------------------
    def _instance(self, row: tuple) -> InstanceRecord | None:
        uuid, kind, state, prio, attempts, c, s, p, d, result, error, note = row
        try:
            err = None if error is None else orjson.loads(error)
            return InstanceRecord(uuid, kind, State(state), prio, attempts, c, s, p, d,
                                  None if result is None else bytes(result), err, note,
                                  self.codec)  # fmt: skip
        except (ValueError, orjson.JSONDecodeError) as e:
            log.warning("jobengine: skipping instance %s in %s: bad record (%s)", uuid,
                        self._t["i"], e)  # fmt: skip
            return None

    def get_instance(self, uuid: str) -> InstanceRecord | None:
        rows = self._query(
            f"SELECT {INSTANCE_COLUMNS} FROM {self._t['i']} WHERE uuid = {self._ph}", (uuid,)
        )
        return self._instance(rows[0]) if rows else None

    def _where(self, query: Query, state: bool = True) -> tuple[list[str], list[Any]]:
        """The conditions (and their arguments) of `query` on a table with uuid, kind
        and created_ns columns (and a state column, if `state`)."""
        where, args = [], []
        ph = self._ph
        for cond, value in (
            (f"uuid = {ph}", query.uuid),
            (f"kind = {ph}", query.kind),
            (
                f"(state & {ph}) <> 0",
                None if query.state is None or not state else int(query.state),
            ),
            (f"created_ns >= {ph}", query.after_ns),
            (f"created_ns < {ph}", query.before_ns),
        ):
            if value is not None:
                where.append(cond)
                args.append(value)
        return where, args

    def lookup_instances(self, query: Query) -> list[InstanceRecord]:
        where, args = self._where(query)
        sql = f"SELECT {INSTANCE_COLUMNS} FROM {self._t['i']}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {self._order}"
        if query.limit is not None:
            sql += f" LIMIT {int(query.limit)}"
        return [i for r in self._query(sql, tuple(args)) if (i := self._instance(r)) is not None]

    def lookup_history(self, uuid: str) -> list[StateRecord]:
        rows = self._query(
            f"SELECT kind, records FROM {self._t['s']} WHERE uuid = {self._ph} ORDER BY id",
            (uuid,),
        )
        return expand_history(uuid, rows, self._t["s"])

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

    # -- the shared queue --------------------------------------------------------------
    # One transaction per verb (_tx): SQLite takes its write lock at BEGIN IMMEDIATE, so
    # claims queue up instead of failing half-way; PostgreSQL claims with FOR UPDATE
    # SKIP LOCKED, so claimers never wait on each other's rows.
    supports_queue = True
    QUEUE_COLUMNS = ", ".join(QueueEntry.FIELDS)
    _ENQUEUE_COLUMNS = ("uuid, kind, priority, due_ns, payload, target, executor, options, "
                        "attempts, created_ns, origin")  # fmt: skip
    _skip_locked = ""  # PostgreSQL: " FOR UPDATE SKIP LOCKED"
    DONE_KEPT_NS = 86_400 * 10**9  # a notice for an origin that never reads it: kept a day

    def _tx(self, fn: Callable[[Any], Any]) -> Any:
        """fn(cursor) in one write transaction (the driver's)."""
        raise NotImplementedError

    def _entry(self, row: Sequence[Any]) -> QueueEntry:
        f = list(row)
        f[8] = orjson.loads(f[8]) if f[8] else {}
        return QueueEntry(*f)

    def _chunks(self, uuids: Sequence[str], n: int = 500):
        for i in range(0, len(uuids), n):
            chunk = tuple(uuids[i : i + n])
            yield chunk, self._marks(len(chunk))

    def _known_uuids(self, cur: Any, uuids: Sequence[str]) -> set[str]:
        """Of uuids, those the store has an instance row or a queue entry for."""
        t = self._t
        known: set[str] = set()
        for chunk, marks in self._chunks(uuids):
            for table in (t["i"], t["q"]):
                rows = cur.execute(f"SELECT uuid FROM {table} WHERE uuid IN ({marks})", chunk)
                known.update(r[0] for r in rows.fetchall())
        return known

    def _new_entries(
        self,
        cur: Any,
        entries: Sequence[QueueEntry],
        instances: Sequence[tuple],
        states: Sequence[tuple],
    ) -> tuple[list[tuple], list[tuple], list[tuple]]:
        """Inside _write: (queue rows, instance rows, state rows) of the entries the
        store does not know yet (see enqueue), the queue row inserted."""
        known = self._known_uuids(cur, [e.uuid for e in entries])
        rows = [(e.uuid, e.kind, e.priority, e.due_ns, e.payload, e.target, e.executor,
                 orjson.dumps(e.options).decode(), e.attempts, e.created_ns, e.origin)
                for e in entries if e.uuid not in known]  # fmt: skip
        if rows:
            cur.executemany(
                f"INSERT INTO {self._t['q']} ({self._ENQUEUE_COLUMNS}) VALUES ({self._marks(11)})",
                rows,
            )
        if known:
            instances = [r for r in instances if r[0] not in known]
            states = [r for r in states if r[0] not in known]
        return rows, list(instances), list(states)

    def _queue_in(
        self,
        cur: Any,
        instances: Sequence[tuple],
        states: Sequence[tuple],
        entries: Sequence[QueueEntry],
    ) -> tuple[int, Sequence[tuple], Sequence[tuple]]:
        """Inside _write's transaction, before the records go in: enqueue `entries`
        (the records of those the store knows already are dropped), and finish the
        entries of instances written in a final state.  Returns (how many entries were
        added, the instance rows, the state rows) to write."""
        added = 0
        if entries:
            rows, instances, states = self._new_entries(cur, entries, instances, states)
            added = len(rows)
        final = [r[0] for r in instances if r[2] in FINAL_STATES]
        if final:
            self._finish_in(cur, final, time.time_ns())
        return added, instances, states

    def _finish_in(self, cur: Any, uuids: Sequence[str], now_ns: int) -> None:
        """Inside a transaction: remove these queue entries; note each for its origin
        when another manager finished it."""
        q, d = self._t["q"], self._t["d"]
        notices = []
        for chunk, marks in self._chunks(uuids):
            rows = cur.execute(
                f"DELETE FROM {q} WHERE uuid IN ({marks}) RETURNING uuid, origin, owner", chunk
            ).fetchall()
            notices += [(o, u, now_ns) for u, o, w in rows if o is not None and o != w]
        if notices:
            cur.executemany(f"INSERT INTO {d} (origin, uuid, t) VALUES ({self._marks(3)})",
                            notices)  # fmt: skip

    def enqueue(
        self,
        entries: Sequence[QueueEntry],
        instances: Sequence[tuple] = (),
        states: Sequence[tuple] = (),
    ) -> int:
        if not entries:
            return 0
        rows, grouped, _, _ = self.prepare_batch(instances, states, ())
        return self._write(rows, grouped, (), None, entries)

    # One lease per manager (the leases table), not per entry: renewing is one row, and
    # claiming touches only the rows it takes.  The ready index holds unclaimed rows
    # only, so a claim reads the best ones first and skips none that are held.
    def _lease(self, cur: Any, owner: str, lease_until_ns: int) -> None:
        o, ph = self._t["o"], self._ph
        cur.execute(f"INSERT INTO {o} (owner, lease_until_ns) VALUES ({ph}, {ph})"
                    f" ON CONFLICT (owner) DO UPDATE SET lease_until_ns = excluded.lease_until_ns",
                    (owner, lease_until_ns))  # fmt: skip

    def _reap_in(self, cur: Any, now_ns: int, keep: str | None = None) -> list[str]:
        """Inside a transaction: the entries of managers whose lease ended before now_ns
        (but `keep`'s) become unclaimed, marked reaped; their leases go."""
        q, o, ph = self._t["q"], self._t["o"], self._ph
        lapsed = [r[0] for r in cur.execute(
            f"DELETE FROM {o} WHERE lease_until_ns < {ph} AND owner <> {ph} RETURNING owner",
            (now_ns, keep or "")).fetchall()]  # fmt: skip
        out: list[str] = []
        for chunk, marks in self._chunks(lapsed):
            out += [r[0] for r in cur.execute(
                f"UPDATE {q} SET owner = NULL, reaped = 1 WHERE owner IN ({marks}) RETURNING uuid",
                chunk).fetchall()]  # fmt: skip
        return out

    def claim(self, owner: str, limit: int, now_ns: int, lease_until_ns: int) -> list[QueueEntry]:
        q, ph = self._t["q"], self._ph

        def go(cur: Any) -> list[tuple]:
            self._reap_in(cur, now_ns, owner)
            self._lease(cur, owner, lease_until_ns)
            if limit <= 0:
                return []
            # The choice in a CTE: PostgreSQL may run a plain IN (subquery) more than
            # once, and with SKIP LOCKED each run can pick other rows (over the limit).
            return cur.execute(
                f"WITH chosen AS (SELECT uuid FROM {q} WHERE owner IS NULL AND due_ns <= {ph}"
                f" ORDER BY priority DESC, due_ns, seq LIMIT {int(limit)}{self._skip_locked})"
                f" UPDATE {q} SET owner = {ph}, lease_until_ns = {ph}"
                f" WHERE uuid IN (SELECT uuid FROM chosen) AND owner IS NULL"
                f" RETURNING {self.QUEUE_COLUMNS}",
                (now_ns, owner, lease_until_ns),
            ).fetchall()

        entries = [self._entry(r) for r in self._tx(go)]
        entries.sort(key=lambda e: (-e.priority, e.due_ns, e.seq))
        return entries

    def renew_claims(self, owner: str, lease_until_ns: int) -> int:
        q, ph = self._t["q"], self._ph

        def go(cur: Any) -> int:
            self._lease(cur, owner, lease_until_ns)
            return cur.execute(f"SELECT count(*) FROM {q} WHERE owner = {ph}",
                               (owner,)).fetchone()[0]  # fmt: skip

        return self._tx(go)

    def reap(self, now_ns: int) -> list[str]:
        return self._tx(lambda cur: self._reap_in(cur, now_ns))

    def finish(self, uuids: Sequence[str]) -> None:
        if uuids:
            self._tx(lambda cur: self._finish_in(cur, uuids, time.time_ns()))

    def release(self, owner: str, uuids: Sequence[str] | None = None) -> int:
        q, ph = self._t["q"], self._ph
        sql = f"UPDATE {q} SET owner = NULL, lease_until_ns = 0 WHERE owner = {ph}"

        def go(cur: Any) -> int:
            if uuids is None:
                cur.execute(f"DELETE FROM {self._t['o']} WHERE owner = {ph}", (owner,))
                return cur.execute(sql, (owner,)).rowcount
            return sum(cur.execute(f"{sql} AND uuid IN ({marks})", (owner, *chunk)).rowcount
                       for chunk, marks in self._chunks(uuids))  # fmt: skip

        return self._tx(go)

    def _queue_where(self, query: Query) -> tuple[str, tuple]:
        where, args = self._where(query, state=False)  # (queue rows have no state)
        if not may_be_queued(query):
            where.append("1 = 0")
        return (" AND ".join(where) or "1 = 1"), tuple(args)

    def cancel_queued(
        self, query: Query, owner: str, lease_until_ns: int
    ) -> tuple[list[QueueEntry], list[str]]:
        q, ph = self._t["q"], self._ph
        where, args = self._queue_where(query)

        def go(cur: Any) -> tuple[list[tuple], list[tuple]]:
            self._lease(cur, owner, lease_until_ns)
            taken = cur.execute(
                f"UPDATE {q} SET owner = {ph}, lease_until_ns = {ph}, canceled = 2"
                f" WHERE owner IS NULL AND {where} RETURNING {self.QUEUE_COLUMNS}",
                (owner, lease_until_ns, *args),
            ).fetchall()
            flagged = cur.execute(
                f"UPDATE {q} SET canceled = 1 WHERE owner IS NOT NULL AND owner <> {ph}"
                f" AND canceled = 0 AND {where} RETURNING uuid",
                (owner, *args),
            ).fetchall()
            return taken, flagged

        taken, flagged = self._tx(go)
        return [self._entry(r) for r in taken], [r[0] for r in flagged]

    def cancel_requests(self, owner: str) -> list[str]:
        q, ph = self._t["q"], self._ph
        return [r[0] for r in self._tx(lambda cur: cur.execute(
            f"UPDATE {q} SET canceled = 2 WHERE owner = {ph} AND canceled = 1 RETURNING uuid",
            (owner,)).fetchall())]  # fmt: skip

    def take_finished(self, origin: str, limit: int = 1000) -> list[InstanceRecord]:
        t, ph = self._t, self._ph

        def go(cur: Any) -> list[tuple]:
            uuids = [r[0] for r in cur.execute(
                f"DELETE FROM {t['d']} WHERE uuid IN (SELECT uuid FROM {t['d']}"
                f" WHERE origin = {ph} LIMIT {int(limit)}) AND origin = {ph} RETURNING uuid",
                (origin, origin)).fetchall()]  # fmt: skip
            cur.execute(f"DELETE FROM {t['d']} WHERE t < {ph}",
                        (time.time_ns() - self.DONE_KEPT_NS,))  # fmt: skip
            rows = []
            for chunk, marks in self._chunks(uuids):
                rows += cur.execute(f"SELECT {INSTANCE_COLUMNS} FROM {t['i']}"
                                    f" WHERE uuid IN ({marks})", chunk).fetchall()  # fmt: skip
            return rows

        return [i for r in self._tx(go) if (i := self._instance(r)) is not None]

    def queue_length(self) -> int:
        return self._query(f"SELECT count(*) FROM {self._t['q']}")[0][0]

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
        t, ph = self._t, self._ph
        where, args = [], []
        if after_ns is not None:
            where.append(f"last_ns >= {ph}")
            args.append(after_ns)
        if before_ns is not None:
            where.append(f"first_ns < {ph}")
            args.append(before_ns)
        sql = f"SELECT uuid, id, records FROM {t['s']}" + (
            " WHERE " + " AND ".join(where) if where else ""
        )
        n = 0
        # (a row is found by its uuid, then its id: the index a history table has)
        for uuid, row_id, records in self._query(sql, tuple(args)):
            recs = orjson.loads(records)
            keep = [r for r in recs if not _in_window(r[1], before_ns, after_ns)]
            n += len(recs) - len(keep)
            if not keep:
                self._execute(f"DELETE FROM {t['s']} WHERE uuid = {ph} AND id = {ph}",
                              (uuid, row_id))  # fmt: skip
            elif len(keep) < len(recs):
                self._execute(
                    f"UPDATE {t['s']} SET records = {ph}, first_ns = {ph}, last_ns = {ph} "
                    f"WHERE uuid = {ph} AND id = {ph}",
                    (orjson.dumps(keep).decode(), keep[0][1], keep[-1][1], uuid, row_id),
                )
        # finished instances left with no history go too
        self._delete_instances(
            f"state IN ({FINAL}) AND NOT EXISTS (SELECT 1 FROM {t['s']} s WHERE s.uuid = "
            f"{t['i']}.uuid)",
            (),
        )
        return n

    def clear_logs(self, before_ns: int | None = None, after_ns: int | None = None) -> int:
        return self._delete(self._t["l"], before_ns, after_ns)

    def clear(self) -> None:
        for t in self._t.values():
            self._execute(f"DELETE FROM {t}")
