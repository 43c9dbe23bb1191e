"""MemoryStore: the embedded default.  Everything lives in this process's dicts.

Records are kept as plain tuples of strings and numbers, not as record objects: the
garbage collector stops tracking such tuples, so a history of millions of records does
not slow every full collection of the process embedding the engine.  Lookups build the
record objects on the way out."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ..query import Query
from ..records import InstanceRecord, LogLevel, LogRecord, StateRecord
from ..state import State
from .base import Store

_STATE = {int(s): s for s in State if s in (
    State.CREATED, State.SCHEDULED, State.PROCESSING, State.COMPLETED,
    State.TERMINATED, State.CANCELED, State.TIMED_OUT,
)}  # fmt: skip
_LEVEL = {int(v): v for v in LogLevel}


def _in_window(t: int, before_ns: int | None, after_ns: int | None) -> bool:
    return (after_ns is None or t >= after_ns) and (before_ns is None or t < before_ns)


class MemoryStore(Store):
    """In-process store.  Fast, and gone when the process exits.  Namespaces separate
    stores that share nothing anyway; clear() empties only this object."""

    def __init__(self, namespace: str = "jobengine"):
        self.namespace = namespace
        self._lock = threading.Lock()
        # uuid -> (kind, state, priority, attempts, created, scheduled, processed, completed)
        self._instances: dict[str, tuple] = {}
        # uuid -> [(kind, state, time_ns, attempt, worker, run, cause), ...]
        self._states: dict[str, list[tuple]] = {}
        # uuid -> [(kind, level, time_ns, message, attempt), ...]
        self._logs: dict[str, list[tuple]] = {}

    # -- writes ------------------------------------------------------------------------
    def put_instances(self, batch: Sequence[InstanceRecord]) -> None:
        rows = [
            (r.uuid, (r.kind, r.state._value_, r.priority, r.attempts, r.created_ns,
                      r.scheduled_ns, r.processed_ns, r.completed_ns))
            for r in batch
        ]  # fmt: skip
        with self._lock:
            self._instances.update(rows)

    def append_states(self, batch: Sequence[StateRecord]) -> None:
        with self._lock:
            states = self._states
            for r in batch:
                row = (r.kind, r.state._value_, r.time_ns, r.attempt, r.worker, r.run, r.cause)
                lst = states.get(r.uuid)
                if lst is None:
                    states[r.uuid] = [row]
                else:
                    lst.append(row)

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
    @staticmethod
    def _instance(uuid: str, row: tuple) -> InstanceRecord:
        kind, state, prio, attempts, c, s, p, d = row
        return InstanceRecord(uuid, kind, _STATE[state], prio, attempts, c, s, p, d)

    def get_instance(self, uuid: str) -> InstanceRecord | None:
        with self._lock:
            row = self._instances.get(uuid)
        return None if row is None else self._instance(uuid, row)

    def lookup_instances(self, query: Query) -> list[InstanceRecord]:
        with self._lock:
            if query.uuid is not None:
                row = self._instances.get(query.uuid)
                candidates = [] if row is None else [(query.uuid, row)]
            else:
                candidates = list(self._instances.items())
        out = []
        limit = query.limit
        for uuid, row in candidates:
            if limit is not None and len(out) >= limit:
                break
            if query.matches(uuid, row[0], _STATE[row[1]], row[4]):
                out.append(self._instance(uuid, row))
        return out

    def lookup_history(self, uuid: str) -> list[StateRecord]:
        with self._lock:
            rows = list(self._states.get(uuid, ()))
        return [StateRecord(uuid, k, _STATE[s], t, a, w, r, c) for k, s, t, a, w, r, c in rows]

    def lookup_logs(self, uuid: str) -> list[LogRecord]:
        with self._lock:
            rows = list(self._logs.get(uuid, ()))
        return [LogRecord(uuid, k, _LEVEL[lv], t, m, a) for k, lv, t, m, a in rows]

    # -- deletes -----------------------------------------------------------------------
    @staticmethod
    def _clear(lock, table: dict, t_index: int, before_ns: int | None, after_ns: int | None) -> int:
        n = 0
        with lock:
            for uuid in list(table):
                rows = table[uuid]
                keep = [r for r in rows if not _in_window(r[t_index], before_ns, after_ns)]
                n += len(rows) - len(keep)
                if keep:
                    table[uuid] = keep
                else:
                    del table[uuid]
        return n

    def clear_history(self, before_ns: int | None = None, after_ns: int | None = None) -> int:
        return self._clear(self._lock, self._states, 2, before_ns, after_ns)

    def clear_logs(self, before_ns: int | None = None, after_ns: int | None = None) -> int:
        return self._clear(self._lock, self._logs, 2, before_ns, after_ns)

    def clear(self) -> None:
        with self._lock:
            self._instances.clear()
            self._states.clear()
            self._logs.clear()
