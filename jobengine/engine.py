"""The engine: where every instance's live state is kept, and the one thread that changes it.

    user threads (Manager)              engine thread (one per manager; this module)
    schedule_*() / submit()             loop, once per wake-up:
      Instance, args pickled once         supervisor messages (born / died + cause)
      records CREATED, SCHEDULED          drain every worker's event ring (rings)
      inbox.append, no lock  ------->     inbox -> compiled core (timer heap until due,
      ring the doorbell (or, on an           then ready heap by priority, FIFO)
        idle engine, deal it here)
                                          ticks: a due crontab tick becomes a Run
                                          dispatcher: ready -> a worker with a free
                                             credit -> its task ring (shared memory)
                                          recorder: records -> the store, one batch
                                          settle: futures, handlers (after the batch)
                                          park on the doorbell until an event, a
                                          schedule call or the next due timer
    supervisor process (beside the pool): forks, limits, kills and reaps workers
    worker processes: task ring -> executor -> event ring (STARTED, OK/ERR, LOG)

The data path, one way round: schedule -> inbox -> core -> dispatcher -> rings ->
workers -> rings -> engine -> recorder -> store, and back to the user as a settled
Future.

Owns: the compiled SchedulerCore, the handle table (handle -> Instance or Run), the
inbox, the lock, the pool, the engine thread and its loop, and the life of each
attempt once a worker reports on it (started, finished, failed, retried, its worker
died).  Verbs for the rest of the package: admit, cancel_queued, request_cancel,
append_log, wait_idle, resize, begin_stop, join.

Thread rules: `lock` guards the core, the handle table and the active count; the engine
thread takes it once per turn, user threads only to cancel and to wait.  Worker tables
(pool.py) and the dispatcher are touched only by whoever holds the turn (`_turn`): the
engine thread through each of its turns, or a user thread that admits a job to an idle
engine while the engine thread parks (_deal_here: that job then starts one thread
wake-up sooner).  One thread both dispatches and records: on a two-core machine a
second Python thread would only trade GIL hand-offs for nothing.  Never does: argument
checks (manager.py), dealing to workers (scheduler.py), tick and misfire rules
(ticks.py), store I/O beyond handing batches to the recorder (recorder.py).
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import pickle
import threading
import time
import weakref
from collections import deque
from concurrent.futures import CancelledError
from concurrent.futures._base import FINISHED, PENDING
from typing import Any

from . import _core, signals
from .clock import Clock
from .errors import (
    EngineFailedError,
    InitializerError,
    JobCanceled,
    JobEngineError,
    JobHandlingError,
    JobTimeout,
    ManagerStateError,
    MemoryLimitExceeded,
    RemoteError,
    RemoteTraceback,
    ResultDecodeError,
    WorkerCrashed,
)
from .instance import Instance, Run
from .logbridge import relay
from .metrics import BUCKETS_NS, FINAL_NAMES, EngineStats
from .pool.channel import (
    E_ERR,
    E_INIT_ERR,
    E_LOG,
    E_OK,
    E_PYLOG,
    E_SCHEDULE,
    E_STARTED,
    T_FORGET,
    TAG_MASK,
    new_doorbell,
    read_payload,
)
from .pool.pool import RING_CONTROL, Pool, WorkerSlot
from .query import Query
from .recorder import Recorder
from .records import LogLevel
from .recurrences import StoredRecurrences, new_node_name
from .registry import JobRegistry
from .scheduler import NAP_MAX_NS, Dispatcher
from .signals import start_thread, user_code
from .state import State
from .stores.base import Store
from .ticks import Ticks

# Enum attribute access costs ~0.1 us (metaclass lookup); the hot paths use these.
_CANCELED = State.CANCELED
_COMPLETED = State.COMPLETED
_PROCESSING = State.PROCESSING
_SCHEDULED = State.SCHEDULED
_TERMINATED = State.TERMINATED
_TIMED_OUT = State.TIMED_OUT

log = logging.getLogger("jobengine")
# How the compiled drain settles a run of completed instances: one deferred call each
# run (Instance.set_result for each of them, the common case inline).
SETTLE_RESULTS = functools.partial(_core.settle_results, PENDING, FINISHED, log)

SPIN_S = 20e-6  # engine spin before parking, only while tiny jobs are in flight
SPIN_JOBS_NS = 50_000  # "tiny": attempts shorter than this on average
IDLE_PARK_S = 0.5
# make_way: how long a scheduling thread lets the engine thread have the GIL, at most,
# in steps of MAKE_WAY_STEP_S: up to the end of a nap (the engine may be in one) and
# the turn after it.
MAKE_WAY_STEP_S = 50e-6
MAKE_WAY_MAX_S = NAP_MAX_NS / 1e9 + 1e-3
# A worker that dies before it publishes anything is replaced after a delay that
# doubles per such death, up to this; a worker that works resets it.
MAX_RESPAWN_DELAY_S = 5.0
# A unit handed to workers that died this many times before starting it fails
# (WorkerCrashed) instead of going back to the queue again.
MAX_UNSTARTED_LOSSES = 3
CONTROL_POLL_S = 0.25  # at least this often the supervisor's socket is read


def decode_error(payload: bytes) -> tuple[BaseException, str]:
    """A worker's E_ERR payload -> (the exception, its formatted traceback).  The
    exception's __cause__ carries the worker's traceback, as ProcessPoolExecutor's
    does, so an uncaught one prints the worker's frames."""
    raw, type_name, message, tb = pickle.loads(payload)
    exc: BaseException | None = None
    if raw is not None:
        try:
            exc = pickle.loads(raw)
        except BaseException:
            exc = None
    if exc is None:
        exc = RemoteError(type_name, message, tb)
    exc.__cause__ = RemoteTraceback(f'\n"""\n{tb}"""')
    return exc, tb


def _pending(inst: Instance) -> bool:
    """An instance in the inbox that wait() waits for (a recurrence never ends by itself)."""
    return inst.counted and inst.state is not _CANCELED and not inst.withdrawn


def _inbox_entry(inst: Instance, due: int) -> Instance | tuple[Instance, int]:
    """What the inbox holds for `inst`: itself when it is due now (most are: no tuple,
    56 bytes less per instance queued before start()), else (inst, due)."""
    return (inst, due) if due else inst


