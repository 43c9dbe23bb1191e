"""Instance: one execution of a job, and a concurrent.futures.Future of its result.

Owns: the Future's outcome and the fields a user reads (uuid, kind, state, args,
attempts, timestamps).  The engine (engine.py) is the only writer of the engine-owned
fields listed in Instance's docstring, always from its own thread or under its lock;
users read them.  Timestamps are kept in nanoseconds and shown as aware UTC datetimes.
Also here: Run, one fire of a recurring instance.  Never does: scheduling, I/O."""

from __future__ import annotations

import threading
import uuid as _uuid
from concurrent.futures import Future, InvalidStateError
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, PENDING
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from . import signals
from ._core import InstanceFields
from .errors import ManagerStateError
from .records import LogLevel, LogMethods, ns_to_datetime
from .state import State

# Enum attribute access costs ~0.1 us (metaclass lookup); the hot paths use these.
_CANCELED = State.CANCELED
_CREATED = State.CREATED
_PROCESSING = State.PROCESSING
_TERMINATED = State.TERMINATED
_TIMED_OUT = State.TIMED_OUT
_SCHEDULED = State.SCHEDULED

T = TypeVar("T")

_cond_lock = threading.Lock()
_DONE = (FINISHED, CANCELLED, CANCELLED_AND_NOTIFIED)


class Owner(Protocol):
    """What an Instance asks of the engine that owns it."""

    def cancel_queued(self, inst: Instance) -> bool: ...

    def append_log(self, inst: Instance, level: LogLevel, message: str) -> None: ...

    def read_records(self, uuid: str, logs: bool) -> list: ...


