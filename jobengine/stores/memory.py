"""MemoryStore: the embedded default.  Everything lives in this process's dicts."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ..query import Query
from ..records import InstanceRecord, LogRecord, StateRecord
from .base import Store


def _in_window(t: int, before_ns: int | None, after_ns: int | None) -> bool:
    return (after_ns is None or t >= after_ns) and (before_ns is None or t < before_ns)


class MemoryStore(Store):
    """In-process store.  Fast and lost when the process exits.  Namespaces separate
    stores that share nothing anyway; clear() empties only this object."""

    def __init__(self, namespace: str = "jobengine"):
        self.namespace = namespace
        self._lock = threading.Lock()
        self._instances: dict[str, InstanceRecord] = {}
        self._states: dict[str, list[StateRecord]] = {}
        self._logs: dict[str, list[LogRecord]] = {}

    def put_instances(self, batch: Sequence[InstanceRecord]) -> None:
        with self._lock:
            inst = self._instances
            for r in batch:
                inst[r.uuid] = r

    def append_states(self, batch: Sequence[StateRecord]) -> None:
        with self._lock:
            states = self._states
            for r in batch:
                lst = states.get(r.uuid)
                if lst is None:
                    states[r.uuid] = [r]
                else:
                    lst.append(r)

    def append_logs(self, batch: Sequence[LogRecord]) -> None:
        with self._lock:
            logs = self._logs
            for r in batch:
                lst = logs.get(r.uuid)
                if lst is None:
                    logs[r.uuid] = [r]
                else:
                    lst.append(r)

    def get_instance(self, uuid: str) -> InstanceRecord | None:
        with self._lock:
            return self._instances.get(uuid)

    def lookup_instances(self, query: Query) -> list[InstanceRecord]:
        if query.uuid is not None:
            r = self.get_instance(query.uuid)
            candidates = [r] if r is not None else []
        else:
            with self._lock:
                candidates = list(self._instances.values())
        out = []
        limit = query.limit
        for r in candidates:
            if limit is not None and len(out) >= limit:
                break
            if query.matches(r.uuid, r.kind, r.state, r.created_ns):
                out.append(r)
        return out

    def lookup_history(self, uuid: str) -> list[StateRecord]:
        with self._lock:
            return list(self._states.get(uuid, ()))

    def lookup_logs(self, uuid: str) -> list[LogRecord]:
        with self._lock:
            return list(self._logs.get(uuid, ()))

    def _clear(self, table: dict, before_ns: int | None, after_ns: int | None) -> int:
        n = 0
        with self._lock:
            for uuid in list(table):
                lst = table[uuid]
                keep = [r for r in lst if not _in_window(r.time_ns, before_ns, after_ns)]
                n += len(lst) - len(keep)
                if keep:
                    table[uuid] = keep
                else:
                    del table[uuid]
        return n

    def clear_history(self, before_ns: int | None = None, after_ns: int | None = None) -> int:
        return self._clear(self._states, before_ns, after_ns)

    def clear_logs(self, before_ns: int | None = None, after_ns: int | None = None) -> int:
        return self._clear(self._logs, before_ns, after_ns)

    def clear(self) -> None:
        with self._lock:
            self._instances.clear()
            self._states.clear()
            self._logs.clear()