class Engine:
    """One manager's engine.  Built by Manager; started once, stopped once."""

    def __init__(
        self,
        *,
        store: Store,
        registry: JobRegistry,
        clock: Clock,
        num_workers: int,
        max_jobs_per_worker: int | None,
        max_memory_per_worker: int | None,
        kill_grace: float,
        lease: float,
        init_blob: bytes | None = None,
        init_fds: list[int] | None = None,
    ):
        self.clock = clock
        self.registry = registry
        # The engine's doorbell: workers, the supervisor, the store writer and the
        # scheduling threads ring it; the engine thread sleeps on it.
        self._doorbell = new_doorbell()
        # its descriptor is passed to the processes the engine starts; closed when the
        # engine ends, or when an engine never started is collected (once either way)
        self._close_doorbell = weakref.finalize(self, os.close, self._doorbell[0])
        self._close_doorbell.atexit = False  # (at exit the process's end closes it)
        self.doorbell = self._doorbell[2]
        self.stored = StoredRecurrences(store, new_node_name(), lease)
        self.recorder = Recorder(store, self.stored.node, self.doorbell, self._doorbell[0])
        self.ticks = Ticks(self, self.stored)
        self.target_workers = num_workers
        self.max_jobs = max_jobs_per_worker
        self.max_memory = max_memory_per_worker
        self.kill_grace = kill_grace
        self.init_blob = init_blob
        self.init_fds = list(init_fds or ())
        # New instances queue here (deque appends are atomic): scheduling takes no lock.
        # (This deque and _known are read by _core.ShortPath too: never rebind them.)
        self.inbox: deque[Instance | tuple[Instance, int]] = deque()  # see _inbox_entry
        self.lock = threading.Lock()
        self._idle = threading.Condition(self.lock)
        self.core = _core.SchedulerCore()
        self._by_handle: list[Instance | Run | None] = []
        self._free_handles: list[int] = []
        self._active = 0  # counted instances in the core or in a worker
        # Every instance the engine holds or a user still holds, live or finished, by
        # uuid: lookups return these objects rather than bare records.  uuid -> a
        # _core.Borrowed: the Instance's address, which its finalizer takes out of the
        # table before it goes (no weak reference per job for the collector to count
        # and walk).  The entry never keeps it alive: while the engine runs it, the
        # inbox, the handle table or the finished list do, so finishing a job never
        # touches this table (it is large: ~9% of the engine thread's time when it
        # did).  An instance a shared queue owns (queue.py: its cancel goes through
        # the store) gets a weak reference instead: its finalizer would not find this
        # table.  The walk as the table doubles (_prune_known) drops those that died.
        self._known: dict[str, Instance | _core.Borrowed] = {}
        self._known_limit = 4096
        self._finished: list[Instance | Run] = []  # settled this turn; freed in one batch
        self._events: _core.EventDrain | None = None  # see start()
        self._preload: set = set()  # jobs due later whose executors workers lack
        self._kill_requests: deque[Instance] = deque()  # running instances to cancel
        # new -> running [-> draining] -> stopping -> stopped.  draining: shutdown(wait=
        # False) or an abandoned manager: no new work; what is queued runs, then stop.
        self.state = "new"
        # The process whose engine this is: an os.fork() child gets a copy that is
        # stopped at once (forked_away), and says so when asked to schedule.
        self.pid = os.getpid()
        self.forked = False
        # The initializer failed in a worker: the engine serves nothing more.
        self.broken: BaseException | None = None
        self._forget: deque[int] = deque()  # kind ids of dropped jobs, for the workers
        self.pool: Pool | None = None
        self.shared_queue: Any = None  # the manager's SharedQueue on a durable store
        self.follow_ups: Any = None  # the manager's FollowUps (jobs scheduled by jobs)
        self.dispatcher: Dispatcher | None = None
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self._stop_deadline: float | None = None
        self._next_control_poll = 0.0
        self._respawn_delay = 0.0  # see MAX_RESPAWN_DELAY_S
        self._respawn_at = 0.0  # time.monotonic() before which no worker is spawned
        self._turns_begun = 0  # engine loop turns begun / completed (for sync())
        self._way_made = -1  # the turn count make_way last waited from (once a turn)
        self._turns = 0
        self._turned = threading.Condition()
        # Held by the engine thread through each turn, free while it naps or parks: a
        # thread that admits a job due now and finds it free deals the job itself
        # (_deal_here) instead of waking the engine thread to do it.
        self._turn = threading.Lock()

    @property
    def node(self) -> str:
        """This manager's name in the store."""
        return self.stored.node

    @property
    def running(self) -> bool:
        """Whether the engine runs what it has (recurrences keep ticking)."""
        return self.state in ("running", "draining")

    @property
    def accepting(self) -> bool:
        """Whether new instances may be admitted."""
        return self.state in ("new", "running") and self.broken is None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Resume the store's recurrences, start the supervisor and the engine thread."""
        if self.target_workers:  # (a manager with no workers only queues one-off instances)
            self.ticks.learn_variants()
            self.ticks.claim()
        self.pool = Pool(self.init_blob, self._doorbell)
        self.pool.start(
            {
                "max_memory": self.max_memory,
                "term_grace": self.kill_grace,
                "authkey": bytes(multiprocessing.current_process().authkey),
                # workers forward logging records at the level the manager logs at
                "log_level": logging.getLogger().getEffectiveLevel(),
            },
            self.init_fds,
        )
        self.dispatcher = Dispatcher(self.pool, self.registry, self.max_jobs)
        # Every job's two events, compiled (_core.EventDrain); under a virtual clock all
        # go through _one_event, which stamps them with that clock's time.
        self._events = None if self.clock.virtual else _core.EventDrain(
            self.recorder, self.dispatcher, self._finished, self.clock.monotonic_ns,
            pickle.loads, _PROCESSING, _COMPLETED, _SCHEDULED, SETTLE_RESULTS,
            EngineStats, BUCKETS_NS, FINAL_NAMES[_COMPLETED],
        )  # fmt: skip
        self._wake = self.pool.doorbell.ring
        self.clock.subscribe(self._wake)
        self.state = "running"
        self._thread = threading.Thread(target=self._loop, name="jobengine-engine", daemon=True)
        start_thread(self._thread)

    def forked_away(self) -> None:
        """In an os.fork() child: this is a copy of the parent's engine, whose thread,
        workers and supervisor stayed with the parent.  The copy takes nothing more
        and stop() leaves it at once (nothing taken: a parent thread may have held a
        lock at the fork).  start() again gives the child a manager of its own."""
        self.forked = True
        self.state = "stopped"

    def stop_unstarted(self) -> None:
        """stop() before start(): what was scheduled meanwhile is canceled (nothing would
        ever run it); recurrences are freed for other managers; everything recorded
        reaches the store."""
        self.state = "stopped"
        for inst in self._inbox_instances():
            if inst.counted:
                self.cancel_queued(inst, notify=False)
        self._notify_if_idle()
        self.ticks.release()
        self.recorder.close()

    def sync(self, timeout: float = 1.0) -> None:
        """Wait until the engine thread has completed a whole turn begun after this call
        (it has taken the inbox and dealt what free workers can take)."""
        if self.state not in ("running", "draining") or self._thread is threading.current_thread():
            return
        with self._turned:
            target = self._turns_begun + 1  # a turn that begins after this call
            self.pool.doorbell.ring()
            self._turned.wait_for(lambda: self._turns >= target or not self.running, timeout)

    def has_pending(self) -> bool:
        """Whether any counted instance is queued, running or in the inbox."""
        with self.lock:
            return self._active > 0 or any(map(_pending, self._inbox_instances()))

    def cancel_all_queued(self) -> None:
        """Cancel every counted instance no worker has taken yet (shutdown's
        cancel_futures)."""
        for inst in self.live():
            if inst.counted and inst.worker is None:
                self.cancel_queued(inst, notify=False)
        self._notify_if_idle()

    def _notify_if_idle(self) -> None:
        with self.lock:
            if self._active == 0 and not any(map(_pending, self._inbox_instances())):
                self._idle.notify_all()

    def drain(self) -> None:
        """Stop taking new work; run what is queued, then stop (nobody waits)."""
        with self.lock:
            if self.state == "running":
                self.state = "draining"
        if self.pool is not None:
            self.pool.doorbell.ring()

    def begin_stop(self, grace: float | None = None) -> None:
        """Ask the engine thread to stop: queued instances are canceled, running ones
        finish (within `grace` seconds if given, then their workers are killed)."""
        with self.lock:
            if self.state in ("running", "draining"):
                self.state = "stopping"
            if grace is not None:
                deadline = time.monotonic() + grace
                if self._stop_deadline is None or deadline < self._stop_deadline:
                    self._stop_deadline = deadline
        self.pool.doorbell.ring()

    def join(self) -> None:
        """Wait for the engine thread to end (unless called from it)."""
        if self._thread is not None and self._thread is not threading.current_thread():
            signals.join(self._thread)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every counted instance reached a final state; False on timeout.
        Raises EngineFailedError if the engine thread failed."""
        with self._idle:
            done = signals.wait_for(
                self._idle,
                lambda: (
                    self.error is not None
                    or (self._active == 0 and not any(map(_pending, self._inbox_instances())))
                ),
                timeout,
            )
        self.raise_if_failed()
        return done

    def raise_if_failed(self) -> None:
        """Raise EngineFailedError if the engine thread failed."""
        if self.error is not None:
            raise EngineFailedError(f"the engine thread failed: {self.error!r}") from self.error

    def resize(self, n: int) -> None:
        """Make the pool `n` workers (applied by the engine thread)."""
        self.target_workers = n
        if self.pool is not None:
            self.pool.doorbell.ring()

    # -- admitting instances -------------------------------------------------------------
    def admit(self, inst: Instance, due: int, *, new: bool = True) -> Instance:
        """Queue `inst` to run at `due` (monotonic ns; 0: now).  new: record its
        CREATED and SCHEDULED first (the caller recorded them otherwise); new ones come
        from the manager's scheduling calls, on the user's thread, which may deal them
        itself (_deal_here).  admit_many for a batch of one, without the batch
        (submit()'s short path runs this)."""
        if new:
            # Records first: once the engine has one, it may run at once.
            self.recorder.created(inst, inst.created_ns)
            self.remember(inst)
        self.inbox.append((inst, due) if due else inst)  # (_inbox_entry, inlined)
        if not (new and due == 0 and self._deal_here()) and not self._ring_for_inbox():
            self.cancel_queued(inst)
        return inst

    def admit_many(self, batch: list[tuple[Instance, int]], *, new: bool = True) -> None:
        """admit() for many instances at once: one inbox extend and one doorbell ring
        (what makes submit_many cheaper per job than a loop of submit)."""
        if new:
            # Records first: once the engine has one, it may run at once.
            created = self.recorder.created
            known = self._known
            lend = _core.lend
            for inst, _due in batch:
                created(inst, inst.created_ns)
                lend(known, inst)  # remember(inst), inlined
            if len(known) > self._known_limit:
                self._prune_known()
        self.inbox.extend([_inbox_entry(inst, due) for inst, due in batch])
        if not (new and self._deal_here()) and not self._ring_for_inbox():
            for inst, _due in batch:
                self.cancel_queued(inst)

    def _deal_here(self) -> bool:
        """Deal what the inbox holds from this (the admitting) thread, if the engine
        is idle and its thread between turns: a job on an idle pool then starts one
        thread wake-up sooner (the engine thread's, ~20-40 us here: schedule-to-start
        p50 ~75 -> ~40 us).  True when it is all dealt and the engine thread has
        nothing to do for it; False: ring the doorbell as usual.

        Only for an idle engine (nothing queued or running, no timer in the core, so
        what this thread deals is only what was just admitted: never a recurrence's
        tick, whose firing stays on the engine thread): under load its thread is
        awake anyway and deals in batches, far cheaper per job than here (dealing
        from here under load cost a submit loop 15%).  Never while anyone holds the
        engine's lock (a callback run under it that schedules: _dispatch takes it),
        nor on the engine thread (it holds the turn)."""
        turn = self._turn
        if self._active or len(self.core) or self.state != "running" or self.lock.locked():
            return False
        if not turn.acquire(False):
            return False
        try:
            self._dispatch()
            # (_finished: one could not be written to a ring; the engine thread frees
            # its handle and settles its Future)
            return not (self.inbox or len(self.core) or self._preload or self._finished)
        except Exception:  # left for the engine thread, whose turn meets it again
            log.exception("jobengine: dealing a new instance from the admitting thread")
            return False
        finally:
            turn.release()

    def make_way(self) -> None:
        """Let the engine thread have the GIL now, from a thread that has just admitted
        work while a worker waits for some (its task ring empty, it sleeps): wait,
        without the GIL, until the engine thread begins a turn (which deals), at most
        MAKE_WAY_MAX_S, and no more than once a turn.

        Why: a thread that schedules in a loop holds the GIL, and CPython hands it to
        the waiting engine thread only after a switch interval (5 ms by default), the
        engine's nap first if it is in one.  For CPU-bound jobs (the dispatcher's nap
        regime; jobengine never calls this otherwise) the workers slept through 19-65%
        of such a loop: a worker's whole queue (its credits) is a few ms of work.  Making way
        when one runs dry costs the scheduling thread the engine's turn, which it would
        have waited for at its next switch anyway.  Skipped on the engine thread, while
        anyone holds the engine's lock (its turn needs it), and when the engine is not
        running.  Never raises a signal handler's exception (pause_without_gil): the
        caller has admitted its instance and must return it."""
        begun = self._turns_begun
        if (begun == self._way_made or self.state != "running"
                or self._thread is threading.current_thread() or self.lock.locked()):  # fmt: skip
            return
        self._way_made = begun
        # (by the clock: a 50 us pause takes ~120 here, the timer slack on top)
        deadline = time.monotonic() + MAKE_WAY_MAX_S
        while self._turns_begun == begun and time.monotonic() < deadline:
            _core.pause_without_gil(MAKE_WAY_STEP_S)

    def _inbox_instances(self) -> list[Instance]:
        """The instances in the inbox now, oldest first."""
        return [e[0] if type(e) is tuple else e for e in list(self.inbox)]

    def _ring_for_inbox(self) -> bool:
        """Wake the engine thread for what was just put in the inbox.  False when the
        engine has stopped (the caller lost a race with stop(): nothing will run what
        it admitted; it cancels it)."""
        pool = self.pool
        if pool is not None:
            pool.doorbell.ring()
            if self.dispatcher.nap_ns and _core.any_consumer_parked(pool.task_rings):
                self.make_way()
        return self.state != "stopped"

    def remember(self, inst: Instance) -> None:
        """Let lookups find `inst` by uuid while anyone holds it (the entry does not
        keep it alive: see _known)."""
        known = self._known
        _core.lend(known, inst)
        if len(known) > self._known_limit:
            self._prune_known()

    def _prune_known(self) -> None:
        """Drop the weak references that died (a borrowed entry leaves the table with
        its Instance): compiled, each time the table has doubled since the last walk."""
        known = self._known
        _core.prune_known(known)
        self._known_limit = max(4096, 2 * len(known))

    def lookup(self, uuid: str) -> Instance | None:
        """The Instance of `uuid` if this manager made it and the engine or someone
        else still holds it."""
        return _core.known_get(self._known, uuid)

    def new_handle(self, unit: Instance | Run) -> int:
        """Give `unit` a handle in the table (lock held)."""
        free = self._free_handles
        if free:
            h = free.pop()
            self._by_handle[h] = unit
        else:
            h = len(self._by_handle)
            self._by_handle.append(unit)
        unit.handle = h
        return h

    def finish(self, unit: Instance | Run) -> None:
        """`unit` reached a final state: its handle is freed at the end of this turn."""
        self._finished.append(unit)

    def _take_inbox(self) -> int:
        """Move newly scheduled instances into the core (lock held)."""
        inbox = self.inbox
        n = 0
        core = self.core
        by_handle = self._by_handle
        free = self._free_handles
        # What is due now ranks by now: timers that came due before it are moved into
        # the ready heap first (so they rank ahead, and cheaply), and an instance
        # scheduled "now" is due at this instant; one scheduled for a past time keeps
        # it and ranks ahead of what is due later (go-job's order at equal priority).
        now = self.clock.monotonic_ns()
        core.pop_ready(now, 0)  # (moves what is due; pops nothing)
        while inbox:
            inst = inbox.popleft()
            if type(inst) is tuple:  # (_inbox_entry)
                inst, due = inst
            else:
                due = 0
            if inst.state is _CANCELED or inst.withdrawn:  # canceled / given back meanwhile
                continue
            if free:  # new_handle, inlined: this loop runs once per scheduled instance
                h = free.pop()
                by_handle[h] = inst
            else:
                h = len(by_handle)
                by_handle.append(inst)
            inst.handle = h
            try:
                core.add(h, due or now, inst.priority)
            except Exception as e:  # a due time or priority out of the core's range
                by_handle[h] = None
                free.append(h)
                inst.handle = -1
                self._fail_unit(inst, e, "it cannot be queued", locked=True)
                continue
            n += inst.counted  # a recurrence never ends by itself: wait() skips it
            if due:  # runs later: its executor can travel to the workers now
                self._preload.add(inst.job)
        self._active += n
        return n

    def _release(self, unit: Instance | Run) -> None:
        """Free unit's handle, if it holds one, and let go of it (lock held)."""
        self._release_all([unit])

    def _release_all(self, units: list[Instance | Run]) -> None:
        """_release for each of `units` (lock held): the handles freed in one compiled
        call (_core.release_units)."""
        counted, transient = _core.release_units(units, self._by_handle, self._free_handles)
        self._active -= counted
        for job in transient:
            self.job_settled(job)
        if self._active == 0 and not self.inbox:
            self._idle.notify_all()

    def job_settled(self, job: Any) -> None:
        """An instance of a transient job (submit()'s of a lambda, partial, bound
        method...) settled: when it was the last, the registry drops the job, which
        lets go of the callable, and the workers drop its executor."""
        kind_id = self.registry.settled(job)
        if kind_id is not None:
            self._forget.append(kind_id)

    def fail_unadmitted(self, inst: Instance, exc: BaseException, cause: str) -> Instance:
        """inst could not be queued (its arguments cannot be pickled): record it
        CREATED, SCHEDULED, TERMINATED with the cause, and fail its Future."""
        now = self.clock.time_ns()
        self.recorder.created(inst, inst.created_ns)
        self.remember(inst)
        inst.completed_ns = now
        self.recorder.log(inst, LogLevel.ERROR, now, cause)
        self.recorder.outcome(inst, ("e", type(exc).__name__, str(exc), ""))
        self.recorder.transition(inst, _TERMINATED, now, cause)
        if inst.job.transient:
            self.job_settled(inst.job)
        self.recorder.flush()
        inst.set_exception(exc)
        return inst

    def _fail_unit(
        self, unit: Instance | Run, exc: BaseException, what: str, *, locked: bool = False
    ) -> None:
        """Handling this one unit went wrong (not its job's own failure: a callable of
        its Job raised, a value fell out of range, a payload could not be written...):
        it ends TERMINATED with a JobEngineError naming what failed, and the engine
        goes on.  locked: the caller holds the lock (never so for a Run)."""
        if isinstance(exc, JobEngineError):
            err: BaseException = exc
        else:
            err = JobHandlingError(f"job {unit.kind!r}: {what}: {type(exc).__name__}: {exc}")
            err.__cause__ = exc
        cause = str(err)
        log.error("jobengine: %s", cause, exc_info=exc)
        now = self.clock.time_ns()
        rec = self.recorder
        rec.log(unit, LogLevel.ERROR, now, cause)
        if unit.recurrence is not None:  # a recurrence's own timer: the recurrence ends
            if locked:
                self.ticks.end(unit, cause, suspend=False, error=err)
            else:
                with self.lock:
                    self.ticks.end(unit, cause, suspend=False, error=err)
            return
        if unit.state not in (_SCHEDULED, _PROCESSING):
            return  # it already ended
        if unit.handle >= 0:
            if locked:
                self.core.cancel(unit.handle)
            else:
                with self.lock:
                    self.core.cancel(unit.handle)
        elif unit.job.transient:
            self.job_settled(unit.job)
        unit.completed_ns = now
        rec.outcome(unit, ("e", type(err).__name__, cause, ""))
        rec.transition(unit, _TERMINATED, now, cause)
        if unit.parent is not None:
            rec.defer(unit.parent.settle_run, None, err)
            self.ticks.run_ended(unit)
            return
        self._finished.append(unit)
        rec.defer(unit.set_exception, err)

    # -- cancel --------------------------------------------------------------------------
    def cancel_queued(self, inst: Instance, *, notify: bool = True) -> bool:
        """Cancel an instance no worker has taken; True if it is now CANCELED.
        notify=False: the caller cancels many and wakes wait() once at the end (the
        idle check scans the inbox, which would make canceling n of them O(n^2))."""
        rec = inst.recurrence
        with self.lock:
            if inst.state is not _SCHEDULED or (rec is not None and rec.ending):
                return inst.state is _CANCELED
            if (rec is not None and rec.runs) or self.ticks.is_standby(inst):
                return False  # a run is in flight, or another manager runs it
            if inst.handle >= 0:
                if not self.core.cancel(inst.handle):
                    return False  # handed to a worker already
            elif inst.worker is not None:
                return False
            elif inst.job.transient:  # still in the inbox: it never got a handle
                self.job_settled(inst.job)
            # (in the inbox, the engine skips it once it is CANCELED)
            self._release(inst)  # frees its handle if it has one, and lets go of it
            now = self.clock.time_ns()
            inst.completed_ns = now
            self.recorder.transition(inst, _CANCELED, now)
            self.notify_canceled(inst)
            if rec is not None:
                self.ticks.canceled_while_queued(inst)
            if notify and self._active == 0 and not any(map(_pending, self._inbox_instances())):
                self._idle.notify_all()
        self.recorder.flush()
        inst.cancel_future()
        return True

    def withdraw(self, inst: Instance) -> bool:
        """Take back an instance no worker has taken, recording nothing (the shared
        queue hands it back to the store at stop); True if it was."""
        with self.lock:
            if inst.state is not _SCHEDULED or inst.worker is not None or inst.attempts:
                return False  # (one waiting for a retry is canceled by the stop)
            if inst.handle >= 0 and not self.core.cancel(inst.handle):
                return False  # handed to a worker already
            self._release(inst)  # frees its handle if it has one, and lets go of it
            inst.withdrawn = True
            if self._active == 0 and not any(map(_pending, self._inbox_instances())):
                self._idle.notify_all()
        return True

    def request_cancel(self, inst: Instance) -> bool:
        """Stop a running instance by killing only its worker (engine thread acts on it);
        False when it is not running and not queued here."""
        if inst.state not in (_SCHEDULED, _PROCESSING) or self.pool is None:
            return False
        inst.cancel_requested = True
        self._kill_requests.append(inst)
        self.pool.doorbell.ring()
        return True

    def _serve_kill_requests(self) -> None:
        """Stop the workers running instances whose cancel was asked."""
        reqs = self._kill_requests
        pool = self.pool
        while reqs:
            inst = reqs.popleft()
            targets: list[Instance | Run] = [inst]
            if inst.recurrence is not None:
                with self.lock:
                    targets = list(inst.recurrence.runs)
                    self.ticks.end(inst, "canceled", suspend=False)
            for t in targets:
                if t.worker is None or t.state is not _PROCESSING:
                    continue  # not started yet: killed when its STARTED event arrives
                w = pool.workers.get(t.worker)
                if w is not None and t.handle in w.inflight:
                    pool.kill(w, "cancel", t.handle | t.attempts << 32)

    def queued_counts(self) -> dict[tuple[str, int], int]:
        """(kind, priority) -> instances waiting here (in the core or the inbox)."""
        counts: dict[tuple[str, int], int] = {}
        with self.lock:
            core = self.core
            waiting = [u for u in self._by_handle if u is not None and u.handle in core]
            waiting += [i for i in self._inbox_instances() if _pending(i)]
        for u in waiting:
            key = (u.job.kind, u.priority)
            counts[key] = counts.get(key, 0) + 1
        return counts

    def live(self) -> list[Instance]:
        """Instances in the engine (queued, running, or in the inbox)."""
        with self.lock:
            live = [i for i in self._by_handle if i is not None and i.parent is None]
            live += self._inbox_instances()
        return live

    def live_matching(self, query: Query) -> list[Instance]:
        return [i for i in self.live() if query.matches(i.uuid_str, i.kind, i.state, i.created_ns)]

    # -- logs from the manager's side ----------------------------------------------------
    def read_records(self, uuid: str, logs: bool) -> list:
        """The state (or log) records of `uuid` in the store, once what was recorded
        so far is there."""
        rec = self.recorder
        rec.sync()
        return rec.store.lookup_logs(uuid) if logs else rec.store.lookup_history(uuid)

    def append_log(self, inst: Instance, level: LogLevel, message: str) -> None:
        self.recorder.log(inst, level, self.clock.time_ns(), message)

    # -- the engine thread ---------------------------------------------------------------
    def _loop(self) -> None:
        pool = self.pool
        rec = self.recorder
        turn = self._turn
        held = False
        try:
            while True:
                turn.acquire()
                held = True
                self._turns_begun += 1
                flags = pool.doorbell.take()
                now = time.monotonic()
                if flags & RING_CONTROL or now >= self._next_control_poll:
                    # The supervisor rings for each message; a dead one cannot, so
                    # look at its socket now and then anyway (EOF: it is gone).
                    self._next_control_poll = now + CONTROL_POLL_S
                    busy = self._handle_control()
                else:
                    busy = False
                busy |= self._drain_events()
                if self._kill_requests:
                    self._serve_kill_requests()
                if self.clock.virtual:
                    self._virtual_timeouts()
                if self.state == "running":
                    self._renew()
                elif self.state == "draining" and self._idle_now():
                    self.begin_stop()
                if self.state == "stopping":
                    if self._stop_step():
                        break  # (the finally below releases the turn)
                else:
                    self._apply_resize()
                busy |= self._dispatch()
                if self._forget:
                    self._forget_kinds()
                if self._preload:
                    with self.lock:  # _take_inbox (under the lock) adds to it
                        jobs, self._preload = self._preload, set()
                    self.dispatcher.preload(jobs)
                busy |= rec.run_deferred()
                with self._turned:
                    self._turns += 1
                    self._turned.notify_all()
                if busy and self.state == "running" and not self._more_to_dispatch():
                    # Whatever arrives from now on (an event, a submit, a writer's ack)
                    # rings the doorbell, and the park below returns at once if it
                    # did: a second turn only to find nothing would cost as much as
                    # the job (it did: ~2 turns per 1 ms job).
                    busy = False
                turn.release()
                held = False
                if not busy:
                    nap = self._nap()
                    if nap:
                        time.sleep(nap)  # not parked: what arrives meanwhile wakes no one
                    pool.doorbell.wait(pool.rings, self._idle_timeout(), self._spin())
        except BaseException as e:  # keep the process alive; report at stop()
            self.error = e
            log.exception("jobengine: the engine thread failed; the manager is stopped")
        finally:
            if held:
                turn.release()
            self._exit()

    def _exit(self) -> None:
        with self.lock:
            self.state = "stopped"
            self._take_inbox()
            orphans = [i for i in self._by_handle if i is not None]
            for inst in orphans:
                self.core.cancel(inst.handle)
                self._release(inst)
        for inst in orphans:  # only after a failure: an orderly stop leaves none
            if inst.parent is None and not inst.done():
                if self.error is not None:
                    err: BaseException = EngineFailedError(
                        f"the engine thread failed before this instance ended: {self.error!r}"
                    )
                    err.__cause__ = self.error
                else:
                    err = ManagerStateError("the manager stopped before this instance ran")
                inst.set_exception(err)
        with self._idle:
            self._idle.notify_all()  # wait() returns (or raises) now
        self.clock.unsubscribe(self._wake)
        try:
            self.recorder.run_deferred()
            self.ticks.release()
            self.recorder.close()  # everything recorded is in the store (or logged lost)
            self.recorder.run_deferred()  # then the futures and handlers waiting for it
        finally:
            self.pool.close()
            self.recorder.detach_doorbell_fd()
            self._close_doorbell()

    def _renew(self) -> None:
        try:
            self.ticks.renew()
        except Exception:  # never the engine: the next period tries again
            log.exception("jobengine: renewing recurrence leases failed")

    def _idle_now(self) -> bool:
        with self.lock:
            return self._active == 0 and not any(map(_pending, self._inbox_instances()))

    def _forget_kinds(self) -> None:
        """Tell the workers to drop the executors of jobs the registry dropped."""
        forget = self._forget
        while forget:
            kind_id = forget.popleft()
            for w in self.pool.workers.values():
                if kind_id in w.kinds and w.channel.tasks.push(T_FORGET, kind_id, 0):
                    w.kinds.discard(kind_id)

    def _dispatch(self) -> bool:
        """Pop what is ready (as many as there are free credits) and deal it out."""
        dispatcher = self.dispatcher
        room = dispatcher.room()
        if not room:
            return False
        ticks = self.ticks
        with self.lock:
            if self.inbox:
                self._take_inbox()
            handles = self.core.pop_ready(self.clock.monotonic_ns(), room)
            if not handles:
                return False
            by_handle = self._by_handle
            units = [by_handle[h] for h in handles]
            late = []
            if not all(u.counted for u in units):  # recurring instances and Runs
                # a tick: dispatch a Run for it; a run that waited too long: skip it
                units = self._fire_ticks(units)
                late = [u for u in units if u.parent is not None and ticks.too_late(u)]
                if late:
                    units = [u for u in units if u not in late]
        for run in late:
            ticks.skip_late_run(run)
        requeue, failed = dispatcher.deal(units)
        if requeue:
            with self.lock:
                for u in requeue:
                    self.core.add(u.handle, 0, u.priority)
        for u, e in failed:
            self._fail_unit(u, e, "it could not be handed to a worker")
        return True

    def _fire_ticks(self, units: list) -> list:
        """Due recurring instances become Runs (or nothing: misfire policy); lock held."""
        out = []
        for u in units:
            if u.recurrence is None:
                out.append(u)
                continue
            try:
                run = self.ticks.fire(u)
            except Exception as e:  # its jitter() raised, its crontab walk failed...
                self._fail_unit(u, e, "its next tick could not be armed", locked=True)
                continue
            if run is not None:
                out.append(run)
        return out

    def _virtual_timeouts(self) -> None:
        """Under a virtual clock the engine, not the supervisor, notices timeouts."""
        now = self.clock.monotonic_ns()
        for w in self.pool.workers.values():
            unit = w.running
            timeout = unit.job.timeout if unit is not None else None
            if timeout and not unit.timeout_sent and now - unit.started_mono >= timeout * 1e9:
                unit.timeout_sent = True
                self.pool.kill(w, "timeout", unit.handle | unit.attempts << 32)

    def _more_to_dispatch(self) -> bool:
        """Whether instances are ready now and a worker has a free credit for one:
        the only work this thread makes for itself that rings no doorbell."""
        return bool(self.core.ready_len) and self.dispatcher.room() > 0

    def _nap(self) -> float:
        """Seconds to sleep before parking: the dispatcher's nap for CPU-bound jobs,
        only while instances wait for a credit (in the core or still in the inbox: a
        lone job's result is never held back) and only while running on the system
        clock."""
        nap = self.dispatcher.nap_ns
        if not nap or self.state != "running" or self.clock.virtual:
            return 0.0
        if not (self.core.ready_len or self.inbox):
            return 0.0
        # Never while a worker waits for work: an instance that came too late for this
        # turn's deal (or whose worker's credit came back too late) would wait the nap.
        return 0.0 if _core.any_consumer_parked(self.pool.task_rings) else nap / 1e9

    def _spin(self) -> float:
        # Spinning pays only when the next event is due within the spin window (tiny
        # jobs in flight); otherwise it burns a core the workers need.
        if self.dispatcher.avg_ns > SPIN_JOBS_NS:
            return 0.0
        return SPIN_S if any(w.inflight for w in self.pool.workers.values()) else 0.0

    def _idle_timeout(self) -> float:
        if self._stop_deadline is not None:
            return max(0.0, min(IDLE_PARK_S, self._stop_deadline - time.monotonic()))
        park = IDLE_PARK_S
        now = time.monotonic()
        if self.state == "running":  # lease renewals are due only while running
            park = min(park, max(0.0, self.stored.next_renew - now))
        if self._respawn_at > now:  # a spawn held back after workers died at start
            park = min(park, self._respawn_at - now)
        park = min(park, max(0.0, self._next_control_poll - now))
        with self.lock:
            nxt = self.core.next_due_ns()
            ready = self.core.ready_len
        if ready or nxt is None or self.clock.virtual:
            # Waiting for a credit, for work, or for a virtual clock to move: an event,
            # a schedule call or clock.advance() rings the doorbell.
            return park
        return min(park, max(0.0, (nxt - self.clock.monotonic_ns()) / 1e9))

    def _apply_resize(self) -> None:
        """Make the pool target_workers strong.  A retiring worker that still holds work
        counts until it exits, so the pool never runs more than target_workers
        processes at once (a recycled worker's replacement starts when it is gone)."""
        if self.broken is not None:
            return  # every new worker would fail its initializer again
        pool = self.pool
        active = [w for w in pool.workers.values() if not w.retiring]
        finishing = sum(1 for w in pool.workers.values() if w.retiring and w.inflight)
        want = self.target_workers
        if len(active) + finishing < want:
            if time.monotonic() < self._respawn_at:
                return  # workers died at start: wait before the next try
            for _ in range(want - len(active) - finishing):
                pool.spawn(pool.free_index())
        elif len(active) > want:
            for w in sorted(active, key=lambda w: -w.index)[: len(active) - want]:
                pool.retire(w)

    def _stop_step(self) -> bool:
        """One step of an orderly stop; True when the pool is gone."""
        pool = self.pool
        with self.lock:
            self._take_inbox()
            live = [i for i in self._by_handle if i is not None]
            queued = [i for i in live if i.counted and i.handle in self.core]
            for inst in live:  # recurrences are suspended, not canceled
                if inst.recurrence is not None and not inst.recurrence.ending:
                    self.ticks.end(inst, "manager stopped", suspend=True)
        for inst in queued:  # stop() cancels what is still queued
            self.cancel_queued(inst)
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

    # -- what the pool reports -----------------------------------------------------------
    def _handle_control(self) -> bool:
        msgs = self.pool.poll()
        for msg in msgs:
            if msg[0] == "died":
                self._worker_died(*msg[1:])
            elif msg[0] == "spawn_failed":
                self._spawn_failed(*msg[1:])
            elif msg[0] == "lost":
                raise ManagerStateError("the supervisor process is gone")
        return bool(msgs)

    def _spawn_failed(self, index: int, error: str) -> None:
        """The supervisor could not fork worker `index` (out of processes or memory)."""
        w = self.pool.workers.get(index)
        if w is None:
            return
        self.pool.remove(w)
        w.channel.close()
        for unit in list(w.inflight.values()):  # handed to it before it existed
            del w.inflight[unit.handle]
            unit.attempts -= 1
            unit.worker = None
            with self.lock:
                self.core.add(unit.handle, 0, unit.priority)
        delay = self._back_off_respawn()
        log.error("jobengine: cannot start worker %d (%s); next try in %.2f s", index, error,
                  delay)  # fmt: skip

    def _back_off_respawn(self) -> float:
        """Delay the next spawn: twice the last delay (at least 50 ms, at most
        MAX_RESPAWN_DELAY_S), so workers that die at start do not loop."""
        self._respawn_delay = min(MAX_RESPAWN_DELAY_S, max(0.05, 2 * self._respawn_delay))
        self._respawn_at = time.monotonic() + self._respawn_delay
        return self._respawn_delay

    def _worker_died(
        self,
        index: int,
        pid: int,
        exitcode: int | None,
        sig: int | None,
        reason: str | None = None,
        target: int = 0,
    ) -> None:
        pool = self.pool
        w = pool.workers.get(index)
        if w is None or (w.pid is not None and w.pid != pid):
            return
        self._drain_worker(w)  # events it published before dying still count
        pool.remove(w)
        how = f"killed by signal {sig}" if sig is not None else f"exit code {exitcode}"
        death = f"worker {index} (pid {pid}) died: {how}"
        if not w.reported and reason is None and not w.retiring:
            delay = self._back_off_respawn()
            log.warning("jobengine: %s before it reported anything; next spawn in %.2f s",
                        death, delay)  # fmt: skip
        now = self.clock.time_ns()
        rec = self.recorder
        running = w.running
        for unit in list(w.inflight.values()):
            del w.inflight[unit.handle]
            if unit.state is _SCHEDULED:  # handed over but never started
                unit.attempts -= 1
                unit.worker = None
                unit.lost += 1
                if unit.cancel_requested:
                    self._canceled(unit, now, None)
                elif self.broken is not None:
                    self._fail_unrun(unit, now)
                elif unit.lost >= MAX_UNSTARTED_LOSSES:
                    # Its executor (or its arguments) kill a worker before it can even
                    # start: it fails rather than kill workers forever.
                    cause = f"{death}; workers died {unit.lost} times before starting it"
                    rec.log(unit, LogLevel.ERROR, now, cause)
                    err = WorkerCrashed(cause, exitcode, sig)
                    unit.completed_ns = now
                    rec.outcome(unit, ("e", "WorkerCrashed", cause, ""))
                    rec.transition(unit, _TERMINATED, now, cause)
                    if unit.parent is not None:
                        rec.defer(unit.parent.settle_run, None, err)
                        self.ticks.run_ended(unit)
                    else:
                        self._finished.append(unit)
                        rec.defer(unit.set_exception, err)
                else:  # back to the queue, same priority
                    with self.lock:
                        self.core.add(unit.handle, 0, unit.priority)
                continue
            # The kill's target: the attempt the supervisor named (it reads timeouts from
            # the worker's status) or, for memory, whatever the worker was running.
            aimed = (
                (target == (unit.handle | unit.attempts << 32))
                if target
                else (reason == "memory" and unit is running)
            )
            if aimed and reason == "timeout":
                cause = f"timed out after {unit.job.timeout:g} s; {death}"
                rec.log(unit, LogLevel.ERROR, now, cause)
                self._attempt_failed(
                    unit, JobTimeout(f"job {unit.kind!r}: {cause}"), _TIMED_OUT, now, cause
                )
            elif aimed and reason == "memory":
                cause = f"worker over max_memory_per_worker ({self.max_memory} bytes); {death}"
                rec.log(unit, LogLevel.ERROR, now, cause)
                err = MemoryLimitExceeded(f"job {unit.kind!r}: {cause}")
                self._attempt_failed(unit, err, _TERMINATED, now, cause)
            elif unit.cancel_requested or reason == "stop":
                cause = "canceled while running" if unit.cancel_requested else "manager stopped"
                rec.log(unit, LogLevel.WARN, now, f"{cause}; {death}")
                self._canceled(unit, now, cause)
            else:
                cause = death + (f" ({reason})" if reason else "")
                rec.log(unit, LogLevel.ERROR, now, cause)
                err = WorkerCrashed(cause, exitcode, sig)
                err.__cause__ = RemoteTraceback(
                    f'\n"""\nworker {index} (pid {pid}) terminated abruptly with {how}\n"""'
                )
                self._attempt_failed(unit, err, _TERMINATED, now, cause)
        w.running = None

    def _drain_events(self) -> bool:
        busy = False
        for w in list(self.pool.workers.values()):
            busy |= self._drain_worker(w)
        if self._finished:
            with self.lock:
                self._release_all(self._finished)
            self._finished.clear()
        return busy

    def _drain_worker(self, w: WorkerSlot) -> bool:
        records = w.channel.events.read_many()
        if not records:
            return False
        if not w.reported:
            w.reported = True  # it came up and works
            self._respawn_delay = 0.0
        if self._events is not None:
            self._events.drain(w, records, self._one_event, self._event_failed)
        else:
            for record in records:
                self._one_event(w, record)
        return True

    def _one_event(self, w: WorkerSlot, record: tuple) -> None:
        """One record a worker published (the reference path for every kind of event;
        EventDrain handles the common two itself)."""
        tag, a, b, payload = record
        if self.clock.virtual:  # every record time on the one (virtual) clock
            b = self.clock.time_ns()
        if tag & TAG_MASK == E_INIT_ERR:
            self._initializer_failed(w, read_payload(tag, payload))
            return
        if tag & TAG_MASK == E_PYLOG:  # a `logging` record of the worker's
            try:
                relay(read_payload(tag, payload))
            except Exception:
                log.exception("jobengine: a worker's log record could not be relayed")
            return
        handle = a & 0xFFFFFFFF
        inflight = w.inflight
        unit = inflight.get(handle)
        if unit is None or unit.attempts != a >> 32:
            return  # a stale event (the attempt was already settled)
        try:
            self._handle_event(w, unit, tag, a, b, payload)
        except Exception as e:  # never the engine: only this unit fails
            self._event_failed(w, unit, e)

    def _event_failed(self, w: WorkerSlot, unit: Instance | Run, exc: Exception) -> None:
        """Handling a worker's report about `unit` raised: only that unit fails."""
        w.inflight.pop(unit.handle, None)
        if w.running is unit:
            w.running = None
        self._fail_unit(unit, exc, "its worker's report could not be handled")

    def _handle_event(self, w: WorkerSlot, unit: Instance | Run, tag: int, a: int, b: int,
                      payload: bytes) -> None:  # fmt: skip
        """One event a worker published about one of its attempts."""
        rec = self.recorder
        inflight = w.inflight
        handle = a & 0xFFFFFFFF
        t = tag & TAG_MASK
        if t == E_STARTED:
            unit.processed_ns = b
            unit.started_mono = self.clock.monotonic_ns()
            w.running = unit
            rec.transition(unit, _PROCESSING, b)
            parent = unit.parent
            if parent is not None:
                parent.state = _PROCESSING
                parent.processed_ns = b
                parent.attempts = unit.attempts
            if unit.cancel_requested:
                self.pool.kill(w, "cancel", a)
        elif t == E_OK:
            del inflight[handle]
            w.running = None
            w.jobs += 1
            self.dispatcher.observe(b - unit.processed_ns)
            raw = read_payload(tag, payload)
            try:
                result = pickle.loads(raw)
            except BaseException as e:  # SystemExit in a __reduce__ too: the job's
                err = ResultDecodeError(
                    f"the result of job {unit.kind!r} cannot be unpickled in the "
                    f"manager: {type(e).__name__}: {e}"
                )
                self._attempt_failed(unit, err, _TERMINATED, b, str(err))
                return
            self._succeeded(unit, result, b, raw)
        elif t == E_ERR:
            del inflight[handle]
            w.running = None
            w.jobs += 1
            self.dispatcher.observe(b - unit.processed_ns)
            exc, tb = decode_error(read_payload(tag, payload))
            if isinstance(exc, JobTimeout):  # interrupted in the job: it timed out
                cause = f"timed out after {unit.job.timeout or 0:g} s"
                rec.log(unit, LogLevel.ERROR, b, f"{cause}\n{tb}")
                self._attempt_failed(unit, exc, _TIMED_OUT, b, cause, tb)
            elif isinstance(exc, JobCanceled) and (
                unit.cancel_requested or self.state == "stopping"
            ):  # interrupted in the job: canceled, or the stop's grace ran out
                cause = "canceled while running" if unit.cancel_requested else "manager stopped"
                rec.log(unit, LogLevel.WARN, b, f"{cause}; the job was interrupted")
                self._canceled(unit, b, cause)
            else:
                cause = f"{type(exc).__name__}: {exc}"
                rec.log(unit, LogLevel.ERROR, b, tb or cause)
                self._attempt_failed(unit, exc, _TERMINATED, b, cause, tb)
        elif t == E_SCHEDULE:  # its executor scheduled a follow-up job (follow_up.py)
            body = read_payload(tag, payload)
            if self.follow_ups is not None:
                self.follow_ups.put(unit.parent or unit, body)
        elif t == E_LOG:
            body = read_payload(tag, payload)
            rec.log(unit, LogLevel(body[0]), b, body[1:].decode(), a >> 32)

    def _initializer_failed(self, w: WorkerSlot, payload: bytes) -> None:
        """Manager(initializer=...) raised in worker w: the engine is broken, as a
        ProcessPoolExecutor is.  Nothing queued can run: it fails; recurrences are
        suspended (another manager on the store may run them)."""
        exc, tb = decode_error(payload)
        if self.broken is not None:
            return
        message = (
            f"the pool is broken: the initializer raised in worker {w.index}: "
            f"{type(exc).__name__}: {exc}"
        )
        log.error("jobengine: %s\n%s", message, tb)
        self.broken = InitializerError(message)
        self.broken.__cause__ = exc.__cause__
        now = self.clock.time_ns()
        with self.lock:
            self._take_inbox()
            queued = [u for u in self._by_handle if u is not None and u.handle in self.core]
            for unit in queued:
                self.core.cancel(unit.handle)
                if unit.recurrence is not None and not unit.recurrence.ending:
                    self.ticks.end(unit, "the pool is broken", suspend=True)
        for unit in queued:
            if unit.recurrence is None:
                self._fail_unrun(unit, now)

    def _fail_unrun(self, unit: Instance | Run, now: int) -> None:
        """A queued unit that can never run (the pool is broken) ends TERMINATED."""
        broken = self.broken
        err = type(broken)(*broken.args)  # one exception per future, as the stdlib
        err.__cause__ = broken.__cause__
        cause = str(broken)
        unit.completed_ns = now
        self.recorder.log(unit, LogLevel.ERROR, now, cause)
        self.recorder.outcome(unit, ("e", type(broken).__name__, cause, ""))
        self.recorder.transition(unit, _TERMINATED, now, cause)
        if unit.parent is not None:
            self.recorder.defer(unit.parent.settle_run, None, err)
            self.ticks.run_ended(unit)
            return
        self._finished.append(unit)
        self.recorder.defer(unit.set_exception, err)

    # -- how an attempt ends -------------------------------------------------------------
    def _succeeded(self, unit: Instance | Run, result: Any, t: int, raw: bytes) -> None:
        rec = self.recorder
        unit.completed_ns = t
        rec.outcome(unit, ("r", raw))  # the store keeps it as the worker pickled it
        rec.transition(unit, _COMPLETED, t)
        parent = unit.parent
        if parent is not None:
            rec.defer(parent.settle_run, result, None)
            self.ticks.run_ended(unit)
        else:
            self._finished.append(unit)
            rec.defer(unit.set_result, result)
        handler = unit.job.response_handler
        if handler is not None:
            rec.defer(rec.call_handler, handler, parent or unit, result)

    def _attempt_failed(
        self,
        unit: Instance | Run,
        exc: BaseException,
        state: State,
        t: int,
        cause: str,
        tb: str = "",
    ) -> None:
        rec = self.recorder
        job = unit.job
        if unit.cancel_requested and unit.parent is None:
            # A cancel was asked while this attempt ran and it failed before the kill
            # landed: the cancel wins (a retry, RETRY_FOREVER's above all, would undo it).
            self._canceled(unit, t, "canceled")
            return
        rec.transition(unit, state, t, cause)
        if job.error_handler is not None:
            # At once, not deferred: the handler must see the attempt that failed.
            self._run_error_handler(unit, exc)
        if unit.attempts <= job.max_retries or job.max_retries < 0:  # (< 0: RETRY_FOREVER)
            try:
                delay = job.backoff_seconds(unit.attempts)
            except Exception as e:  # the backoff callable raised or returned nonsense
                err = JobHandlingError(
                    f"job {unit.kind!r}: not retried: backoff({unit.attempts}) raised "
                    f"{type(e).__name__}: {e}"
                )
                err.__cause__ = exc
                self.recorder.log(unit, LogLevel.ERROR, t, str(err))
                exc, delay = err, None
            if delay is not None:
                self._retry(unit, delay)
                return
        unit.completed_ns = t
        err = unit.replaced_exc or exc
        rec.outcome(unit, ("e", type(err).__name__, str(err), tb or cause))
        if unit.parent is not None:
            rec.defer(unit.parent.settle_run, None, err)
            self.ticks.run_ended(unit)
            return
        self._finished.append(unit)
        rec.defer(unit.set_exception, err)

    def _retry(self, unit: Instance | Run, delay: float) -> None:
        """A failed attempt with retries left goes back to the queue after `delay` s."""
        unit.worker = None
        self.recorder.transition(unit, _SCHEDULED, self.clock.time_ns())
        due = self.clock.monotonic_ns() + int(delay * 1e9) if delay else 0
        with self.lock:
            self.core.add(unit.handle, due, unit.priority)
            if unit.parent is not None:
                unit.parent.sync_state()

    def _run_error_handler(self, unit: Instance | Run, exc: BaseException) -> None:
        try:
            with user_code():
                replaced = unit.job.error_handler(unit.parent or unit, exc)
        except Exception:
            log.exception("jobengine: the error_handler of job %r raised", unit.kind)
            return
        if isinstance(replaced, BaseException):
            unit.replaced_exc = replaced

    def _canceled(self, unit: Instance | Run, now: int, cause: str | None) -> None:
        """A handed-out attempt was stopped on purpose: CANCELED, never retried."""
        unit.completed_ns = now
        self.recorder.transition(unit, _CANCELED, now, cause)
        self.notify_canceled(unit, cause)
        if unit.parent is not None:
            self.ticks.run_ended(unit)
            return
        self._finished.append(unit)
        self.recorder.defer(unit.cancel_future)

    def notify_canceled(self, unit: Instance | Run, cause: str | None = None) -> None:
        """go-job calls the error handler on a cancel too: once, with a CancelledError
        (its return value replaces nothing: the Future is cancelled)."""
        handler = unit.job.error_handler
        if handler is not None:
            err = CancelledError(cause or "canceled")
            self.recorder.defer(self.recorder.call_handler, handler, unit.parent or unit, err)


__all__ = ["Engine", "decode_error"]
