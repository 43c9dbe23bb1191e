"""The recorder: state transitions, their records, and the batches written to the store.

Any thread may record (user threads record CREATED/SCHEDULED, the engine thread the
rest); records queue in memory and reach the store in batches when flush() runs (the
engine thread flushes once per loop turn, lookups flush before they read).  Futures are
resolved and handlers run only after the records that explain them are flushed, so a
caller woken by ji.result() finds the full history in the store."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from .instance import Instance
from .records import InstanceRecord, LogLevel, LogRecord, StateRecord
from .state import State, check_transition
from .stores.base import Store

log = logging.getLogger("jobengine")


def snapshot(inst: Instance) -> InstanceRecord:
    return InstanceRecord(
        inst.uuid_str, inst.kind, inst.state, inst.priority, inst.attempts,
        inst._created_ns, inst._scheduled_ns, inst._processed_ns, inst._completed_ns,
    )  # fmt: skip


class Recorder:
    def __init__(self, store: Store):
        self.store = store
        self._lock = threading.Lock()  # guards the pending batches
        self._flush_lock = threading.Lock()  # keeps batches in order across flushers
        self._states: list[StateRecord] = []
        self._logs: list[LogRecord] = []
        self._touched: dict[str, Instance] = {}
        self._deferred: list[tuple[Callable, tuple]] = []  # run by the engine thread

    def transition(
        self, inst: Instance, state: State, time_ns: int, cause: str | None = None
    ) -> None:
        """Move inst to `state` (validated) and queue its record."""
        check_transition(inst.state, state)
        inst.state = state
        rec = StateRecord(inst.uuid_str, inst.job.kind, state, time_ns, inst.attempts,
                          inst.worker, inst.run, cause)  # fmt: skip
        with self._lock:
            self._states.append(rec)
            self._touched[rec.uuid] = inst
        handler = inst.job.state_change_handler
        if handler is not None:
            self.defer(self._call, handler, inst, state)

    def created(self, inst: Instance, time_ns: int) -> None:
        """Record a new instance: CREATED, then SCHEDULED, at the same instant."""
        inst.state = State.CREATED
        kind = inst.job.kind
        uuid = inst.uuid_str
        first = StateRecord(uuid, kind, State.CREATED, time_ns, 0, None, inst.run)
        with self._lock:
            self._states.append(first)
        handler = inst.job.state_change_handler
        if handler is not None:
            self.defer(self._call, handler, inst, State.CREATED)
        self.transition(inst, State.SCHEDULED, time_ns)

    def log(
        self,
        inst: Instance,
        level: LogLevel,
        time_ns: int,
        message: str,
        attempt: int | None = None,
    ) -> None:
        rec = LogRecord(inst.uuid_str, inst.job.kind, level, time_ns, message,
                        inst.attempts if attempt is None else attempt)  # fmt: skip
        with self._lock:
            self._logs.append(rec)

    def defer(self, fn: Callable, *args: Any) -> None:
        """Run fn(*args) on the engine thread after the next flush (any thread)."""
        with self._lock:
            self._deferred.append((fn, args))

    @staticmethod
    def _call(handler: Callable, *args: Any) -> None:
        try:
            handler(*args)
        except Exception:
            log.exception("jobengine: a handler raised; the engine goes on")

    def flush(self) -> None:
        with self._flush_lock:
            with self._lock:
                states, self._states = self._states, []
                logs, self._logs = self._logs, []
                touched, self._touched = self._touched, {}
            if touched:
                self.store.put_instances([snapshot(i) for i in touched.values()])
            if states:
                self.store.append_states(states)
            if logs:
                self.store.append_logs(logs)

    def run_deferred(self) -> bool:
        """Flush, then resolve futures and run handlers queued since the last call."""
        self.flush()
        if not self._deferred:
            return False
        with self._lock:
            todo, self._deferred = self._deferred, []
        for fn, args in todo:
            fn(*args)
        return True