class Instance(LogMethods, InstanceFields, Future[T]):
    """One execution of a Job.  Also a Future (generic in its result type, as
    Future[T]): result(), exception(), done(), cancel(), add_done_callback() work, and
    so do concurrent.futures.wait / as_completed.

    cancel() stops an instance that no worker has taken yet (it becomes CANCELED); a
    running one is not interrupted and cancel() returns False.

    Engine-owned fields (written by the engine only; read them, do not set them):
    handle (its slot in the engine, -1 outside it), payload (the pickled arguments a
    worker receives), created_ns / scheduled_ns / processed_ns / completed_ns (Unix ns,
    as in InstanceRecord), cancel_requested, parent (None; a Run's recurring instance),
    counted (whether wait() waits for it), recurrence (the engine's state of a
    recurring instance, or None), started_mono, timeout_sent, replaced_exc.

    Layout: the fields every instance has (the engine-owned ones above except the
    rarely set, plus job, args, priority, state, attempts, worker and Future's _state,
    _result, _exception) are C members of _core.InstanceFields, set by its compiled
    __init__: the engine's compiled calls (event drain, dealing, settling, releasing,
    the store rows) read and write them as struct fields, not dictionary-backed
    attributes (issue 14: the engine thread -0.55 us a no-op job, -43 bytes a queued
    instance).  To Python they are ordinary attributes.  Its finalizer takes it out of
    its engine's lookup table (_core.Borrowed) before it goes.

    Speed: Future.__init__ builds a threading.Condition (~1 us) and two lists that most
    instances never need (nobody waits on most of a batch's futures), and every such
    object is one more for the garbage collector to walk while the instance lives.  Here
    they are made on first use, and set_result/set_exception skip them when nobody has
    made them.  This leans on Future's private fields (_state, _result, _exception,
    _condition, _waiters, _done_callbacks), unchanged since Python 3.8;
    tests/test_futures.py races every path.
    """

    # Rarely set fields default on the class: an instance stores only what differs, in
    # its attribute array (the fields every instance has are InstanceFields' C
    # members).  CPython keeps that array compact (shared keys) only while attributes
    # are added in the same order on every instance; an out-of-order addition turns it
    # into a full dict (~1.5 us and ~700 bytes).  A name set here must not also be an
    # InstanceFields member: the class attribute would hide the member.
    cancel_requested = False  # set by cancel_instances() on a running instance
    parent = None  # a Run's recurring instance; None for an Instance
    counted = True  # counts toward wait(); a recurrence never ends by itself
    recurrence = None  # the engine's state of a recurring instance (ticks.Recurrence)
    run = 1
    timeout_sent = False
    replaced_exc: BaseException | None = None  # what an error_handler returned instead
    lost = 0  # times a worker died holding it before it started
    withdrawn = False  # given back to the store's shared queue unstarted (queue.py)
    # Future's Condition and lists, made on first use (see _condition below)
    _cond: threading.Condition | None = None
    _waiter_list: list | None = None
    _callback_list: list | None = None

    @property
    def kwargs(self) -> dict:
        """Keyword arguments of the executor (a new empty dict when there are none)."""
        kw = self._kwargs
        return {} if kw is None else kw

    @property
    def fire_log(self) -> list:
        """For a recurring instance: (run, fire time, jitter seconds) per run so far."""
        rec = self.recurrence
        return [] if rec is None else rec.fire_log

    # -- identity (uuid_str and kind: InstanceFields, compiled) ---------------------------
    @property
    def uuid(self) -> _uuid.UUID:
        """The instance's UUIDv7."""
        return _uuid.UUID(self._uuid_str)

    # -- timestamps ----------------------------------------------------------------------
    @property
    def created_at(self) -> datetime:
        """When it was scheduled (CREATED)."""
        return ns_to_datetime(self.created_ns)

    @property
    def scheduled_at(self) -> datetime | None:
        """When it is (or was) due to run: its next fire time for a recurring instance."""
        return ns_to_datetime(self.scheduled_ns)

    @property
    def processed_at(self) -> datetime | None:
        """When its latest attempt started, or None."""
        return ns_to_datetime(self.processed_ns)

    @property
    def completed_at(self) -> datetime | None:
        """When it reached its final state (or its latest run ended), or None."""
        return ns_to_datetime(self.completed_ns)

    def _final_at(self, state: State) -> datetime | None:
        return ns_to_datetime(self.completed_ns) if self.state is state else None

    @property
    def terminated_at(self) -> datetime | None:
        """When it ended TERMINATED (failed for good), or None."""
        return self._final_at(_TERMINATED)

    @property
    def canceled_at(self) -> datetime | None:
        """When it was CANCELED, or None."""
        return self._final_at(_CANCELED)

    @property
    def timed_out_at(self) -> datetime | None:
        """When it ended TIMED_OUT, or None."""
        return self._final_at(_TIMED_OUT)

    # -- options and records -------------------------------------------------------------
    @property
    def max_retries(self) -> int:
        """Retries it may take after a failed attempt (-1: RETRY_FOREVER)."""
        return self.job.max_retries

    @property
    def timeout(self) -> float | None:
        """Seconds an attempt may run before it is interrupted (None: no timeout)."""
        return self.job.timeout

    def history(self) -> list:
        """Its state history, oldest first (Manager.lookup_instance_history(self))."""
        return self._records(logs=False)

    def logs(self) -> list:
        """Its log history, oldest first (Manager.lookup_instance_logs(self))."""
        return self._records(logs=True)

    def _records(self, logs: bool) -> list:
        if self._owner is None:
            raise ManagerStateError(f"{self!r} belongs to no manager: no records to read")
        return self._owner.read_records(self.uuid_str, logs)

    # -- Future overrides ----------------------------------------------------------------
    if TYPE_CHECKING:
        # What type checkers see: Future's attributes (as_completed's protocol wants
        # them as attributes); at run time they are made on first use, below.
        _condition: threading.Condition
        _waiters: list[Any]
        _done_callbacks: list[Any]
    else:

        @property
        def _condition(self) -> threading.Condition:
            c = self._cond
            if c is None:
                with _cond_lock:
                    c = self._cond
                    if c is None:
                        c = self._cond = threading.Condition()
            return c

        # Future touches these two lists only while holding _condition, so making them
        # on first use cannot race.
        @property
        def _waiters(self) -> list:
            w = self._waiter_list
            if w is None:
                w = self._waiter_list = []
            return w

        @property
        def _done_callbacks(self) -> list:
            c = self._callback_list
            if c is None:
                c = self._callback_list = []
            return c

    def _settle(self, result: Any, exception: BaseException | None) -> None:
        # (self._cond, not self.__dict__: reading __dict__ would turn the compact
        # attribute array into a full dict)
        if self._cond is not None:
            if exception is None:
                Future.set_result(self, result)
            else:
                Future.set_exception(self, exception)
            return
        # No condition means nobody has waited, added a callback or cancelled: the
        # state can only be PENDING.  Store the outcome, then look again: a thread that
        # made the condition meanwhile either saw FINISHED or is waiting on it.
        if self._state != PENDING:
            raise InvalidStateError(f"{self._state}: {self!r}")
        self._result = result
        self._exception = exception
        self._state = FINISHED
        if self._cond is not None:
            self._notify_settled()

    def _notify_settled(self) -> None:
        """What Future.set_result/set_exception do after storing the outcome: tell the
        waiters and run the callbacks (the outcome is stored, the state FINISHED).
        _core.settle_results settles a run of completed instances as _settle does and
        calls this when a Condition appeared meanwhile."""
        exception = self._exception
        with self._condition:
            for waiter in self._waiters:
                if exception is None:
                    waiter.add_result(self)
                else:
                    waiter.add_exception(self)
            self._condition.notify_all()
        self._invoke_callbacks()

    # Reading a finished Future needs no lock (FINISHED is final, and the outcome was
    # stored before the state): skip the Condition that Future would make to read it.
    def result(self, timeout: float | None = None) -> T:
        """Future.result: the return value (recurring: of the latest finished run)."""
        if self._state == FINISHED:
            if self._exception is not None:
                raise self._exception
            return self._result
        if timeout is None and threading.current_thread() is threading.main_thread():
            self._wait_for_signals()
            timeout = 0
        return Future.result(self, timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Future.exception: the exception of a failed instance, or None."""
        if self._state == FINISHED:
            return self._exception
        if timeout is None and threading.current_thread() is threading.main_thread():
            self._wait_for_signals()
            timeout = 0
        return Future.exception(self, timeout)

    def _wait_for_signals(self) -> None:
        """Wait until done, waking in the main thread now and then so that a pending
        SIGINT / SIGTERM handler runs (signals.wait_for)."""
        with self._condition:
            signals.wait_for(self._condition, self.done)

    def done(self) -> bool:
        """Future.done: finished or cancelled."""
        return self._state in _DONE

    def set_result(self, result: T) -> None:
        """Future.set_result (the engine calls it)."""
        self._settle(result, None)

    def set_exception(self, exception: BaseException | None) -> None:
        """Future.set_exception (the engine calls it)."""
        self._settle(None, exception)

    def cancel(self) -> bool:
        """Cancel if no worker has taken the instance yet; True if it is now CANCELED."""
        if self._owner is None:
            return super().cancel()
        return self._owner.cancel_queued(self)

    def hand_to(self, owner: Owner) -> None:
        """Make `owner` the one cancel() and the log methods go to (the shared queue
        while the instance waits in the store, the engine once it runs here)."""
        self._owner = owner

    # -- settling, for the engine ------------------------------------------------------
    def cancel_future(self) -> None:
        """Future.cancel, then the notification wait()/as_completed() need (which an
        executor normally sends from set_running_or_notify_cancel)."""
        if Future.cancel(self):
            self.set_running_or_notify_cancel()

    def settle_run(self, result: Any, exc: BaseException | None) -> None:
        """A run of this recurring instance ended: the first resolves the Future; later
        ones replace what result() / exception() return (the latest finished run)."""
        if self._state == FINISHED:
            self._result, self._exception = result, exc
        elif exc is None:
            self.set_result(result)
        else:
            self.set_exception(exc)

    def settle_suspended(self) -> None:
        """The manager stopped: a recurrence's Future that no run resolved gets an error."""
        if not self.done():
            self.set_exception(
                ManagerStateError(
                    f"the manager stopped before a run of {self.kind!r} finished; the "
                    "recurrence is suspended in the store and resumes when a manager starts "
                    "on it"
                )
            )

    def sync_state(self) -> None:
        """A live recurring instance is PROCESSING while any of its runs is, else
        SCHEDULED."""
        rec = self.recurrence
        if not rec.ending:
            running = any(r.state is _PROCESSING for r in rec.runs)
            self.state = _PROCESSING if running else _SCHEDULED

    def running(self) -> bool:
        """True while an attempt is PROCESSING in a worker."""
        return self.state is _PROCESSING

    # -- logs ----------------------------------------------------------------------------
    def _log(self, level: LogLevel, msg: Any) -> None:
        if self._owner is None:
            raise ManagerStateError(f"{self!r} belongs to no manager: nowhere to log")
        self._owner.append_log(self, level, str(msg))

    def __repr__(self) -> str:
        return f"<Instance {self.kind} {self.uuid_str} {self.state.name}>"


class Run:
    """One run of a recurring instance: the unit the engine dispatches, retries and
    records for one fire.  Each has its own handle in the core and its own attempt
    state, so runs of one instance may overlap (Job.max_overlap); identity, payload
    and handlers are the instance's, and its history records carry the run number."""

    __slots__ = (
        "attempts",
        "completed_ns",
        "due_ns",
        "handle",
        "job",
        "lost",
        "parent",
        "payload",
        "priority",
        "processed_ns",
        "replaced_exc",
        "run",
        "started_mono",
        "state",
        "timeout_sent",
        "worker",
    )
    recurrence = None
    counted = False

    def __init__(self, parent: Instance, run: int, due_ns: int):
        self.parent = parent
        self.job = parent.job
        self.run = run
        self.due_ns = due_ns  # its tick plus its jitter, ns since the epoch
        self.priority = parent.priority
        self.state = _SCHEDULED
        self.attempts = 0
        self.worker: int | None = None
        self.handle = -1
        self.payload = parent.payload
        self.processed_ns: int | None = None
        self.completed_ns: int | None = None
        self.started_mono = 0
        self.timeout_sent = False
        self.replaced_exc: BaseException | None = None
        self.lost = 0

    @property
    def uuid_str(self) -> str:
        return self.parent.uuid_str

    @property
    def kind(self) -> str:
        return self.job.kind

    @property
    def cancel_requested(self) -> bool:
        return self.parent.cancel_requested

    def __repr__(self) -> str:
        return f"<Run {self.run} of {self.parent!r} {self.state.name}>"
