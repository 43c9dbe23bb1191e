"""Instance: one execution of a job, and a concurrent.futures.Future of its result.

The manager owns every field; users read them.  Timestamps are kept in nanoseconds and
shown as aware UTC datetimes.  (Future has no __slots__, so neither can this class.)"""

from __future__ import annotations

import threading
import uuid as _uuid
from concurrent.futures import Future, InvalidStateError
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, PENDING
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .records import LogLevel, LogMethods, ns_to_datetime
from .state import State

if TYPE_CHECKING:
    from .job import Job


# Enum attribute access costs ~0.1 us (metaclass lookup); the hot paths use these.
_CREATED = State.CREATED
_PROCESSING = State.PROCESSING

_cond_lock = threading.Lock()
_DONE = (FINISHED, CANCELLED, CANCELLED_AND_NOTIFIED)


class Instance(LogMethods, Future):
    """One execution of a Job.  Also a Future: result(), exception(), done(), cancel(),
    add_done_callback() work, and so do concurrent.futures.wait / as_completed.

    cancel() stops an instance that no worker has taken yet (it becomes CANCELED); a
    running one is not interrupted and cancel() returns False.

    Speed: Future.__init__ builds a threading.Condition (~1 us) and two lists that most
    instances never need (nobody waits on most of a batch's futures), and every such
    object is one more for the garbage collector to walk while the instance lives.  Here
    they are made on first use, and set_result/set_exception skip them when nobody has
    made them.  This leans on Future's private fields (_state, _result, _exception,
    _condition, _waiters, _done_callbacks), unchanged since Python 3.8;
    tests/test_futures.py races every path.
    """

    # Defaults live on the class: an instance stores only what differs, which keeps
    # a million queued instances small (see the load figures in the README).
    _cancel_requested = False  # set by cancel_instances() on a running instance
    _parent = None  # a Run's recurring instance; None for an Instance
    _counted = True  # counts toward wait(); a recurrence never ends by itself
    _result = None
    _exception = None
    _uuid_str: str | None = None
    _handle = -1
    _processed_ns: int | None = None
    _completed_ns: int | None = None
    attempts = 0
    run = 1
    worker: int | None = None
    # recurring (crontab) instances
    _recurring = False
    _lookahead = None  # a fire time pulled from the crontab walk, not used yet
    _runs: list = ()  # its Runs handed to the engine and not yet ended
    _parked = False  # the next tick waits: max_overlap runs are in flight
    _ending = False  # canceled or stopping: ends when its last run ends
    _suspended = False  # ended by stop(), not canceled: the store may resume it
    _closed = False  # ended: its handle is freed
    _ran_to_end = False  # its latest ended run was not canceled
    _rec = None  # its RecurrenceRecord while this manager owns it in the store
    fire_log: list = ()  # (run, fire time, jitter seconds) per run, for recurring ones
    _started_mono = 0
    _timeout_sent = False

    def __init__(
        self, manager, job: Job, uid: int, args: tuple, kwargs: dict, priority: int, created_ns: int
    ):
        # Future.__init__ minus the Condition and lists (see _condition below).
        self._state = PENDING
        self._manager = manager
        self.job = job
        self._uid = uid
        self.args = args
        self._kwargs = kwargs or None
        self.priority = priority
        self.state = _CREATED
        self._payload = b""
        self._created_ns = created_ns
        self._scheduled_ns: int | None = None

    @property
    def kwargs(self) -> dict:
        """Keyword arguments of the executor (a new empty dict when there are none)."""
        kw = self._kwargs
        return {} if kw is None else kw

    # -- identity ------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        """The kind of the instance's job."""
        return self.job.kind

    @property
    def uuid(self) -> _uuid.UUID:
        """The instance's UUIDv7."""
        return _uuid.UUID(int=self._uid)

    @property
    def uuid_str(self) -> str:
        """The UUID as its canonical string (the key every store uses)."""
        s = self._uuid_str
        if s is None:
            h = f"{self._uid:032x}"
            s = self._uuid_str = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        return s

    # -- timestamps ----------------------------------------------------------------------
    @property
    def created_at(self) -> datetime:
        """When it was scheduled (CREATED)."""
        return ns_to_datetime(self._created_ns)

    @property
    def scheduled_at(self) -> datetime | None:
        """When it is (or was) due to run: its next fire time for a recurring instance."""
        return ns_to_datetime(self._scheduled_ns)

    @property
    def processed_at(self) -> datetime | None:
        """When its latest attempt started, or None."""
        return ns_to_datetime(self._processed_ns)

    @property
    def completed_at(self) -> datetime | None:
        """When it reached its final state (or its latest run ended), or None."""
        return ns_to_datetime(self._completed_ns)

    # -- Future overrides ----------------------------------------------------------------
    @property
    def _condition(self) -> threading.Condition:
        c = self.__dict__.get("_cond")
        if c is None:
            with _cond_lock:
                c = self.__dict__.get("_cond")
                if c is None:
                    c = self.__dict__["_cond"] = threading.Condition()
        return c

    # Future touches these two lists only while holding _condition, so making them on
    # first use cannot race.
    @property
    def _waiters(self) -> list:
        return self.__dict__.setdefault("_waiter_list", [])

    @property
    def _done_callbacks(self) -> list:
        return self.__dict__.setdefault("_callback_list", [])

    def _settle(self, result: Any, exception: BaseException | None) -> None:
        d = self.__dict__
        if "_cond" in d:
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
        if "_cond" in d:
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
    def result(self, timeout: float | None = None) -> Any:
        """Future.result: the return value (recurring: of the latest finished run)."""
        if self._state == FINISHED:
            if self._exception is not None:
                raise self._exception
            return self._result
        return Future.result(self, timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Future.exception: the exception of a failed instance, or None."""
        if self._state == FINISHED:
            return self._exception
        return Future.exception(self, timeout)

    def done(self) -> bool:
        """Future.done: finished or cancelled."""
        return self._state in _DONE

    def set_result(self, result: Any) -> None:
        """Future.set_result (the engine calls it)."""
        self._settle(result, None)

    def set_exception(self, exception: BaseException | None) -> None:
        """Future.set_exception (the engine calls it)."""
        self._settle(None, exception)

    def cancel(self) -> bool:
        """Cancel if no worker has taken the instance yet; True if it is now CANCELED."""
        if self._manager is None:
            return super().cancel()
        return self._manager._cancel_queued(self)

    def _make_recurring(self) -> None:
        """Make this a recurring instance: its own timer, never counted by wait()."""
        self._recurring = True
        self._counted = False
        self._runs = []
        self.fire_log = []

    def running(self) -> bool:
        """True while an attempt is PROCESSING in a worker."""
        return self.state is _PROCESSING

    # -- logs ----------------------------------------------------------------------------
    def _log(self, level: LogLevel, msg: Any) -> None:
        self._manager._append_log(self, level, str(msg))

    def __repr__(self) -> str:
        return f"<Instance {self.kind} {self.uuid_str} {self.state.name}>"


class Run:
    """One run of a recurring instance: the unit the engine dispatches, retries and
    records for one fire.  Each has its own handle in the core and its own attempt
    state, so runs of one instance may overlap (Job.max_overlap); identity, payload
    and handlers are the instance's, and its history records carry the run number."""

    __slots__ = (
        "_completed_ns",
        "_handle",
        "_parent",
        "_payload",
        "_processed_ns",
        "_replaced_exc",
        "_started_mono",
        "_timeout_sent",
        "attempts",
        "due_ns",
        "job",
        "priority",
        "run",
        "state",
        "worker",
    )
    _recurring = False
    _counted = False

    def __init__(self, parent: Instance, run: int, due_ns: int):
        self._parent = parent
        self.job = parent.job
        self.run = run
        self.due_ns = due_ns  # its tick plus its jitter, ns since the epoch
        self.priority = parent.priority
        self.state = State.SCHEDULED
        self.attempts = 0
        self.worker: int | None = None
        self._handle = -1
        self._payload = parent._payload
        self._processed_ns: int | None = None
        self._completed_ns: int | None = None
        self._started_mono = 0
        self._timeout_sent = False

    @property
    def uuid_str(self) -> str:
        return self._parent.uuid_str

    @property
    def kind(self) -> str:
        return self.job.kind

    @property
    def _cancel_requested(self) -> bool:
        return self._parent._cancel_requested

    def __repr__(self) -> str:
        return f"<Run {self.run} of {self._parent!r} {self.state.name}>"
