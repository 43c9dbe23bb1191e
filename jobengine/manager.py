"""Manager: registers jobs, schedules instances, runs the engine, answers lookups.

    user threads                         engine thread (one; owns workers and dispatch)
    schedule_*():                        loop:
      Instance, args pickled once          supervisor messages (born / died + cause)
      records CREATED, SCHEDULED           drain every worker's event ring
      inbox.append (no lock) ---------->   inbox -> compiled core (under _lock)
      ring the doorbell                    dispatch ready instances to free credits
                                           flush records to the store (one batch)
                                           resolve futures, run handlers
                                           park on the doorbell until an event, a
                                           schedule call or the next due timer
    supervisor process: forks, limits and reaps workers; workers: run executors

One thread does both dispatching and recording: on a two-core machine a second Python
thread would only trade GIL hand-offs for nothing.  The compiled core (SchedulerCore),
the handle table and the active count are guarded by `_lock`, which the engine takes
once per turn and user threads only to cancel and to wait; worker tables are touched
only by the engine thread.

A recurring (crontab) instance is its own timer in the core; each due tick becomes a
Run (instance.py), dispatched, retried and recorded like an instance, so runs of one
instance may overlap up to Job.max_overlap.  Which manager runs a recurrence, and how
it outlives this one in the store, is recurrences.py.
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import signal
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from concurrent.futures._base import FINISHED
from datetime import datetime, timedelta, timezone
from typing import Any

import cloudpickle

from . import _core
from .clock import SYSTEM, Clock
from .errors import (
    DuplicateJobError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    JobTimeout,
    ManagerStateError,
    MemoryLimitExceeded,
    RemoteError,
    SerializationError,
    UnknownJobError,
    WorkerCrashed,
)
from .ids import uuid7_int
from .instance import Instance, Run
from .job import Job, check_priority, check_schedule_at, check_seconds
from .pool.channel import E_ERR, E_LOG, E_OK, E_STARTED, TAG_MASK, read_payload
from .pool.pool import RING_CONTROL, Pool, WorkerEvent, WorkerInfo, WorkerSlot
from .query import Query
from .recorder import Recorder
from .records import (
    InstanceRecord,
    LogLevel,
    LogRecord,
    StateRecord,
    datetime_to_ns,
)
from .recurrences import Recurrences, settle_suspended
from .schedule import fire_times
from .scheduler import Dispatcher
from .state import State
from .stores.base import Store
from .stores.memory import MemoryStore

# Enum attribute access costs ~0.1 us (metaclass lookup); the hot paths use these.
_CANCELED = State.CANCELED
_COMPLETED = State.COMPLETED
_PROCESSING = State.PROCESSING
_SCHEDULED = State.SCHEDULED
_TERMINATED = State.TERMINATED
_TIMED_OUT = State.TIMED_OUT

log = logging.getLogger("jobengine")

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

MAX_COUNTED_MISSES = 1000  # past this, missed ticks are skipped over, not counted
SPIN_S = 20e-6  # engine spin before parking, only while tiny jobs are in flight
SPIN_JOBS_NS = 50_000  # "tiny": attempts shorter than this on average
IDLE_PARK_S = 0.5


def _decode_error(payload: bytes) -> tuple[BaseException, str]:
    raw, type_name, message, tb = pickle.loads(payload)
    exc: BaseException | None = None
    if raw is not None:
        try:
            exc = pickle.loads(raw)
        except Exception:
            exc = None
    if exc is None:
        exc = RemoteError(type_name, message, tb)
    return exc, tb


class Manager(Executor):
    """The job manager (go-job's Manager), also a concurrent.futures.Executor.

    Manager(num_workers=os.cpu_count(), store=MemoryStore()).  Schedule before or after
    start(); instances wait in the scheduler until the pool runs.  Use it as a context
    manager to start on enter and stop_with_wait() on exit.

    Recurring (crontab) instances are kept in the store as well: stop() suspends them
    and a manager started on the same store later resumes them (misfire policy for the
    ticks missed meanwhile).  `lease` (seconds) is how long this manager's claim on
    them holds without renewal: if it dies, another manager on the store takes them
    over that long after.  `node` names this manager in the store."""

    def __init__(
        self,
        num_workers: int | None = None,
        store: Store | None = None,
        *,
        max_jobs_per_worker: int | None = None,
        max_memory_per_worker: int | None = None,
        kill_grace: float = 1.0,
        handle_signals: bool = True,
        clock: Clock | None = None,
        lease: float = 30.0,
    ):
        if num_workers is None:
            num_workers = os.cpu_count() or 1
        if not isinstance(num_workers, int) or isinstance(num_workers, bool):
            raise InvalidArgumentTypeError(f"num_workers must be an int, got {num_workers!r}")
        if num_workers < 1:
            raise InvalidArgumentError(f"num_workers must be >= 1, got {num_workers}")
        if store is not None and not isinstance(store, Store):
            raise InvalidArgumentTypeError(f"store must be a jobengine Store, got {store!r}")
        for name, v in (
            ("max_jobs_per_worker", max_jobs_per_worker),
            ("max_memory_per_worker", max_memory_per_worker),
        ):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
                raise InvalidArgumentTypeError(f"{name} must be an int or None, got {v!r}")
            if v is not None and v < 1:
                raise InvalidArgumentError(f"{name} must be >= 1, got {v}")
        if clock is not None and not isinstance(clock, Clock):
            raise InvalidArgumentTypeError(f"clock must be a jobengine Clock, got {clock!r}")
        self._clock: Clock = clock if clock is not None else SYSTEM
        self._max_jobs = max_jobs_per_worker
        self._max_memory = max_memory_per_worker
        self._kill_grace = check_seconds(kill_grace, "kill_grace")
        lease = check_seconds(lease, "lease", allow_zero=False)
        self._handle_signals = handle_signals
        self._stop_deadline: float | None = None
        self._num_workers = num_workers
        self.store: Store = store if store is not None else MemoryStore()
        self._recorder = Recorder(self.store)
        self._recurrences = Recurrences(self, lease)
        self.node = self._recurrences.node
        self._dispatcher = Dispatcher(self)
        self._pool: Pool | None = None
        # Jobs: read without a lock on the hot path, changed under _jobs_lock.
        self._jobs_lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._kind_ids: dict[Job, int] = {}
        self._kind_seq = itertools.count(1)
        self._blobs: dict[Job, bytes] = {}
        self._fn_jobs: dict[Any, Job] = {}  # submit(): function -> its implicit Job
        # New instances queue here (deque appends are atomic): scheduling takes no lock.
        self._inbox: deque[tuple[Instance, int]] = deque()
        # _lock guards the core, the handle table and the active count.  The engine
        # takes it once per turn; user threads only to cancel and to wait.
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._core = _core.SchedulerCore()
        self._by_handle: list[Instance | None] = []
        # Every instance a user still holds, live or finished, by uuid: lookups return
        # these objects rather than bare records.
        # (uuid -> weak reference; dead entries are pruned as the table doubles, which
        # costs a fraction of WeakValueDictionary's per-insert callback machinery.)
        self._known: dict[str, weakref.ref[Instance]] = {}
        self._known_limit = 4096
        self._free_handles: list[int] = []
        self._active = 0
        self._finished: list[Instance] = []  # settled this turn; released in one batch
        self._preload: set[Job] = set()  # jobs due later whose executors workers lack
        self._kill_requests: deque[Instance] = deque()  # running instances to cancel
        self._state = "new"  # new -> running -> stopping -> stopped
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # -- jobs ----------------------------------------------------------------------------
    def register_job(self, job: Job) -> Job:
        """Register `job` under its kind (DuplicateJobError if the kind is taken)."""
        if not isinstance(job, Job):
            raise InvalidArgumentTypeError(f"register_job needs a Job, got {job!r}")
        with self._jobs_lock:
            if job.kind in self._jobs:
                raise DuplicateJobError(f"a job of kind {job.kind!r} is already registered")
            self._kind_ids.setdefault(job, next(self._kind_seq))
            self._jobs[job.kind] = job
        if job.crontab is not None and self._state == "running":
            self._recurrences.claim([job.kind])  # resume those waiting in the store
        return job

    def unregister_job(self, kind: str) -> Job:
        """Remove the job of `kind`; instances already scheduled still run."""
        with self._jobs_lock:
            try:
                return self._jobs.pop(kind)
            except KeyError:
                raise UnknownJobError(f"no job of kind {kind!r} is registered") from None

    def lookup_job(self, kind: str) -> Job:
        """The registered job of `kind` (UnknownJobError if none)."""
        try:
            return self._jobs[kind]
        except KeyError:
            raise UnknownJobError(f"no job of kind {kind!r} is registered") from None

    def list_jobs(self) -> list[Job]:
        """Registered jobs, in registration order."""
        with self._jobs_lock:
            return list(self._jobs.values())

    def _executor_blob(self, job: Job) -> bytes:
        blob = self._blobs.get(job)
        if blob is None:
            # Under a virtual clock the engine enforces timeouts in virtual time; the
            # supervisor's real-time deadline would fire at the wrong moment.
            timeout = None if self._clock.virtual else job.timeout
            blob = self._blobs[job] = cloudpickle.dumps(
                (job.executor, job.instance_param, job.kind, timeout)
            )
        return blob

    # -- scheduling ----------------------------------------------------------------------
    def schedule_registered_job(self, kind: str, **options: Any) -> Instance:
        """Schedule an instance of the registered job `kind`; options as schedule_job."""
        return self.schedule_job(self.lookup_job(kind), **options)

    def schedule_job(
        self,
        job: Job,
        *,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        priority: int | None = None,
        schedule_at: datetime | None = None,
        schedule_after: float | timedelta | None = None,
    ) -> Instance:
        """Schedule one instance of `job` (registering it if its kind is new).

        args/kwargs go to the executor (checked against its signature now, pickled
        now: an argument that cannot be pickled raises SerializationError and nothing
        is recorded).  priority / schedule_at / schedule_after override the job's."""
        if self._state in ("stopping", "stopped"):
            raise ManagerStateError("cannot schedule on a manager that is stopping or stopped")
        if not isinstance(job, Job):
            raise InvalidArgumentTypeError(f"schedule_job needs a Job, got {job!r}")
        if type(args) is not tuple:
            if isinstance(args, (str, bytes, dict)) or not isinstance(args, Iterable):
                raise InvalidArgumentTypeError(f"args must be a tuple or list, got {args!r}")
            args = tuple(args)
        if kwargs is None:
            kwargs = {}
        elif not isinstance(kwargs, dict):
            raise InvalidArgumentTypeError(f"kwargs must be a dict, got {kwargs!r}")
        prio = job.priority if priority is None else check_priority(priority)
        if schedule_at is None and schedule_after is None:
            at, after = job.schedule_at, job.schedule_after
        else:
            at = check_schedule_at(schedule_at)
            after = check_seconds(schedule_after, "schedule_after")
        job.bind(args, kwargs)
        if self._jobs.get(job.kind) is not job:
            self._adopt(job)
        clock = self._clock
        inst = Instance(self, job, uuid7_int(), args, kwargs, prio, clock.time_ns())
        try:
            payload = (args, kwargs, inst.uuid_str) if job.instance_param else (args, kwargs)
            inst._payload = _dumps(payload)
            if job.crontab is not None:
                key_material = _dumps((job.kind, args, kwargs))
        except Exception as e:
            raise SerializationError(
                f"arguments of job {job.kind!r} cannot be pickled: {type(e).__name__}: {e}"
            ) from None
        due = self._mono_due(at, after)
        wall = inst._created_ns
        inst._scheduled_ns = wall + max(0, due - clock.monotonic_ns()) if due else wall
        if job.crontab is not None:
            # A recurring instance: the recurrence starts at the due time (ticks at or
            # after it), one run per tick, all under this uuid.
            # Explicit start: ticks at or after it; default: ticks after now, as cron.
            # (built from whole microseconds: a float of ns would round past the tick)
            explicit = at is not None or after is not None
            start = _EPOCH + timedelta(microseconds=inst._scheduled_ns // 1000 - explicit)
            inst._make_recurring()
            inst._fires = fire_times(
                job.crontab, job._tz, start, nonexistent=job.nonexistent, ambiguous=job.ambiguous
            )
            try:
                first = next(inst._fires)
            except StopIteration:
                raise InvalidArgumentError(f"crontab {job.crontab!r} never fires") from None
            # Into the store first: the same schedule (kind and arguments)
            # there already, here or in another manager, is returned, not doubled.
            rec, existing = self._recurrences.add(inst, key_material, first)
            if existing is not None:
                return existing
        # Records first: once the engine has it, it may run at once.
        self._recorder.created(inst, wall)
        if job.crontab is not None:
            due = self._arm_fire(inst, first)
            self._recurrences.own(inst, rec)
        known = self._known
        known[inst.uuid_str] = weakref.ref(inst)
        if len(known) > self._known_limit:
            self._prune_known()
        self._inbox.append((inst, due))
        pool = self._pool
        if pool is not None:
            pool.doorbell.ring()
        if self._state == "stopped":  # lost a race with stop(): nothing will run it
            self._cancel_queued(inst)
        return inst

    def _prune_known(self) -> None:
        known = self._known
        for uuid in [u for u, r in known.items() if r() is None]:
            known.pop(uuid, None)
        self._known_limit = max(4096, 2 * len(known))

    def _mono_due(self, schedule_at: datetime | None, schedule_after: float | None) -> int:
        """Due time on the (monotonic) clock; schedule_at in the past means now."""
        clock = self._clock
        if schedule_at is not None:
            delta = datetime_to_ns(schedule_at) - clock.time_ns()
            return clock.monotonic_ns() + max(0, delta)
        if schedule_after:
            return clock.monotonic_ns() + int(schedule_after * 1e9)
        return 0  # due at once: the core puts it straight into the ready heap

    def _arm_fire(self, inst: Instance, fire: datetime) -> int:
        """Make `fire` the instance's next run: draw its jitter, log both, return the
        due time on the monotonic clock."""
        clock = self._clock
        jitter = inst.job.jitter_seconds()
        fire_ns = datetime_to_ns(fire)
        at_ns = fire_ns + int(jitter * 1e9)
        inst._scheduled_ns = at_ns
        inst.fire_log.append((inst.run, fire, jitter))
        self._recorder.log(
            inst,
            LogLevel.DEBUG,
            clock.time_ns(),
            f"run {inst.run} fires at {fire.isoformat()}"
            + (f" + jitter {jitter:.3f} s" if jitter else ""),
            0,
        )
        if inst._rec is not None:
            self._recurrences.save(inst, fire_ns)
        return clock.monotonic_ns() + max(0, at_ns - clock.time_ns())

    def _next_fire(self, inst: Instance) -> datetime:
        fire = inst._lookahead
        if fire is not None:
            inst._lookahead = None
            return fire
        return next(inst._fires)

    def _fire(self, inst: Instance) -> Run | None:
        """A recurring instance's tick is due (engine thread, _lock held): apply the
        misfire policy, then return the Run to dispatch for it (None when it is not to
        run).  The next tick is armed at once while fewer than max_overlap runs are in
        flight; otherwise it waits (parked) until a run ends."""
        if inst._cancel_requested or self._state != "running":
            cause = "canceled" if inst._cancel_requested else "manager stopped"
            self._end_recurrence(inst, cause, suspend=not inst._cancel_requested)
            return None
        if not self._release_fire(inst):
            return None
        run_no, fire, jitter = inst.fire_log[-1]
        rec = inst._rec
        if rec is not None and not self._recurrences.claim_tick(rec, fire):
            # Another manager ran this tick (it took the recurrence over while this one
            # was paused past its lease): never twice.  Move on to the next tick.
            self._recorder.log(inst, LogLevel.WARN, self._clock.time_ns(),
                               f"the tick at {fire.isoformat()} was run by another manager; "
                               "skipped", 0)  # fmt: skip
            inst.fire_log.pop()
            self._core.add(inst._handle, self._arm_fire(inst, self._next_fire(inst)),
                           inst.priority)  # fmt: skip
            return None
        run = Run(inst, run_no, datetime_to_ns(fire) + int(jitter * 1e9))
        self._new_handle(run)
        inst._runs.append(run)
        if len(inst._runs) < inst.job.max_overlap:
            self._arm_next(inst)
        else:
            inst._parked = True
        return run

    def _too_late(self, run: Run) -> bool:
        """Under misfire="skip", whether a run that waited for a worker (the pool was
        saturated) would now start later than misfire_grace after its tick."""
        job = run.job
        if job.misfire != "skip" or run.attempts:  # a retry is late by design
            return False
        return self._clock.time_ns() - run.due_ns > job.misfire_grace * 1e9

    def _skip_late_run(self, run: Run) -> None:
        """Engine thread: a run too late to start under misfire="skip" ends unrun."""
        now = self._clock.time_ns()
        job = run.job
        late = (now - run.due_ns) / 1e9
        cause = (
            f"missed: a worker was free only {late:.3f} s after its tick "
            f"(misfire=skip, grace {job.misfire_grace:g} s)"
        )
        self._recorder.log(run._parent, LogLevel.WARN, now, f"run {run.run} {cause}", 0)
        run._completed_ns = now
        self._recorder.transition(run, _CANCELED, now, cause)
        self._run_ended(run)

    def _arm_next(self, inst: Instance) -> None:
        """Arm the next tick of a recurring instance as its next run (_lock held); the
        tick may already be past after a slow run: _release_fire then applies the
        misfire policy."""
        inst.run += 1
        self._recorder.next_run(inst, _SCHEDULED, self._clock.time_ns())
        due = self._arm_fire(inst, self._next_fire(inst))
        self._core.add(inst._handle, due, inst.priority)

    def _run_ended(self, run: Run) -> None:
        """A run reached its final state, recorded (engine thread): free it, then go
        on (arm a parked tick) or, when the recurrence is ending, end it with its last run."""
        inst = run._parent
        self._finished.append(run)
        inst._ran_to_end = run.state is not _CANCELED
        inst._completed_ns = run._completed_ns
        with self._lock:
            inst._runs.remove(run)
            if inst._cancel_requested or inst._ending or self._state != "running":
                cause = "canceled" if inst._cancel_requested else "manager stopped"
                self._end_recurrence(inst, cause, suspend=not inst._cancel_requested)
            elif inst._parked:
                inst._parked = False
                self._arm_next(inst)
            _sync_state(inst)

    def _end_recurrence(self, inst: Instance, cause: str, suspend: bool) -> None:
        """End a recurring instance (engine thread, _lock held): disarm its tick and
        cancel its runs not yet handed to a worker; the instance ends when its last
        run in flight does.  suspend (the manager stops): the next run keeps its
        SCHEDULED record, open, and the store keeps the recurrence for a manager
        started on it later; otherwise (canceled) both end, recorded CANCELED."""
        now = self._clock.time_ns()
        rec = self._recorder
        if not inst._ending:
            inst._ending = True
            inst._suspended = suspend
            if not suspend:  # canceled: gone from the store too
                self._recurrences.forget(inst)
            if inst._handle >= 0:
                self._core.cancel(inst._handle)
            # Unless parked (its tick not armed yet), the next run has an open SCHEDULED
            # record, armed or firing right now.
            if not inst._parked and not suspend:
                rec.next_run(inst, _CANCELED, now, cause)
            for run in [r for r in inst._runs if r.worker is None]:
                if self._core.cancel(run._handle):
                    run._completed_ns = now
                    rec.transition(run, _CANCELED, now, cause)
                    inst._runs.remove(run)
                    self._finished.append(run)
        if inst._runs or inst._closed:
            return
        inst._closed = True
        self._recurrences.live.pop(inst.uuid_str, None)
        self._finished.append(inst)  # frees its handle this turn
        if inst._suspended:
            if inst._parked and inst._rec is not None and inst._ran_to_end:
                # Its latest run ended on its own: the store must resume at the tick
                # after it, or the next manager would run that tick again.
                inst._parked = False
                inst.run += 1
                rec.next_run(inst, _SCHEDULED, now)
                self._arm_fire(inst, self._next_fire(inst))
            inst._rec = None
            inst.state = _SCHEDULED
            rec.log(inst, LogLevel.INFO, now, f"suspended: {cause}", 0)
            rec.defer(settle_suspended, inst)
        else:
            inst.state = _CANCELED
            inst._completed_ns = now
            rec.defer(_future_cancel, inst)
        rec.touch(inst)

    def _release_fire(self, inst: Instance) -> bool:
        """A recurring instance's tick fired (engine thread, _lock held).  Never stack
        runs: every tick already past counts as one.  If the latest of them is within
        misfire_grace, or the policy is "coalesce", run once now for it; under "skip"
        with every past tick later than the grace, do not run: arm the next tick.
        Returns whether to run now."""
        job = inst.job
        clock = self._clock
        now = clock.time_ns()
        run_no, fire, jitter = inst.fire_log[-1]
        past = [fire]
        more = ""  # "+" when there were too many missed ticks to count them all
        while True:
            nxt = self._next_fire(inst)
            if datetime_to_ns(nxt) > now:
                inst._lookahead = nxt
                break
            past.append(nxt)
            if len(past) == MAX_COUNTED_MISSES:
                # Far behind (a per-second crontab after a day's stop is 86,400 ticks):
                # jump to now rather than walk every tick under the lock.
                past.append(self._jump_to_now(inst, now, past[-2], past[-1]))
                more = "+"
                break
        latest = past[-1]
        late_ns = now - datetime_to_ns(latest) - int(jitter * 1e9)
        on_time = late_ns <= job.misfire_grace * 1e9
        if on_time or job.misfire == "coalesce":
            if len(past) > 1:
                inst.fire_log[-1] = (run_no, latest, jitter)
                self._recorder.log(
                    inst,
                    LogLevel.WARN,
                    now,
                    f"{len(past) - 1}{more} missed tick(s) coalesced into run {run_no} "
                    f"(misfire={job.misfire}, grace {job.misfire_grace:g} s)",
                    0,
                )
            elif not on_time:  # late (no worker was free, or the manager was behind)
                self._recorder.log(
                    inst,
                    LogLevel.WARN,
                    now,
                    f"run {run_no} starts {late_ns / 1e9:.3f} s after its tick "
                    f"(misfire=coalesce, grace {job.misfire_grace:g} s)",
                    0,
                )
            return True
        self._recorder.log(
            inst,
            LogLevel.WARN,
            now,
            f"{len(past)}{more} missed tick(s) skipped (misfire=skip, "
            f"grace {job.misfire_grace:g} s)",
            0,
        )
        inst.fire_log.pop()
        due = self._arm_fire(inst, self._next_fire(inst))
        self._core.add(inst._handle, due, inst.priority)
        return False

    def _jump_to_now(self, inst: Instance, now: int, a: datetime, b: datetime) -> datetime:
        """Restart inst's crontab walk a few tick intervals (b - a) before `now`; return
        the latest tick at or before now (b if the new walk finds none earlier than
        now), leaving the first tick after now as the lookahead."""
        job = inst.job
        step_us = max(1, (datetime_to_ns(b) - datetime_to_ns(a)) // 1000)
        since = _EPOCH + timedelta(microseconds=now // 1000 - 4 * step_us)
        fires = fire_times(
            job.crontab, job._tz, since, nonexistent=job.nonexistent, ambiguous=job.ambiguous
        )
        latest = b
        for t in fires:
            if datetime_to_ns(t) > now:
                inst._lookahead = t
                break
            latest = max(latest, t)
        inst._fires = fires
        return latest

    def _adopt(self, job: Job) -> None:
        """Register a job met for the first time in schedule_job."""
        with self._jobs_lock:
            known = self._jobs.get(job.kind)
            if known is None:
                self._kind_ids.setdefault(job, next(self._kind_seq))
                self._jobs[job.kind] = job
            elif known is not job:
                raise DuplicateJobError(
                    f"another job of kind {job.kind!r} is registered; schedule that one"
                )

    def _new_handle(self, inst: Instance | Run) -> int:
        """Give inst a handle in the table (caller holds _lock)."""
        free = self._free_handles
        if free:
            h = free.pop()
            self._by_handle[h] = inst
        else:
            h = len(self._by_handle)
            self._by_handle.append(inst)
        inst._handle = h
        return h

    def _take_inbox(self) -> int:
        """Move newly scheduled instances into the core (caller holds _lock)."""
        inbox = self._inbox
        n = 0
        core = self._core
        by_handle = self._by_handle
        free = self._free_handles
        while inbox:
            inst, due = inbox.popleft()
            if inst.state is _CANCELED:  # canceled while still in the inbox
                continue
            if free:  # _new_handle, inlined: this loop runs once per scheduled instance
                h = free.pop()
                by_handle[h] = inst
            else:
                h = len(by_handle)
                by_handle.append(inst)
            inst._handle = h
            core.add(h, due, inst.priority)
            n += inst._counted  # a recurrence never ends by itself: wait() skips it
            if due:  # runs later: its executor can travel to the workers now
                self._preload.add(inst.job)
        self._active += n
        return n

    def _release(self, inst: Instance) -> None:
        """The instance reached a final state: free its handle (caller holds _lock)."""
        h = inst._handle
        if h >= 0 and self._by_handle[h] is inst:
            self._by_handle[h] = None
            self._free_handles.append(h)
            self._active -= inst._counted
        inst._handle = -1
        if self._active == 0 and not self._inbox:
            self._idle.notify_all()

    # -- cancel --------------------------------------------------------------------------
    def _cancel_queued(self, inst: Instance) -> bool:
        """Cancel an instance no worker has taken; True if it is now CANCELED."""
        with self._lock:
            if inst.state is not _SCHEDULED or inst._ending:
                return inst.state is _CANCELED
            if inst._runs or self._recurrences.is_standby(inst):
                return False  # a run is in flight, or another manager runs it
            if inst._handle >= 0:
                if not self._core.cancel(inst._handle):
                    return False  # handed to a worker already
                self._release(inst)
            elif inst.worker is not None:
                return False
            # else: still in the inbox; the engine will skip it once it is CANCELED
            now = self._clock.time_ns()
            inst._completed_ns = now
            self._recorder.transition(inst, _CANCELED, now)
            if inst._recurring:
                inst._closed = True
                self._recurrences.forget(inst)
            if self._active == 0 and not any(_pending(i) for i, _ in self._inbox):
                self._idle.notify_all()
        self._recorder.flush()
        _future_cancel(inst)
        return True

    def cancel_instances(self, query: Query) -> list[Instance]:
        """Cancel every instance matching `query`, queued or running.  A queued one is
        CANCELED at once; a running one is stopped by killing only its worker (which is
        replaced) and becomes CANCELED moments later.  Canceled instances are never
        retried.  Returns the instances it canceled or is canceling."""
        out = []
        for inst in self._live_matching(query):
            if inst.cancel():
                out.append(inst)
            elif inst.state in (_SCHEDULED, _PROCESSING) and self._pool is not None:
                inst._cancel_requested = True
                self._kill_requests.append(inst)
                self._pool.doorbell.ring()
                out.append(inst)
        return out

    def _serve_kill_requests(self) -> None:
        """Engine thread: stop the workers running instances whose cancel was asked."""
        reqs = self._kill_requests
        while reqs:
            inst = reqs.popleft()
            targets = [inst]
            if inst._recurring:
                with self._lock:
                    targets = list(inst._runs)
                    self._end_recurrence(inst, "canceled", suspend=False)
            for t in targets:
                if t.worker is None or t.state is not _PROCESSING:
                    continue  # not started yet: killed when its STARTED event arrives
                w = self._pool.workers.get(t.worker)
                if w is not None and t._handle in w.inflight:
                    self._pool.kill(w, "cancel", t._handle | t.attempts << 32)

    def _live(self) -> list[Instance]:
        with self._lock:
            live = [i for i in self._by_handle if i is not None and i._parent is None]
            live += [i for i, _ in self._inbox]
        return live

    def _live_matching(self, query: Query) -> list[Instance]:
        return [
            i for i in self._live() if query.matches(i.uuid_str, i.kind, i.state, i._created_ns)
        ]

    # -- logs from the manager's side ----------------------------------------------------
    def _append_log(self, inst: Instance, level: LogLevel, message: str) -> None:
        self._recorder.log(inst, level, self._clock.time_ns(), message)

    # -- lookups -------------------------------------------------------------------------
    def lookup_instance_history(self, ji: Instance | str) -> list[StateRecord]:
        """The state history of an instance (or uuid), oldest first."""
        self._recorder.flush()
        return self.store.lookup_history(_uuid_of(ji))

    def lookup_instance_logs(self, ji: Instance | str) -> list[LogRecord]:
        """The log history of an instance (or uuid), oldest first."""
        self._recorder.flush()
        return self.store.lookup_logs(_uuid_of(ji))

    def lookup_instances(self, query: Query | None = None) -> list[Instance | InstanceRecord]:
        """Instances matching `query`, oldest first.  Instances this manager created and
        that are still referenced are returned as their Instance objects; others (made by
        another manager, or forgotten) as the store's InstanceRecords, which have the
        same read-only fields."""
        self._recorder.flush()
        records = self.store.lookup_instances(query or Query())
        known = self._known
        out: list[Instance | InstanceRecord] = []
        for r in records:
            ref = known.get(r.uuid)
            inst = ref() if ref is not None else None
            out.append(inst if inst is not None else r)
        return out

    def clear_instance_history(
        self, before: datetime | None = None, after: datetime | None = None
    ) -> int:
        """Delete state records in [after, before); return how many."""
        self._recorder.flush()
        return self.store.clear_history(_ns_or_none(before), _ns_or_none(after))

    def clear_instance_logs(
        self, before: datetime | None = None, after: datetime | None = None
    ) -> int:
        """Delete log records in [after, before); return how many."""
        self._recorder.flush()
        return self.store.clear_logs(_ns_or_none(before), _ns_or_none(after))

    # -- pool ------------------------------------------------------------------------
    @property
    def num_workers(self) -> int:
        """The pool's target size."""
        return self._num_workers

    def resize_workers(self, n: int) -> None:
        """Grow or shrink the pool to `n` workers.  Shrinking lets the retired workers
        finish what they hold first: no job is lost or run twice."""
        if not isinstance(n, int) or isinstance(n, bool):
            raise InvalidArgumentTypeError(f"resize_workers needs an int, got {n!r}")
        if n < 1:
            raise InvalidArgumentError(f"resize_workers needs n >= 1, got {n}")
        self._num_workers = n
        if self._pool is not None:
            self._pool.doorbell.ring()

    @property
    def workers(self) -> list[WorkerInfo]:
        """A snapshot of the pool's workers (pid, state, current job, RSS, CPU)."""
        pool = self._pool
        return pool.info() if pool is not None else []

    @property
    def worker_events(self) -> list[WorkerEvent]:
        """Every worker birth and death so far (the latest 10,000), oldest first; a
        death names its exit code or signal."""
        pool = self._pool
        return list(pool.events) if pool is not None else []

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> Manager:
        """Start the supervisor, the workers and the engine thread."""
        if self._state != "new":
            raise ManagerStateError(f"start() on a manager that is {self._state}")
        self._recurrences.claim()  # resume recurrences waiting in the store
        self._pool = Pool()
        self._pool.start({"max_memory": self._max_memory, "term_grace": self._kill_grace})
        self._wake = self._pool.doorbell.ring
        self._clock.subscribe(self._wake)
        if self._handle_signals:
            self._install_signal_handlers()
        self._state = "running"
        self._thread = threading.Thread(target=self._engine, name="jobengine-engine", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every scheduled instance has reached a final state.  True if
        it did, False on timeout."""
        with self._idle:
            return self._idle.wait_for(
                lambda: self._active == 0 and not any(_pending(i) for i, _ in self._inbox),
                timeout,
            )

    def stop(self, wait: bool = False, grace: float | None = None) -> None:
        """Stop: cancel instances still queued, let running ones finish (within `grace`
        seconds, if given: then their workers are killed and they become CANCELED), then
        shut the pool down.  With wait=True (stop_with_wait), run everything first.
        Recurring instances are suspended, not canceled: they stay in the store for the
        next manager."""
        grace = check_seconds(grace, "grace")
        if self._state == "new":
            self._state = "stopped"
            self._recurrences.release()  # scheduled, never started: free for others now
            return
        if self._state == "stopped":
            return
        if wait:
            self.wait()
        self._begin_stop(grace)
        if self._thread is not threading.current_thread():
            self._thread.join()
        self._restore_signal_handlers()
        if self._error is not None:
            raise ManagerStateError(f"the engine thread failed: {self._error!r}") from self._error

    def _begin_stop(self, grace: float | None = None) -> None:
        with self._lock:
            if self._state == "running":
                self._state = "stopping"
            if grace is not None:
                deadline = time.monotonic() + grace
                if self._stop_deadline is None or deadline < self._stop_deadline:
                    self._stop_deadline = deadline
        self._pool.doorbell.ring()

    # -- signals ---------------------------------------------------------------------
    def _install_signal_handlers(self) -> None:
        """SIGINT / SIGTERM stop the manager gracefully (queued instances are canceled,
        running ones finish within kill_grace), then behave as before: Ctrl-C raises
        KeyboardInterrupt, SIGTERM exits with status 143.  Installed only from the main
        thread and only over the default handlers: an application's own handlers win."""
        self._old_handlers: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, default in (
            (signal.SIGINT, signal.default_int_handler),
            (signal.SIGTERM, signal.SIG_DFL),
        ):
            if signal.getsignal(sig) is default:
                self._old_handlers[sig] = default
                signal.signal(sig, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        for sig, old in getattr(self, "_old_handlers", {}).items():
            if signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, old)
        self._old_handlers = {}

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._state == "running":
            self._begin_stop(self._kill_grace)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    def stop_with_wait(self) -> None:
        """Run everything scheduled to its end, then stop."""
        self.stop(wait=True)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """concurrent.futures.Executor.shutdown."""
        self.stop(wait=wait and not cancel_futures)

    def __enter__(self) -> Manager:
        if self._state == "new":
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_with_wait()

    # -- Executor API ----------------------------------------------------------------
    def _job_for(self, fn: Callable) -> Job:
        job = self._fn_jobs.get(fn)
        if job is None:
            kind = getattr(fn, "__qualname__", None) or getattr(
                type(fn), "__qualname__", "callable"
            )
            with self._jobs_lock:
                base, n = kind, 1
                while kind in self._jobs:
                    n += 1
                    kind = f"{base}#{n}"
            job = self.register_job(Job(kind, fn))
            self._fn_jobs[fn] = job
        return job

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Instance:
        """Run fn(*args, **kwargs) on the pool; return its Instance (a Future)."""
        if self._state in ("stopping", "stopped"):
            raise ManagerStateError("cannot schedule new futures after shutdown")
        return self.schedule_job(self._job_for(fn), args=args, kwargs=kwargs)

    def map(
        self, fn: Callable, *iterables: Iterable, timeout: float | None = None, chunksize: int = 1
    ) -> Iterator:
        """Executor.map: results in order.  chunksize > 1 sends that many calls per job."""
        if not isinstance(chunksize, int) or isinstance(chunksize, bool) or chunksize < 1:
            raise InvalidArgumentError(f"chunksize must be an int >= 1, got {chunksize!r}")
        end = None if timeout is None else time.monotonic() + timeout
        if chunksize == 1:
            futures = [self.submit(fn, *a) for a in zip(*iterables, strict=False)]
        else:
            # One iterable: ship its items as they are (no per-item argument tuples).
            star = len(iterables) != 1
            runner = self._job_for(_ChunkRunner(fn, star))
            it = zip(*iterables, strict=False) if star else iter(iterables[0])
            futures = []
            while chunk := list(itertools.islice(it, chunksize)):
                futures.append(self.schedule_job(runner, args=(chunk,)))

        def results() -> Iterator:
            try:
                for f in futures:
                    left = None if end is None else end - time.monotonic()
                    if chunksize == 1:
                        yield f.result(left)
                    else:
                        yield from f.result(left)
            finally:
                for f in futures:
                    f.cancel()

        return results()

    # -- the engine thread -----------------------------------------------------------
    def _engine(self) -> None:
        pool = self._pool
        rec = self._recorder
        try:
            while True:
                flags = pool.doorbell.take()
                busy = self._handle_control() if flags & RING_CONTROL else False
                busy |= self._drain_events()
                if self._kill_requests:
                    self._serve_kill_requests()
                if self._clock.virtual:
                    self._virtual_timeouts()
                if self._state == "running":
                    self._recurrences.renew()
                if self._state == "stopping":
                    if self._stop_step():
                        break
                else:
                    self._apply_resize()
                busy |= self._dispatcher.dispatch()
                if self._preload:
                    with self._lock:  # _take_inbox (under _lock) adds to it
                        jobs, self._preload = self._preload, set()
                    self._dispatcher.preload(jobs)
                busy |= rec.run_deferred()
                if not busy:
                    pool.doorbell.wait(pool.rings, self._idle_timeout(), self._spin())
        except BaseException as e:  # keep the process alive; report at stop()
            self._error = e
            log.exception("jobengine: the engine thread failed; the manager is stopped")
        finally:
            self._engine_exit()

    def _engine_exit(self) -> None:
        with self._lock:
            self._state = "stopped"
            self._take_inbox()
            orphans = [i for i in self._by_handle if i is not None]
            for inst in orphans:
                self._core.cancel(inst._handle)
                self._release(inst)
        for inst in orphans:  # only after a failure: an orderly stop leaves none
            if inst._parent is None and not inst.done():
                inst.set_exception(
                    ManagerStateError("the manager stopped before this instance ran")
                )
        self._clock.unsubscribe(self._wake)
        try:
            self._recorder.run_deferred()
            self._recurrences.release()
        finally:
            self._pool.close()

    def _virtual_timeouts(self) -> None:
        """Under a virtual clock the engine, not the supervisor, notices timeouts."""
        now = self._clock.monotonic_ns()
        for w in self._pool.workers.values():
            inst = w.running
            timeout = inst.job.timeout if inst is not None else None
            if timeout and not inst._timeout_sent and now - inst._started_mono >= timeout * 1e9:
                inst._timeout_sent = True
                self._pool.kill(w, "timeout", inst._handle | inst.attempts << 32)

    def _spin(self) -> float:
        # Spinning pays only when the next event is due within the spin window (tiny
        # jobs in flight); otherwise it burns a core the workers need.
        if self._dispatcher.avg_ns > SPIN_JOBS_NS:
            return 0.0
        return SPIN_S if any(w.inflight for w in self._pool.workers.values()) else 0.0

    def _idle_timeout(self) -> float:
        if self._stop_deadline is not None:
            return max(0.0, min(IDLE_PARK_S, self._stop_deadline - time.monotonic()))
        park = min(IDLE_PARK_S, max(0.0, self._recurrences.next_renew - time.monotonic()))
        with self._lock:
            nxt = self._core.next_due_ns()
            ready = self._core.ready_len
        if ready or nxt is None or self._clock.virtual:
            # Waiting for a credit, for work, or for a virtual clock to move: an event,
            # a schedule call or clock.advance() rings the doorbell.
            return park
        return min(park, max(0.0, (nxt - self._clock.monotonic_ns()) / 1e9))

    def _apply_resize(self) -> None:
        pool = self._pool
        live = [w for w in pool.workers.values() if not w.retiring]
        want = self._num_workers
        if len(live) < want:
            for _ in range(want - len(live)):
                pool.spawn(pool.free_index())
        elif len(live) > want:
            for w in sorted(live, key=lambda w: -w.index)[: len(live) - want]:
                pool.retire(w)

    def _stop_step(self) -> bool:
        """One step of an orderly stop; True when the pool is gone."""
        pool = self._pool
        with self._lock:
            self._take_inbox()
            live = [i for i in self._by_handle if i is not None]
            queued = [i for i in live if i._counted and i._handle in self._core]
            for inst in live:  # recurrences are suspended, not canceled
                if inst._recurring and not inst._ending:
                    self._end_recurrence(inst, "manager stopped", suspend=True)
        for inst in queued:  # stop() cancels what is still queued
            self._cancel_queued(inst)
        busy = [w for w in pool.workers.values() if w.inflight]
        if busy:
            deadline = self._stop_deadline
            if deadline is not None and time.monotonic() >= deadline:
                for w in busy:  # the grace is over: stop what still runs
                    pool.kill(w, "stop")
            return False
        for w in list(pool.workers.values()):
            pool.retire(w)
        self._handle_control()
        return not pool.workers

    def _handle_control(self) -> bool:
        msgs = self._pool.poll()
        for msg in msgs:
            if msg[0] == "died":
                self._worker_died(*msg[1:])
            elif msg[0] == "lost":
                raise ManagerStateError("the supervisor process is gone")
        return bool(msgs)

    def _worker_died(
        self,
        index: int,
        pid: int,
        exitcode: int | None,
        sig: int | None,
        reason: str | None = None,
        target: int = 0,
    ) -> None:
        pool = self._pool
        w = pool.workers.get(index)
        if w is None or (w.pid is not None and w.pid != pid):
            return
        self._drain_worker(w)  # events it published before dying still count
        pool.remove(w)
        how = f"killed by signal {sig}" if sig is not None else f"exit code {exitcode}"
        death = f"worker {index} (pid {pid}) died: {how}"
        now = self._clock.time_ns()
        rec = self._recorder
        running = w.running
        for inst in list(w.inflight.values()):
            del w.inflight[inst._handle]
            if inst.state is _SCHEDULED:  # handed over but never started
                inst.attempts -= 1
                inst.worker = None
                if inst._cancel_requested:
                    self._cancel_unstarted(inst, now)
                else:  # back to the queue, same priority
                    with self._lock:
                        self._core.add(inst._handle, 0, inst.priority)
                continue
            # The kill's target: the attempt the supervisor named (it reads timeouts from
            # the worker's status) or, for memory, whatever the worker was running.
            aimed = (
                (target == (inst._handle | inst.attempts << 32))
                if target
                else (reason == "memory" and inst is running)
            )
            if aimed and reason == "timeout":
                cause = f"timed out after {inst.job.timeout:g} s; {death}"
                rec.log(inst, LogLevel.ERROR, now, cause)
                self._attempt_failed(
                    inst, JobTimeout(f"job {inst.kind!r}: {cause}"), _TIMED_OUT, now, cause
                )
            elif aimed and reason == "memory":
                cause = f"worker over max_memory_per_worker ({self._max_memory} bytes); {death}"
                rec.log(inst, LogLevel.ERROR, now, cause)
                err = MemoryLimitExceeded(f"job {inst.kind!r}: {cause}")
                self._attempt_failed(inst, err, _TERMINATED, now, cause)
            elif inst._cancel_requested or reason == "stop":
                cause = "canceled while running" if inst._cancel_requested else "manager stopped"
                rec.log(inst, LogLevel.WARN, now, f"{cause}; {death}")
                self._canceled_running(inst, now, cause)
            else:
                cause = death + (f" ({reason})" if reason else "")
                rec.log(inst, LogLevel.ERROR, now, cause)
                err = WorkerCrashed(cause, exitcode, sig)
                self._attempt_failed(inst, err, _TERMINATED, now, cause)
        w.running = None

    def _canceled_running(self, inst: Instance | Run, now: int, cause: str | None) -> None:
        """A started attempt was stopped on purpose: CANCELED, never retried."""
        inst._completed_ns = now
        self._recorder.transition(inst, _CANCELED, now, cause)
        if inst._parent is not None:
            self._run_ended(inst)
            return
        self._finished.append(inst)
        self._recorder.defer(_future_cancel, inst)

    def _cancel_unstarted(self, inst: Instance | Run, now: int) -> None:
        self._canceled_running(inst, now, None)

    def _drain_events(self) -> bool:
        busy = False
        for w in list(self._pool.workers.values()):
            busy |= self._drain_worker(w)
        if self._finished:
            with self._lock:
                for inst in self._finished:
                    self._release(inst)
            self._finished.clear()
        return busy

    def _drain_worker(self, w: WorkerSlot) -> bool:
        records = w.channel.events.read_many()
        if not records:
            return False
        rec = self._recorder
        inflight = w.inflight
        virtual = self._clock.virtual
        for tag, a, b, payload in records:
            if virtual:  # every record time on the one (virtual) clock
                b = self._clock.time_ns()
            handle = a & 0xFFFFFFFF
            inst = inflight.get(handle)
            if inst is None or inst.attempts != a >> 32:
                continue  # a stale event (the attempt was already settled)
            t = tag & TAG_MASK
            if t == E_STARTED:
                inst._processed_ns = b
                inst._started_mono = self._clock.monotonic_ns()
                w.running = inst
                rec.transition(inst, _PROCESSING, b)
                parent = inst._parent
                if parent is not None:
                    parent.state = _PROCESSING
                    parent._processed_ns = b
                    parent.attempts = inst.attempts
                if inst._cancel_requested:
                    self._pool.kill(w, "cancel", a)
            elif t == E_OK:
                del inflight[handle]
                w.running = None
                w.jobs += 1
                self._dispatcher.observe(b - inst._processed_ns)
                try:
                    result = pickle.loads(read_payload(tag, payload))
                except Exception as e:
                    err = SerializationError(
                        f"the result of job {inst.kind!r} cannot be unpickled: {e}"
                    )
                    self._attempt_failed(inst, err, _TERMINATED, b, str(err))
                    continue
                self._succeeded(inst, result, b)
            elif t == E_ERR:
                del inflight[handle]
                w.running = None
                w.jobs += 1
                self._dispatcher.observe(b - inst._processed_ns)
                exc, tb = _decode_error(read_payload(tag, payload))
                cause = f"{type(exc).__name__}: {exc}"
                rec.log(inst, LogLevel.ERROR, b, tb or cause)
                self._attempt_failed(inst, exc, _TERMINATED, b, cause)
            elif t == E_LOG:
                body = read_payload(tag, payload)
                rec.log(inst, LogLevel(body[0]), b, body[1:].decode(), a >> 32)
        return True

    def _succeeded(self, inst: Instance | Run, result: Any, t: int) -> None:
        rec = self._recorder
        inst._completed_ns = t
        rec.transition(inst, _COMPLETED, t)
        parent = inst._parent
        if parent is not None:
            rec.defer(_resolve_run, parent, result, None)
            self._run_ended(inst)
        else:
            self._finished.append(inst)
            rec.defer(inst.set_result, result)
        handler = inst.job.response_handler
        if handler is not None:
            rec.defer(rec._call, handler, parent or inst, result)

    def _attempt_failed(
        self, inst: Instance | Run, exc: BaseException, state: State, t: int, cause: str
    ) -> None:
        rec = self._recorder
        job = inst.job
        rec.transition(inst, state, t, cause)
        if job.error_handler is not None:
            # At once, not deferred: the handler must see the attempt that failed.
            self._run_error_handler(inst, exc)
        if inst.attempts <= job.max_retries:
            delay = job.backoff_seconds(inst.attempts)
            inst.worker = None
            rec.transition(inst, _SCHEDULED, self._clock.time_ns())
            due = self._clock.monotonic_ns() + int(delay * 1e9) if delay else 0
            with self._lock:
                self._core.add(inst._handle, due, inst.priority)
                if inst._parent is not None:
                    _sync_state(inst._parent)
            return
        inst._completed_ns = t
        if inst._parent is not None:
            err = getattr(inst, "_replaced_exc", None) or exc
            rec.defer(_resolve_run, inst._parent, None, err)
            self._run_ended(inst)
            return
        self._finished.append(inst)
        rec.defer(self._resolve_failure, inst, exc)

    def _run_error_handler(self, inst: Instance | Run, exc: BaseException) -> None:
        try:
            replaced = inst.job.error_handler(inst._parent or inst, exc)
        except Exception:
            log.exception("jobengine: the error_handler of job %r raised", inst.kind)
            return
        if isinstance(replaced, BaseException):
            inst._replaced_exc = replaced

    @staticmethod
    def _resolve_failure(inst: Instance, exc: BaseException) -> None:
        inst.set_exception(getattr(inst, "_replaced_exc", None) or exc)


class _ChunkRunner:
    """The executor of a map() chunk: calls fn on each item (or argument tuple), in order."""

    def __init__(self, fn: Callable, star: bool):
        self.fn = fn
        self.star = star
        self.__qualname__ = f"{getattr(fn, '__qualname__', 'fn')}[map]"

    def __call__(self, chunk: list) -> list:
        fn = self.fn
        if self.star:
            return [fn(*a) for a in chunk]
        return [fn(x) for x in chunk]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ChunkRunner) and (other.fn, other.star) == (self.fn, self.star)

    def __hash__(self) -> int:
        return hash(("chunk", self.fn, self.star))


def _resolve_run(inst: Instance, result: Any, exc: BaseException | None) -> None:
    """A run of a recurring instance ended: the first resolves the Future; later ones
    replace what result() / exception() return (the latest finished run)."""
    if inst._state == FINISHED:
        inst._result, inst._exception = result, exc
    elif exc is None:
        inst.set_result(result)
    else:
        inst.set_exception(exc)


def _pending(inst: Instance) -> bool:
    """An instance in the inbox that wait() waits for (a recurrence never ends by itself)."""
    return inst._counted and inst.state is not _CANCELED


def _dumps(obj: Any) -> bytes:
    raw = pickle.dumps(obj, protocol=5)
    if b"__main__" in raw:
        # A class or function of the user's script: workers cannot import __main__ by
        # name, so send it by value.
        raw = cloudpickle.dumps(obj, protocol=5)
    return raw


def _sync_state(inst: Instance) -> None:
    """A live recurring instance is PROCESSING while any of its runs is, else SCHEDULED."""
    if not inst._ending:
        running = any(r.state is _PROCESSING for r in inst._runs)
        inst.state = _PROCESSING if running else _SCHEDULED


def _future_cancel(inst: Instance) -> None:
    # Future.cancel, then the notification wait()/as_completed() need (which an
    # executor normally sends from set_running_or_notify_cancel).
    if Future.cancel(inst):
        inst.set_running_or_notify_cancel()


def _ns_or_none(dt: datetime | None) -> int | None:
    return None if dt is None else datetime_to_ns(dt)


def _uuid_of(ji: Instance | str) -> str:
    if isinstance(ji, Instance):
        return ji.uuid_str
    if isinstance(ji, str):
        return ji
    return str(ji)


__all__ = ["Manager"]
