"""MemoryStore: the embedded default.  Everything lives in this process's dicts.

Records are kept as plain strings and numbers in flat lists, not as record objects:
fewer objects for the garbage collector to walk (a history of millions of records would
otherwise slow every full collection of the process embedding the engine) and less
memory.  Lookups build the record objects on the way out.

Bounded by default: it keeps the 10,000 most recently finished instances
(max_instances=None for unbounded), dropping older ones with their history and logs, so
a manager that runs for weeks does not grow without end.

Owns: its dicts, guarded by one lock.  Never does: share a record object with a caller.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from itertools import islice

from .._core import (
    DoneRow,
    QueuedRow,
    RecordBuffer,
    memory_row_header,
    memory_row_list,
    memory_write,
)
from ..payloads import MAX_RESULT_BYTES, outcome_columns
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

_STATE = {int(s): s for s in State if s in (
    State.CREATED, State.SCHEDULED, State.PROCESSING, State.COMPLETED,
    State.TERMINATED, State.CANCELED, State.TIMED_OUT,
)}  # fmt: skip
_LEVEL = {int(v): v for v in LogLevel}

DEFAULT_MAX_INSTANCES = 10_000


def _in_window(t: int, before_ns: int | None, after_ns: int | None) -> bool:
    return (after_ns is None or t >= after_ns) and (before_ns is None or t < before_ns)


class MemoryStore(Store):
    """In-process store.  Fast, and gone when the process exits.  Namespaces separate
    stores that share nothing anyway; clear() empties only this object.
    MemoryStore(namespace="jobengine", max_instances=10_000, max_age=None)."""

    # Per instance, one flat list: the InstanceRecord's fields, then its history as
    # HISTORY_STRIDE items per record.  No object per record, one dict entry per
    # instance: about half the memory of record tuples (bench/load.py measures it).
    # An instance that is only queued has a compact row, a _core.QueuedRow (kind,
    # priority, created_ns), and one that completed in its first attempt a
    # _core.DoneRow (those, its worker, processed_ns and completed_ns); memory_write
    # says when; memory_row_list gives the list either stands for.
    HEADER = 8  # kind, state, priority, attempts, created, scheduled, processed, completed
    HISTORY_STRIDE = 4  # state | attempt << 8 | run << 24, time_ns, worker, cause

    def __init__(
        self,
        namespace: str = "jobengine",
        max_instances: int | None = DEFAULT_MAX_INSTANCES,
        max_age: float | None = None,
    ):
        self.namespace = namespace
        self.set_retention(max_instances, max_age)
        self._lock = threading.RLock()  # (enqueue writes its records under it)
        self._rows: dict[str, list | QueuedRow | DoneRow] = {}  # uuid -> header + flat history
        # uuid -> [(kind, level, time_ns, message, attempt), ...]
        self._logs: dict[str, list[tuple]] = {}
        # uuid -> (result payload, error, note), or the outcome as recorded (a tuple
        # starting "r" or "e"), turned into those columns when read: most are never read
        self._outcomes: dict[str, tuple] = {}
        self._finished: dict[str, int] = {}  # uuid -> completed_ns, oldest finished first
        self._recurrences: dict[str, tuple] = {}  # uuid -> RecurrenceRecord fields
        self._ticks: dict[str, int] = {}  # schedule key -> its latest claimed tick
        self._queue: dict[str, list] = {}  # uuid -> QueueEntry fields (a list)
        self._queue_seq = 0
        self._cancels: dict[str, list[str]] = {}  # owner -> uuids flagged for cancel
        self._done: dict[str, list[str]] = {}  # origin -> uuids finished elsewhere

    def _row(self, uuid: str, kind: str) -> list:
        row = self._rows.get(uuid)
        if row is None:
            row = self._rows[uuid] = [kind, None, 0, 0, 0, None, None, None]
        elif type(row) is not list:  # compact: the list it stands for, to change
            row = self._rows[uuid] = memory_row_list(row)
        return row

    # -- writes ------------------------------------------------------------------------
    def write_batch(
        self,
        instances: Sequence[tuple],
        states: Sequence[tuple],
        logs: Sequence[tuple],
        token: tuple[str, int] | None = None,
    ) -> None:
        # (token: a write to a dict cannot fail half-way, so there is nothing to retry)
        with self._lock:
            done = memory_write(
                self._rows, self._finished, self._outcomes,
                instances if type(instances) is list else list(instances),
                states if type(states) in (list, RecordBuffer) else list(states),
                logs if type(logs) is list else list(logs),
                self._logs, FINAL_STATES, self._outcome_now, MAX_RESULT_BYTES,
                bool(self._queue),
                -1 if self.max_instances is None else self.max_instances,  # retention
            )  # fmt: skip
            if done:  # a finished instance leaves the shared queue
                for uuid in done:
                    self._finish_locked(uuid)

    def _outcome_now(self, outcome: tuple) -> tuple:
        # a result too large to keep: its columns (a note saying so) now, not the bytes
        return outcome_columns(outcome, self.codec, check_json=False)

    def _drop(self, uuid: str) -> None:
        """Forget a finished instance with its history, logs and outcome (lock held).
        write_batch's retention does the same, compiled (_core.memory_write, `keep`):
        keep the two in agreement."""
        self._finished.pop(uuid, None)
        self._rows.pop(uuid, None)
        self._logs.pop(uuid, None)
        self._outcomes.pop(uuid, None)

    def apply_retention(self, now_ns: int) -> int:
        n = 0
        with self._lock:
            if self.max_age is not None:
                cutoff = now_ns - int(self.max_age * 1e9)
                old = [u for u, done in self._finished.items() if done < cutoff]
                for uuid in old:
                    self._drop(uuid)
                n += len(old)
            limit = self.max_instances
            if limit is not None and len(self._finished) > limit:
                extra = list(islice(self._finished, len(self._finished) - limit))
                for uuid in extra:
                    self._drop(uuid)
                n += len(extra)
        return n

    def put_instances(self, batch: Sequence[InstanceRecord]) -> None:
        with self._lock:
            finished = self._finished
            for r in batch:
                row = self._row(r.uuid, r.kind)
                row[0:8] = (r.kind, r.state._value_, r.priority, r.attempts, r.created_ns,
                            r.scheduled_ns, r.processed_ns, r.completed_ns)  # fmt: skip
                # `finished` holds a uuid exactly while its row's state is final, as
                # write_batch keeps it (retention walks it; memory_write relies on it)
                finished.pop(r.uuid, None)
                if r.state._value_ in FINAL_STATES:
                    finished[r.uuid] = r.completed_ns or 0
                if r.result_payload is not None or r.error is not None or r.note is not None:
                    self._outcomes[r.uuid] = (r.result_payload, r.error, r.note)

    def append_states(self, batch: Sequence[StateRecord]) -> None:
        with self._lock:
            for r in batch:
                self._row(r.uuid, r.kind).extend(
                    (r.state._value_ | r.attempt << 8 | r.run << 24, r.time_ns, r.worker, r.cause)
                )

    def append_logs(self, batch: Sequence[LogRecord]) -> None:
        with self._lock:
            logs = self._logs
            for r in batch:
                row = (r.kind, int(r.level), r.time_ns, r.message, r.attempt)
                lst = logs.get(r.uuid)
                if lst is None:
                    logs[r.uuid] = [row]
                else:
                    lst.append(row)

    # -- reads -------------------------------------------------------------------------
    def _instance(self, uuid: str, head: list) -> InstanceRecord:
        kind, state, prio, attempts, c, s, p, d = head[:8]
        outcome = self._outcomes.get(uuid)
        if outcome is None:
            result = error = note = None
        elif type(outcome[0]) is str:  # as recorded (write_batch): columns when read
            result, error, note = outcome_columns(outcome, self.codec, check_json=False)
        else:
            result, error, note = outcome
        return InstanceRecord(uuid, kind, _STATE[state], prio, attempts, c, s, p, d,
                              result, error, note, self.codec)  # fmt: skip

    def get_instance(self, uuid: str) -> InstanceRecord | None:
        with self._lock:
            row = self._rows.get(uuid)
            if row is None:
                return None
            head = memory_row_header(row)
            if head[1] is None:
                return None
            return self._instance(uuid, head)

    def lookup_instances(self, query: Query) -> list[InstanceRecord]:
        with self._lock:
            if query.uuid is not None:
                row = self._rows.get(query.uuid)
                candidates = [] if row is None else [(query.uuid, memory_row_header(row))]
            else:
                candidates = [(u, memory_row_header(row)) for u, row in self._rows.items()]
            out = []
            limit = query.limit
            for uuid, head in candidates:
                if limit is not None and len(out) >= limit:
                    break
                if head[1] is None:  # history without an instance record
                    continue
                if query.matches(uuid, head[0], _STATE[head[1]], head[4]):
                    out.append(self._instance(uuid, head))
        return out

    def lookup_history(self, uuid: str) -> list[StateRecord]:
        with self._lock:
            row = self._rows.get(uuid)
            if row is None:
                return []
            row = memory_row_list(row)
            kind, flat = row[0], row[8:]
        out = []
        for i in range(0, len(flat), 4):
            packed, t, worker, cause = flat[i : i + 4]
            out.append(StateRecord(uuid, kind, _STATE[packed & 0xFF], t, (packed >> 8) & 0xFFFF,
                                   worker, packed >> 24, cause))  # fmt: skip
        return out

    def lookup_logs(self, uuid: str) -> list[LogRecord]:
        with self._lock:
            rows = list(self._logs.get(uuid, ()))
        return [LogRecord(uuid, k, _LEVEL[lv], t, m, a) for k, lv, t, m, a in rows]

    # -- recurrences: tuples in, fresh records out, so no caller shares a mutable one ----
    def add_recurrence(self, rec: RecurrenceRecord) -> RecurrenceRecord:
        with self._lock:
            for fields in self._recurrences.values():
                if fields[2] == rec.key:
                    return RecurrenceRecord(*fields)
            self._recurrences[rec.uuid] = rec.as_tuple()
        return rec

    def save_recurrence(self, rec: RecurrenceRecord) -> bool:
        with self._lock:
            old = self._recurrences.get(rec.uuid)
            if old is None or old[8] != rec.owner:
                return False
            self._recurrences[rec.uuid] = (*old[:5], rec.run, rec.fire_ns, old[7], old[8],
                                           rec.lease_until_ns)  # fmt: skip
            return True

    def claim_recurrences(
        self, owner: str, kinds: Sequence[str], now_ns: int, lease_until_ns: int
    ) -> list[RecurrenceRecord]:
        out = []
        with self._lock:
            for uuid, f in self._recurrences.items():
                if f[1] in kinds and (f[8] is None or f[9] < now_ns):
                    f = self._recurrences[uuid] = (*f[:8], owner, lease_until_ns)
                    out.append(RecurrenceRecord(*f))
        return out

    def renew_recurrences(self, owner: str, lease_until_ns: int) -> set[str]:
        with self._lock:
            mine = [u for u, f in self._recurrences.items() if f[8] == owner]
            for u in mine:
                self._recurrences[u] = (*self._recurrences[u][:9], lease_until_ns)
        return set(mine)

    def release_recurrences(self, owner: str) -> int:
        with self._lock:
            mine = [u for u, f in self._recurrences.items() if f[8] == owner]
            for u in mine:
                self._recurrences[u] = (*self._recurrences[u][:8], None, 0)
        return len(mine)

    def delete_recurrence(self, uuid: str) -> None:
        with self._lock:
            fields = self._recurrences.pop(uuid, None)
            if fields is not None:
                self._ticks.pop(fields[2], None)

    def claim_tick(self, schedule_key: str, fire_ns: int) -> bool:
        with self._lock:
            if self._ticks.get(schedule_key, -1) >= fire_ns:
                return False
            self._ticks[schedule_key] = fire_ns
            return True

    def lookup_recurrences(self, kind: str | None = None) -> list[RecurrenceRecord]:
        with self._lock:
            rows = list(self._recurrences.values())
        rows.sort(key=lambda f: f[7])
        return [RecurrenceRecord(*f) for f in rows if kind is None or f[1] == kind]

    # -- the shared queue (for the contract: one process has nobody to share it with) ---
    supports_queue = True
    # entry fields (QueueEntry.FIELDS order) in a list; these indexes change
    _OWNER, _LEASE, _REAPED, _CANCELED = 12, 13, 14, 15

    def enqueue(
        self,
        entries: Sequence[QueueEntry],
        instances: Sequence[tuple] = (),
        states: Sequence[tuple] = (),
    ) -> int:
        with self._lock:
            new = {
                e.uuid for e in entries if e.uuid not in self._queue and e.uuid not in self._rows
            }
            for e in entries:
                if e.uuid in new:
                    self._queue_seq += 1
                    f = self._queue[e.uuid] = list(e.as_tuple())
                    f[4] = self._queue_seq
            self.write_batch([r for r in instances if r[0] in new],
                             [r for r in states if r[0] in new], ())  # fmt: skip
        return len(new)

    def _reap_locked(self, now_ns: int) -> list[str]:
        out = []
        for u, f in self._queue.items():
            if f[self._OWNER] is not None and f[self._LEASE] < now_ns:
                f[self._OWNER], f[self._LEASE], f[self._REAPED] = None, 0, True
                out.append(u)
        return out

    def claim(self, owner: str, limit: int, now_ns: int, lease_until_ns: int) -> list[QueueEntry]:
        with self._lock:
            self._reap_locked(now_ns)
            for f in self._queue.values():
                if f[self._OWNER] == owner:
                    f[self._LEASE] = lease_until_ns
            free = [f for f in self._queue.values() if f[3] <= now_ns and f[self._OWNER] is None]
            free.sort(key=lambda f: (-f[2], f[3], f[4]))
            out = []
            for f in free[: max(0, limit)]:
                f[self._OWNER], f[self._LEASE] = owner, lease_until_ns
                out.append(QueueEntry(*f))
            return out

    def renew_claims(self, owner: str, lease_until_ns: int) -> int:
        with self._lock:
            mine = [f for f in self._queue.values() if f[self._OWNER] == owner]
            for f in mine:
                f[self._LEASE] = lease_until_ns
            return len(mine)

    def reap(self, now_ns: int) -> list[str]:
        with self._lock:
            return self._reap_locked(now_ns)

    def _finish_locked(self, uuid: str) -> None:
        f = self._queue.pop(uuid, None)
        if f is not None and f[11] is not None and f[11] != f[self._OWNER]:
            self._done.setdefault(f[11], []).append(uuid)

    def finish(self, uuids: Sequence[str]) -> None:
        with self._lock:
            for u in uuids:
                self._finish_locked(u)

    def release(self, owner: str, uuids: Sequence[str] | None = None) -> int:
        with self._lock:
            n = 0
            for u, f in self._queue.items():
                if f[self._OWNER] == owner and (uuids is None or u in uuids):
                    f[self._OWNER], f[self._LEASE] = None, 0
                    n += 1
            return n

    def cancel_queued(
        self, query: Query, owner: str, lease_until_ns: int
    ) -> tuple[list[QueueEntry], list[str]]:
        taken, flagged = [], []
        if not may_be_queued(query):
            return taken, flagged
        state = query.state or State.SCHEDULED  # (passes the filter: see may_be_queued)
        with self._lock:
            for u, f in self._queue.items():
                if not query.matches(u, f[1], state, f[10]):
                    continue
                if f[self._OWNER] is None:
                    f[self._OWNER], f[self._LEASE] = owner, lease_until_ns
                    f[self._CANCELED] = True
                    taken.append(QueueEntry(*f))
                elif not f[self._CANCELED]:
                    f[self._CANCELED] = True
                    self._cancels.setdefault(f[self._OWNER], []).append(u)
                    flagged.append(u)
        return taken, flagged

    def cancel_requests(self, owner: str) -> list[str]:
        with self._lock:
            asked = self._cancels.pop(owner, [])
            return [u for u in asked if u in self._queue and self._queue[u][self._OWNER] == owner]

    def take_finished(self, origin: str, limit: int = 1000) -> list[InstanceRecord]:
        with self._lock:
            done = self._done.get(origin, [])
            uuids, self._done[origin] = done[:limit], done[limit:]
            rows = [(u, self._rows.get(u)) for u in uuids]
            rows = [(u, memory_row_header(row)) for u, row in rows if row is not None]
            return [self._instance(u, row) for u, row in rows if row[1]]

    def queue_length(self) -> int:
        with self._lock:
            return len(self._queue)

    # -- deletes -----------------------------------------------------------------------
    def clear_history(self, before_ns: int | None = None, after_ns: int | None = None) -> int:
        n = 0
        with self._lock:
            for uuid in list(self._rows):
                row = self._rows[uuid]
                if type(row) is QueuedRow and not _in_window(row.created_ns, before_ns, after_ns):
                    continue  # compact, and both its records (at its created_ns) stay
                if type(row) is DoneRow and not any(
                    _in_window(t, before_ns, after_ns)
                    for t in (row.created_ns, row.processed_ns, row.completed_ns)
                ):
                    continue  # compact, and all four of its records stay
                row = self._row(uuid, None)
                flat = row[8:]
                keep = []
                for i in range(0, len(flat), 4):
                    if _in_window(flat[i + 1], before_ns, after_ns):
                        n += 1
                    else:
                        keep.extend(flat[i : i + 4])
                del row[8:]
                row.extend(keep)
                if not keep and (row[1] is None or row[1] in FINAL_STATES):
                    self._drop(uuid)
        return n

    def clear_logs(self, before_ns: int | None = None, after_ns: int | None = None) -> int:
        n = 0
        with self._lock:
            for uuid in list(self._logs):
                rows = self._logs[uuid]
                keep = [r for r in rows if not _in_window(r[2], before_ns, after_ns)]
                n += len(rows) - len(keep)
                if keep:
                    self._logs[uuid] = keep
                else:
                    del self._logs[uuid]
        return n

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()
            self._logs.clear()
            self._outcomes.clear()
            self._finished.clear()
            self._recurrences.clear()
            self._ticks.clear()
            self._queue.clear()
            self._cancels.clear()
            self._done.clear()
