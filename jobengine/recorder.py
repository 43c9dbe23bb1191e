"""The recorder: state transitions, their records, and the batches written to the store.

Owns: the records not yet written (state, log, instance snapshots, store ops) and the
callbacks (futures, handlers) that must wait until they are.  Never does: decide a
state (the engine and ticks do; this module only validates and records the move).

Any thread may record (user threads record CREATED/SCHEDULED, the engine thread the
rest).  Records queue in deques, whose append and popleft are atomic, so recording takes
no lock; flush() drains them into one batch per kind and writes it to the store (the
engine thread flushes once per loop turn, lookups flush before they read).  Futures are
resolved and handlers run only after the records that explain them are flushed, so a
caller woken by ji.result() finds the whole history in the store."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from .instance import Instance
from .records import InstanceRecord, LogLevel, LogRecord, StateRecord
from .state import State, check_transition
from .stores.base import Store

# Enum attribute access costs ~0.1 us (metaclass lookup); the hot paths use these.
_CREATED = State.CREATED
_SCHEDULED = State.SCHEDULED

log = logging.getLogger("jobengine")

MAX_PENDING = 16_384  # state records waiting for the store before a scheduler flushes


def snapshot(inst: Instance) -> InstanceRecord:
    return InstanceRecord(
        inst.uuid_str,
        inst.kind,
        inst.state,
        inst.priority,
        inst.attempts,
        inst.created_ns,
        inst.scheduled_ns,
        inst.processed_ns,
        inst.completed_ns,
    )


def _drain(q: deque) -> list:
    out = []
    pop = q.popleft
    append = out.append
    try:
        while True:
            append(pop())
    except IndexError:
        return out


class Recorder:
    def __init__(self, store: Store):
        self.store = store
        self._flush_lock = threading.Lock()  # keeps batches in order across flushers
        self._states: deque[StateRecord] = deque()
        self._logs: deque[LogRecord] = deque()
        self._touched: deque[Instance] = deque()
        self._deferred: deque[tuple[Callable, tuple]] = deque()
        self._store_ops: deque[tuple[Callable, tuple]] = deque()

    def transition(
        self, inst: Instance, state: State, time_ns: int, cause: str | None = None
    ) -> None:
        """Move inst (an Instance or a Run) to `state` (validated) and queue its record."""
        check_transition(inst.state, state)
        inst.state = state
        self._states.append(
            StateRecord(
                inst.uuid_str,
                inst.job.kind,
                state,
                time_ns,
                inst.attempts,
                inst.worker,
                inst.run,
                cause,
            )
        )
        owner = inst.parent or inst  # a Run's records and handlers are its instance's
        self._touched.append(owner)
        handler = inst.job.state_change_handler
        if handler is not None:
            self._deferred.append((self.call_handler, (handler, owner, state)))

    def next_run(
        self, inst: Instance, state: State, time_ns: int, cause: str | None = None
    ) -> None:
        """Record the state of a recurring instance's next run (inst.run), which has no
        Run yet: SCHEDULED when its tick is armed, CANCELED if the recurrence ends first."""
        kind = inst.job.kind
        self._states.append(
            StateRecord(inst.uuid_str, kind, state, time_ns, 0, None, inst.run, cause)
        )
        self._touched.append(inst)
        handler = inst.job.state_change_handler
        if handler is not None:
            self._deferred.append((self.call_handler, (handler, inst, state)))

    def store_op(self, fn: Callable, *args: Any) -> None:
        """Call fn(*args) (a store verb) with the next batch, after its records."""
        self._store_ops.append((fn, args))

    def touch(self, inst: Instance) -> None:
        """Write inst's InstanceRecord again with the next batch (a change without a
        state record of its own)."""
        self._touched.append(inst)

    def created(self, inst: Instance, time_ns: int) -> None:
        """Record a new instance: CREATED, then SCHEDULED, at the same instant."""
        kind = inst.job.kind
        uuid = inst.uuid_str
        inst.state = _SCHEDULED
        self._states.append(StateRecord(uuid, kind, _CREATED, time_ns, 0, None, inst.run))
        self._states.append(StateRecord(uuid, kind, _SCHEDULED, time_ns, 0, None, inst.run))
        self._touched.append(inst)
        if len(self._states) > MAX_PENDING:
            # Nobody flushes yet (scheduled before start(), or the engine is behind):
            # keep what waits for the store bounded.
            self.flush()
        handler = inst.job.state_change_handler
        if handler is not None:
            self.defer(self.call_handler, handler, inst, _CREATED)
            self.defer(self.call_handler, handler, inst, _SCHEDULED)

    def log(
        self,
        inst: Instance,
        level: LogLevel,
        time_ns: int,
        message: str,
        attempt: int | None = None,
    ) -> None:
        self._logs.append(
            LogRecord(
                inst.uuid_str,
                inst.job.kind,
                level,
                time_ns,
                message,
                inst.attempts if attempt is None else attempt,
            )
        )

    def defer(self, fn: Callable, *args: Any) -> None:
        """Run fn(*args) on the engine thread after the next flush (any thread)."""
        self._deferred.append((fn, args))

    @staticmethod
    def call_handler(handler: Callable, *args: Any) -> None:
        """Run a user's handler; an exception it raises is logged, never propagated."""
        try:
            handler(*args)
        except Exception:
            log.exception("jobengine: a handler raised; the engine goes on")

    def flush(self) -> None:
        """Write everything recorded so far to the store, in order, in batches."""
        with self._flush_lock:
            touched = _drain(self._touched)
            states = _drain(self._states)
            logs = _drain(self._logs)
            if touched:
                latest = {id(i): i for i in touched}  # one snapshot per instance
                self.store.put_instances([snapshot(i) for i in latest.values()])
            if states:
                self.store.append_states(states)
            if logs:
                self.store.append_logs(logs)
            for fn, args in _drain(self._store_ops):
                fn(*args)

    def run_deferred(self) -> bool:
        """Flush, then resolve futures and run handlers queued before the flush.  One
        that raises is logged; the others still run."""
        self.flush()
        if not self._deferred:
            return False
        for fn, args in _drain(self._deferred):
            try:
                fn(*args)
            except Exception:
                log.exception("jobengine: settling an instance failed; the engine goes on")
        return True
