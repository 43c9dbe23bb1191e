"""Manager: the public face of jobengine (go-job's Manager, and a concurrent.futures
Executor).

Owns: argument checks, job registration (through the registry), making Instances and
pickling their arguments once, lookups, the lifecycle calls and the Executor methods.
It holds an Engine (engine.py) and forwards to it: where an instance's live state is
kept, which thread changes it and how it reaches a worker is the engine's business.
Never does: touch the compiled core, the pool, the handle table or the store's
batches itself.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid as _uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from ._core import ShortPath
from .cleaners import DEFAULT_CRONTAB, schedule_cleaner
from .clock import SYSTEM, Clock
from .engine import Engine
from .errors import (
    InvalidArgumentError,
    InvalidArgumentTypeError,
    ManagerStateError,
    SerializationError,
)
from .ids import uuid7_str
from .instance import Instance
from .job import NO_ARGUMENTS, Job, check_priority, check_schedule_at, check_seconds, task_bytes
from .metrics import exposition
from .payloads import PayloadError, dumps_value, secret_from
from .pool.follow_up import FollowUps
from .pool.inherit import dumps_for_workers
from .pool.pool import WorkerEvent, WorkerInfo
from .query import Query
from .queue import SharedQueue
from .recorder import FLUSH_EVERY
from .records import InstanceRecord, LogLevel, LogRecord, StateRecord, datetime_to_ns
from .registry import JobRegistry, importable
from .signals import SignalStop, start_thread
from .state import State
from .stores.base import Store
from .stores.memory import MemoryStore

if TYPE_CHECKING:
    from .control_api import ControlServer

P = ParamSpec("P")
T = TypeVar("T")

# More workers than this is refused unless Manager(worker_limit=...) says otherwise:
# past a few processes per core they only add memory and contention, and a typo such
# as resize_workers(10**6) would fork until the machine gave out.
DEFAULT_WORKER_LIMIT = max(32, 16 * (os.cpu_count() or 1))

# Managers whose engine may still hold work, for the interpreter-exit hook below.
_live_engines: weakref.WeakSet[Engine] = weakref.WeakSet()
_exiting = False  # set once the interpreter has begun to exit


def _at_exit() -> None:
    """Interpreter exit, before non-daemon threads are joined (where the stdlib's
    executors hook in): refuse new work, and let every manager that was not shut down
    finish what it holds, as ProcessPoolExecutor does.  A manager never started
    cancels what was scheduled on it (nothing would ever run it)."""
    global _exiting
    _exiting = True
    for stopper in list(_signal_stops):  # a signal's stop first: cancel, hand back
        stopper.join()
    for engine in list(_live_engines):
        if engine.state == "new":
            engine.stop_unstarted()
            continue
        queue = engine.shared_queue
        if queue is not None:
            if engine.target_workers and engine.running:
                while not queue.wait_produced(0.5):  # what it queued runs here, as in a
                    if not engine.running or engine.broken is not None:  # pool
                        break
            queue.stop()  # (a producer's instances wait in the store for other managers)
        engine.drain()
        while True:
            try:
                engine.join()
                break
            except BaseException:  # SIGINT / SIGTERM while we wait: stop within the
                engine.begin_stop(engine.kill_grace)  # grace, and still wait for it


def _register_exit_hook() -> None:
    try:
        # The hook concurrent.futures uses: it runs before non-daemon threads are
        # joined and before atexit callbacks, so an atexit callback sees a shut-down
        # manager, exactly as it would see a shut-down ProcessPoolExecutor.
        threading._register_atexit(_at_exit)  # noqa: SLF001 - the stdlib's executor hook
    except AttributeError:  # pragma: no cover - other interpreters
        import atexit

        atexit.register(_at_exit)


_register_exit_hook()


def _forget_engines_in_child() -> None:
    """os.fork() child: the managers of the parent are not this process's (their
    threads did not come along, their workers are the parent's).  Its exit must not
    drain or wait for the copies, nor a stop a signal began in the parent; a copy
    schedules nothing (it would reach the parent's workers, and its Future would
    never settle here): scheduling on it raises, and stop() returns at once."""
    for engine in list(_live_engines):
        engine.forked_away()
    _live_engines.clear()
    _signal_stops.clear()


os.register_at_fork(after_in_child=_forget_engines_in_child)


def _abandon(engine: Engine) -> None:
    """A Manager was garbage-collected without shutdown: its engine runs what it holds,
    then stops its supervisor and workers (nobody waits for it)."""
    if engine.state == "stopped":  # (an engine a restarted manager left behind)
        return
    if engine.state == "new":
        engine.stop_unstarted()
    else:
        if engine.shared_queue is not None:
            engine.shared_queue.stop()  # what it claimed and did not start goes back
        engine.drain()


def _stop_on_signal(engine: Engine) -> None:
    """SIGINT / SIGTERM: stop in order, on a thread of its own.  The handler runs on the
    main thread between two bytecodes, maybe while that thread holds a lock the stop
    needs (an Instance's, the engine's): taking locks there could hang the program."""
    if engine.running:
        stopper = threading.Thread(target=_stop_in_order, args=(engine,),
                                   name="jobengine-signal-stop", daemon=True)  # fmt: skip
        _signal_stops.append(stopper)
        start_thread(stopper)


def _stop_in_order(engine: Engine) -> None:
    if engine.shared_queue is not None:  # unstarted instances go back to the store
        engine.shared_queue.stop()
    engine.begin_stop(engine.kill_grace)


_signal_stops: list[threading.Thread] = []  # stops a signal began (the exit hook waits)


class _GivenUid(threading.local):
    """The uuid a worker gave the follow-up job this thread is scheduling, if any.
    (A class default: getattr(local, name, None) on a missing name costs ~1 us, the
    AttributeError it makes and drops, on every submit.)"""

    value: int | None = None


def _plain(job: Job) -> bool:
    """Whether submit() may take its short path for `job`: a job of its own (not
    transient: nothing to settle should a step raise) with no schedule options."""
    return (
        not job.transient
        and job.crontab is None
        and job.schedule_at is None
        and job.schedule_after is None
        and job.jitter is None
    )


def _pickling_error(job: Job, e: Exception) -> SerializationError:
    """What pickling `job`'s arguments (or its executor) raised, as SerializationError."""
    if isinstance(e, SerializationError):
        return e
    return SerializationError(
        f"arguments of job {job.kind!r} cannot be pickled: {type(e).__name__}: {e}"
    )


class Manager(Executor):
    """The job manager (go-job's Manager), also a concurrent.futures.Executor.

    Manager(num_workers=os.cpu_count(), *, store=MemoryStore(), ...).  Schedule before
    or after start(); instances wait in the manager until it runs (submit() and map()
    start it).  Use it as a context manager to start on enter and stop_with_wait() on
    exit.  Options, all keyword-only but the worker count:

    - num_workers / max_workers: the pool's size (at most worker_limit).
    - store: where instances, history, logs and recurrences are kept.
    - initializer, initargs: run once in every worker before its first job; if it
      raises, the manager is broken (InitializerError), as ProcessPoolExecutor is.
    - max_jobs_per_worker / max_tasks_per_child: retire a worker after that many
      attempts (its replacement starts when it has finished them).
    - max_memory_per_worker: bytes of RSS; a worker over it is killed, failing only
      the attempt it was running.
    - kill_grace: seconds between the interrupt raised inside a job (a timeout, a
      cancel, the end of a stop's grace) and the hard kill of its worker.
    - handle_signals: install SIGINT/SIGTERM handlers that stop in order; None (the
      default) does so only in the main thread of a non-interactive program.
    - clock: a jobengine.clock.Clock (VirtualClock for tests).
    - lease: seconds a manager's claim on its recurring schedules holds without
      renewal; `node` names this manager in the store.
    - worker_limit: the most workers num_workers or resize_workers() may ask for
      (default DEFAULT_WORKER_LIMIT: 16 per core, at least 32).
    - mp_context: accepted for ProcessPoolExecutor's signature; ignored (workers are
      forked by the manager's own single-threaded supervisor).
    - secret: the key that signs pickled payloads the store keeps (default: the
      JOBENGINE_SECRET environment variable); Redis and PostgreSQL keep a value that is
      not JSON-native only signed (payloads.py).
    - queue: on a durable store (SQLite, Redis, PostgreSQL) one-off instances live in
      the store's shared queue (queue.py: they survive this manager, and every manager
      on the store may run them); schedule_*, submit and map return once they are
      stored.  queue=False keeps them in this manager's memory, as on MemoryStore.  A
      manager with num_workers=0 (on a shared queue only) queues and never runs.
    - control: "host:port" (port 0: any free one; see control_url) serves the control
      API over HTTP/JSON while the manager runs (control_api.py); beyond loopback it
      needs control_token (or JOBENGINE_CONTROL_TOKEN), which every request must send
      as `Authorization: Bearer <token>`.

    Recurring (crontab) instances are kept in the store as well: stop() suspends them
    and a manager started on the same store later resumes them (misfire policy for the
    ticks missed meanwhile)."""

    def __init__(
        self,
        num_workers: int | None = None,
        *,
        max_workers: int | None = None,
        store: Store | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        max_tasks_per_child: int | None = None,
        mp_context: Any = None,
        max_jobs_per_worker: int | None = None,
        max_memory_per_worker: int | None = None,
        kill_grace: float = 1.0,
        handle_signals: bool | None = None,
        clock: Clock | None = None,
        lease: float = 30.0,
        worker_limit: int | None = None,
        secret: str | bytes | None = None,
        queue: bool | None = None,
        control: str | None = None,
        control_token: str | None = None,
    ):
        # mp_context is accepted for ProcessPoolExecutor's signature and ignored:
        # workers are always forked by the manager's supervisor, a fresh interpreter
        # with a single thread (as safe as "spawn", as fast to start as "fork").
        del mp_context
        name = "num_workers"
        if max_workers is not None:
            if num_workers is not None:
                raise InvalidArgumentTypeError("give num_workers or max_workers, not both")
            num_workers, name = max_workers, "max_workers"
        if num_workers is None:
            num_workers = os.cpu_count() or 1
        if not isinstance(num_workers, int) or isinstance(num_workers, bool):
            raise InvalidArgumentTypeError(f"{name} must be an int, got {num_workers!r}")
        if store is not None and not isinstance(store, Store):
            raise InvalidArgumentTypeError(f"store must be a jobengine Store, got {store!r}")
        self._control: ControlServer | None = None
        if control is not None:
            # imported here: the HTTP server's modules cost programs that never serve
            from .control_api import ControlServer, is_loopback, parse_address, token_from

            host, _port = parse_address(control)
            token = token_from(control_token)
            if token is None and not is_loopback(host):
                raise InvalidArgumentError(
                    f"control={control!r} listens beyond loopback: give control_token= (or "
                    "set JOBENGINE_CONTROL_TOKEN); requests will need it"
                )
            self._control = ControlServer(self, control, token)
        if queue not in (None, True, False):
            raise InvalidArgumentTypeError(f"queue must be True, False or None, got {queue!r}")
        shared = store is not None and store.supports_queue and not isinstance(store, MemoryStore)
        if queue and not shared:
            raise InvalidArgumentError(
                "queue=True needs a durable store with a shared queue (SQLite, Redis, "
                f"PostgreSQL), got {type(store or MemoryStore()).__name__}"
            )
        shared = shared and queue is not False
        if num_workers < (0 if shared else 1):
            raise InvalidArgumentError(
                f"{name} must be greater than 0, got {num_workers}"
                + (
                    " (0, a producer-only manager, needs a store with a shared queue)"
                    if num_workers == 0
                    else ""
                )
            )
        if worker_limit is None:
            worker_limit = DEFAULT_WORKER_LIMIT
        elif not isinstance(worker_limit, int) or isinstance(worker_limit, bool):
            raise InvalidArgumentTypeError(f"worker_limit must be an int, got {worker_limit!r}")
        if num_workers > worker_limit:
            raise InvalidArgumentError(
                f"{name} must be at most {worker_limit} (the worker limit; "
                f"Manager(worker_limit=...) raises it), got {num_workers}"
            )
        self._worker_limit = worker_limit
        if max_tasks_per_child is not None:
            if max_jobs_per_worker is not None:
                raise InvalidArgumentTypeError(
                    "give max_jobs_per_worker or max_tasks_per_child, not both"
                )
            max_jobs_per_worker = max_tasks_per_child
            jobs_name = "max_tasks_per_child"
        else:
            jobs_name = "max_jobs_per_worker"
        for what, v in (
            (jobs_name, max_jobs_per_worker),
            ("max_memory_per_worker", max_memory_per_worker),
        ):
            if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
                raise InvalidArgumentTypeError(f"{what} must be an int or None, got {v!r}")
            if v is not None and v < 1:
                raise InvalidArgumentError(f"{what} must be >= 1, got {v}")
        if clock is not None and not isinstance(clock, Clock):
            raise InvalidArgumentTypeError(f"clock must be a jobengine Clock, got {clock!r}")
        init_blob, init_fds = None, []
        if initializer is not None:
            if not callable(initializer):
                raise InvalidArgumentTypeError(f"initializer must be callable, got {initializer!r}")
            try:
                init_blob, init_fds = dumps_for_workers((initializer, tuple(initargs)))
            except Exception as e:
                raise SerializationError(
                    f"the initializer or its initargs cannot be sent to the workers: "
                    f"{type(e).__name__}: {e} (a Queue, Lock or Event made with "
                    "multiprocessing.get_context('spawn') travels, as to a spawned "
                    "process; one made in a fork context cannot, nor can any other process)"
                ) from None
        self._clock: Clock = clock if clock is not None else SYSTEM
        self.store: Store = store if store is not None else MemoryStore()
        if secret is not None or self.store.codec.secret is None:
            self.store.use_secret(secret_from(secret))
        self._registry = JobRegistry(real_time_timeouts=not self._clock.virtual)
        self._engine_options = dict(
            store=self.store,
            registry=self._registry,
            clock=self._clock,
            num_workers=num_workers,
            max_jobs_per_worker=max_jobs_per_worker,
            max_memory_per_worker=max_memory_per_worker,
            kill_grace=check_seconds(kill_grace, "kill_grace"),
            lease=check_seconds(lease, "lease", allow_zero=False),
            init_blob=init_blob,
            init_fds=init_fds,
        )
        self._shared = shared
        self._given_uid = _GivenUid()  # see _next_uid
        self._lifecycle = threading.RLock()  # start() once, even from racing submit()s
        if handle_signals is None:  # see SignalStop.wanted
            handle_signals = SignalStop.wanted()
        # (through a list: a restarted manager's handler stops its current engine)
        current = self._current = [None]
        self._signals = SignalStop(lambda: _stop_on_signal(current[0])) if handle_signals else None
        self._new_engine()

    def _new_engine(self) -> None:
        """The engine (and shared queue) this manager runs: made at construction, and
        again by a start() after a stop()."""
        self._engine = engine = Engine(**self._engine_options)
        self._short: ShortPath | None = None  # made by start(), for this engine
        self.node = engine.node
        # On a durable store one-off instances live in its shared queue (queue.py).
        lease_s = self._engine_options["lease"]
        self._queue = (
            SharedQueue(engine, self._registry, self.store, lease_s) if self._shared else None
        )
        engine.shared_queue = self._queue
        engine.follow_ups = FollowUps(self._schedule_follow_up, self._follow_up_refused)
        self._current[0] = engine
        _live_engines.add(engine)
        # Collected without shutdown: stop the supervisor and workers (after the work
        # they hold).  The interpreter-exit hook covers managers alive at exit.
        weakref.finalize(self, _abandon, engine).atexit = False

    @property
    def broken(self) -> BaseException | None:
        """Why the manager serves nothing more (its initializer failed in a worker, an
        InitializerError), or None."""
        return self._engine.broken

    @property
    def _broken(self) -> BaseException | None:
        """ProcessPoolExecutor's private name for `broken`, for code that reads it."""
        return self._engine.broken

    # -- jobs ----------------------------------------------------------------------------
    def register_job(self, job: Job) -> Job:
        """Register `job` under its kind (DuplicateJobError if the kind is taken;
        SerializationError if its executor cannot be pickled for the workers)."""
        if isinstance(job, Job):
            self._registry.executor_blob(job)
        self._registry.register(job)
        if self._engine.running:
            ticks = self._engine.ticks
            if job.crontab is None:
                ticks.learn_variants(job.kind)  # scheduled with a crontab of their own?
            if job.kind in self._registry.crontab_kinds():
                ticks.claim([job.kind])  # resume those waiting in the store
        return job

    def unregister_job(self, kind: str) -> Job:
        """Remove the job of `kind`; instances already scheduled still run."""
        return self._registry.unregister(kind)

    def lookup_job(self, kind: str) -> Job:
        """The registered job of `kind` (UnknownJobError if none)."""
        return self._registry.lookup(kind)

    def list_jobs(self) -> list[Job]:
        """Registered jobs, in registration order."""
        return self._registry.jobs()

    # -- scheduling ----------------------------------------------------------------------
    def schedule_registered_job(self, kind: str, **options: Any) -> Instance:
        """Schedule an instance of the registered job `kind`; options as schedule_job."""
        job = self._registry.lookup(kind)
        if not options:  # schedule_job's own short paths
            short = self._short
            if short is not None:
                inst = short.schedule(job, (), None)
                if inst is not None:
                    return inst
            if _plain(job) and self._short_path_open():
                return self._admit_plain(job, (), {}, raising=True)
        return self.schedule_job(job, **options)

    def schedule_job(
        self,
        job: Job,
        *,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        priority: int | None = None,
        schedule_at: datetime | None = None,
        schedule_after: float | timedelta | None = None,
        **overrides: Any,
    ) -> Instance[Any]:
        """Schedule one instance of `job` (registering it if its kind is new).

        args/kwargs go to the executor (checked against its signature now, pickled
        now: an argument that cannot be pickled raises SerializationError and nothing
        is recorded).  priority / schedule_at / schedule_after override the job's, and
        so may any of crontab, timezone, jitter, max_retries, timeout, backoff and the
        three handlers (go-job's WithCrontabSpec(...) at ScheduleJob): the instance
        runs as job.derive(...) and keeps them.  A Job whose kind another Job holds
        here runs as the Job given (go-job's rule); schedule_registered_job(kind) runs
        the registered one.  Before start() the instance waits in the manager until
        it starts."""
        if (
            not overrides
            and priority is None
            and schedule_at is None
            and schedule_after is None
            and type(args) is tuple
            and (kwargs is None or type(kwargs) is dict)
            and isinstance(job, Job)
        ):
            short = self._short
            if short is not None:
                inst = short.schedule(job, args, kwargs)
                if inst is not None:
                    return inst
            if _plain(job) and self._short_path_open():
                return self._admit_plain(job, args, kwargs or {}, raising=True)
        self._check_accepting()
        if overrides:
            if not isinstance(job, Job):
                raise InvalidArgumentTypeError(f"schedule_job needs a Job, got {job!r}")
            job = job.derive(**overrides)
        inst, due, at, after, key_material = self._new_instance(
            job, args, kwargs, priority, schedule_at, schedule_after
        )
        if job.crontab is not None:
            if self._engine.target_workers == 0:
                raise ManagerStateError(
                    "a manager with no workers only queues one-off instances; schedule "
                    f"the recurring job {job.kind!r} on a manager with workers"
                )
            # A recurring instance: one run per tick, all under this uuid.
            explicit = at is not None or after is not None
            return self._engine.ticks.schedule(inst, key_material, explicit)
        return self._admit_batch([(inst, due)], raising=True)[0]

    # -- follow-up jobs (an executor's Manager parameter: pool/follow_up.py) ------------
    def _next_uid(self) -> int | str:
        """The uuid of the next instance made on this thread: a new one (its text), or
        the one a worker gave a follow-up job it asked for (an int)."""
        given = self._given_uid.value
        if given is not None:
            self._given_uid.value = None
            return given
        return uuid7_str()

    def _schedule_follow_up(self, uid: int, target: tuple, options: dict) -> None:
        how, what = target
        self._given_uid.value = uid
        try:
            if how == "fn":
                self.submit(what, *options["args"], **options["kwargs"])
            elif how == "kind":
                self.schedule_registered_job(what, **options)
            else:
                self.schedule_job(what, **options)
        finally:
            self._given_uid.value = None

    def _follow_up_refused(self, parent: Any, message: str) -> None:
        self._engine.append_log(parent, LogLevel.ERROR, message)

    def _check_accepting(self, error: type[Exception] = ManagerStateError) -> None:
        """Raise unless new instances may be scheduled: the broken error, or `error`
        (the Executor methods raise a plain RuntimeError, as concurrent.futures does;
        the go-job methods ManagerStateError, which is also a RuntimeError)."""
        engine = self._engine
        if engine.broken is not None:
            raise type(engine.broken)(*engine.broken.args)
        if _exiting:
            raise error("cannot schedule new futures after interpreter shutdown")
        if engine.forked:
            raise error(
                f"this manager runs in process {engine.pid}; this process ({os.getpid()}) "
                "is a fork of it and cannot schedule on its copy: make a Manager here, "
                "or start() this one again for workers of this process's own"
            )
        if not engine.accepting:
            raise error(
                f"cannot schedule new futures after shutdown (the manager is {engine.state})"
            )

    def _new_instance(
        self,
        job: Job,
        args: Iterable[Any],
        kwargs: dict[str, Any] | None,
        priority: int | None,
        schedule_at: datetime | None,
        schedule_after: float | timedelta | None,
        pickle_now: bool = True,
        convert: bool = True,
    ) -> tuple[Instance[Any], int, datetime | None, float | None, bytes]:
        """Check the options, bind the arguments (converted by the executor's
        annotations unless `convert` is False: the Executor methods pass them as they
        are, as the stdlib does), make the Instance and pickle its payload
        (SerializationError if it cannot be, unless pickle_now is False: then the error
        is stored in inst.payload's place and the caller decides)."""
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
        clock = self._clock
        if schedule_at is None and schedule_after is None:
            at, after = job.schedule_at, job.schedule_after
        else:
            at = schedule_at
            after = check_seconds(schedule_after, "schedule_after")
        at = check_schedule_at(at, clock.time_ns())
        args, kwargs = job.bind(args, kwargs, convert=convert)
        if pickle_now:
            self._registry.executor_blob(job)  # an executor that cannot travel: refused
        self._registry.adopt(job)
        inst: Instance[Any] = Instance(
            self._engine, job, self._next_uid(), args, kwargs, prio, clock.time_ns()
        )
        key_material = b""
        try:
            self._registry.executor_blob(job)  # made once per Job, then a dict lookup
            inst.payload = task_bytes(job, args, kwargs, inst.uuid_str)
            if job.crontab is not None:
                # a per-schedule crontab is another schedule of the same arguments
                spec = () if job.base is None else (job.crontab, job.timezone)
                key_material = dumps_value((job.kind, args, kwargs, *spec))
        except Exception as e:
            err = _pickling_error(job, e)
        else:
            err = None
        if err is not None:
            if pickle_now:
                raise err from None
            inst.payload = err
        due = self._due(at, after)
        if job.jitter is not None and job.crontab is None:  # a one-shot's jitter: later
            due = (due or clock.monotonic_ns()) + int(job.jitter_seconds() * 1e9)
        wall = inst.created_ns
        inst.scheduled_ns = wall + max(0, due - clock.monotonic_ns()) if due else wall
        if at is not None and job.crontab is None:
            # a past time is kept as given (go-job's rule): it is due at once, and
            # its scheduled_at says when it was meant to run
            inst.scheduled_ns = min(inst.scheduled_ns, datetime_to_ns(at))
        return inst, due, at, after, key_material

    def _due(self, schedule_at: datetime | None, schedule_after: float | None) -> int:
        """Due time on the (monotonic) clock (0: now); a schedule_at in the past keeps
        its distance into the past."""
        clock = self._clock
        if schedule_at is not None:
            # a past time stays in the past: due at once, ranked ahead of what was due
            # later (at equal priority the earlier time runs first, as in go-job)
            delta = datetime_to_ns(schedule_at) - clock.time_ns()
            return clock.monotonic_ns() + delta or 1
        if schedule_after:
            return clock.monotonic_ns() + int(schedule_after * 1e9)
        return 0  # due at once: the core puts it straight into the ready heap

    # -- cancel and lookups --------------------------------------------------------------
    def cancel_instances(self, query: Query) -> list[Instance]:
        """Cancel every instance matching `query`, queued or running.  A queued one is
        CANCELED at once; a running one is stopped by killing only its worker (which is
        replaced) and becomes CANCELED moments later.  Canceled instances are never
        retried.  Returns the instances it canceled or is canceling."""
        engine = self._engine
        canceled = [
            inst
            for inst in engine.live_matching(query)
            if inst.cancel() or engine.request_cancel(inst)
        ]
        if self._queue is not None:  # queued in the store, or held by other managers
            canceled += self._queue.cancel(query)
        return canceled

    def lookup_instance_history(
        self, ji: Instance | InstanceRecord | str | Query, query: Query | None = None
    ) -> list[StateRecord]:
        """The state history of an instance (or uuid), oldest first.  Given a Query
        instead, the records of every instance it matches by uuid, kind and (current)
        state.  A query's after/before bound the records' own times and its limit their
        number."""
        return self._records(ji, query, self.store.lookup_history)

    def lookup_instance_logs(
        self, ji: Instance | InstanceRecord | str | Query, query: Query | None = None
    ) -> list[LogRecord]:
        """The log history of an instance (or uuid), oldest first; or, given a Query,
        of every instance it matches, as lookup_instance_history.  Query(level=...)
        keeps the records at that LogLevel or more severe; after/before bound their
        times: mgr.lookup_instance_logs(ji, Query(level=LogLevel.WARN, after=t))."""
        return self._records(ji, query, self.store.lookup_logs)

    def process_history(self, ji: Any, query: Query | None = None) -> list[StateRecord]:
        """lookup_instance_history, under the name go-job's README uses (ProcessHistory)."""
        return self.lookup_instance_history(ji, query)

    def process_logs(self, ji: Any, query: Query | None = None) -> list[LogRecord]:
        """lookup_instance_logs, under the name go-job's README uses (ProcessLogs)."""
        return self.lookup_instance_logs(ji, query)

    def _records(self, ji: Any, query: Query | None, read: Callable[[str], list]) -> list:
        if query is not None and not isinstance(query, Query):
            raise InvalidArgumentTypeError(f"query must be a Query, got {query!r}")
        self._engine.recorder.sync()
        if not isinstance(ji, Query):
            records = read(_uuid_of(ji))
        else:  # ji picks the instances; its times, level and limit the records unless
            query = query or ji  # a second query is given for them
            which = Query(uuid=ji.uuid, kind=ji.kind, state=ji.state)
            records = [r for i in self.store.lookup_instances(which) for r in read(i.uuid)]
            records.sort(key=lambda r: r.time_ns)  # stable: each instance's order holds
        if query is None:
            return records
        records = [r for r in records if query.matches_record(r)]
        return records if query.limit is None else records[: query.limit]

    def schedule_history_cleaner(
        self,
        retention: float | timedelta,
        *,
        crontab: str = DEFAULT_CRONTAB,
        timezone: str | None = None,
    ) -> Instance[Any]:
        """go-job's history cleaner: on `crontab` (default hourly), delete the state
        records older than `retention` (seconds or a timedelta) from the store; each run
        logs how many went.  A recurring instance (cancel it to stop cleaning); scheduling
        it again returns the same one."""
        return schedule_cleaner(self, "history", retention, crontab, timezone)

    def schedule_log_cleaner(
        self,
        retention: float | timedelta,
        *,
        crontab: str = DEFAULT_CRONTAB,
        timezone: str | None = None,
    ) -> Instance[Any]:
        """go-job's log cleaner: as schedule_history_cleaner, for log records."""
        return schedule_cleaner(self, "logs", retention, crontab, timezone)

    @property
    def control_url(self) -> str | None:
        """Where the control API listens (http://host:port, the port chosen when
        control= asked for port 0), or None without control=."""
        return None if self._control is None else self._control.url

    def stats(self) -> dict[str, Any]:
        """Counts at a glance (the control API's /stats): workers by state, instances
        waiting here, attempts started and instances ended by final state since start."""
        by_state: dict[str, int] = {}
        for w in self.workers:
            by_state[w.state] = by_state.get(w.state, 0) + 1
        engine = self._engine
        return {
            "node": self.node,
            "state": engine.state,
            "workers": self.num_workers,
            "workers_by_state": by_state,
            "queued": sum(engine.queued_counts().values()),
            "registered_jobs": len(self.list_jobs()),
            **engine.recorder.stats.totals(),
        }

    def metrics(self) -> bytes:
        """This manager's metrics in the Prometheus text format (metrics.py; needs the
        prometheus_client package, the `metrics` extra)."""
        return exposition(self)

    def clear(self) -> None:
        """Delete everything the store keeps in this manager's namespace: instances,
        histories, logs, recurrences, queued entries (go-job's ClearInstances).  What
        this manager holds in memory (registered jobs, running instances) stays."""
        self._engine.recorder.sync()
        self.store.clear()

    def lookup_instances(self, query: Query | None = None) -> list[Instance | InstanceRecord]:
        """Instances matching `query`, oldest first.  Instances this manager created and
        that are still referenced are returned as their Instance objects; others (made by
        another manager, or forgotten) as the store's InstanceRecords, which have the
        same read-only fields."""
        if query is not None and not isinstance(query, Query):
            raise InvalidArgumentTypeError(f"lookup_instances needs a Query, got {query!r}")
        if query is not None and query.level is not None:
            raise InvalidArgumentError("Query.level filters log records, not instances")
        engine = self._engine
        engine.recorder.sync()
        records = self.store.lookup_instances(query or Query())
        return [engine.lookup(r.uuid) or r for r in records]

    def clear_instance_history(
        self, before: datetime | None = None, after: datetime | None = None
    ) -> int:
        """Delete state records in [after, before); return how many."""
        self._engine.recorder.sync()
        return self.store.clear_history(_ns_or_none(before), _ns_or_none(after))

    def clear_instance_logs(
        self, before: datetime | None = None, after: datetime | None = None
    ) -> int:
        """Delete log records in [after, before); return how many."""
        self._engine.recorder.sync()
        return self.store.clear_logs(_ns_or_none(before), _ns_or_none(after))

    # -- pool ------------------------------------------------------------------------
    @property
    def num_workers(self) -> int:
        """The pool's target size."""
        return self._engine.target_workers

    def resize_workers(self, n: int) -> None:
        """Grow or shrink the pool to `n` workers.  Shrinking lets the retired workers
        finish what they hold first: no job is lost or run twice."""
        if not isinstance(n, int) or isinstance(n, bool):
            raise InvalidArgumentTypeError(f"resize_workers needs an int, got {n!r}")
        if n < 1:
            raise InvalidArgumentError(f"resize_workers needs n >= 1, got {n}")
        if n > self._worker_limit:
            raise InvalidArgumentError(
                f"resize_workers({n}) is over the worker limit of {self._worker_limit} "
                "(Manager(worker_limit=...) raises it)"
            )
        self._engine.resize(n)

    @property
    def workers(self) -> list[WorkerInfo]:
        """A snapshot of the pool's workers (pid, state, current job, RSS, CPU)."""
        pool = self._engine.pool
        return pool.info() if pool is not None else []

    @property
    def worker_events(self) -> list[WorkerEvent]:
        """Every worker birth and death so far (the latest 10,000), oldest first; a
        death names its exit code or signal."""
        pool = self._engine.pool
        return list(pool.events) if pool is not None else []

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> Manager:
        """Start the supervisor, the workers and the engine thread.  (submit() and
        map() start a manager that was never started.)  A stopped manager starts
        again, as go-job's does: with new workers, its registered jobs, and its
        recurrences resumed from the store; the Instances of its previous run stay
        as they ended.  A broken one (InitializerError) does not."""
        with self._lifecycle:
            state = self._engine.state
            if state == "stopped" and self._engine.broken is None:
                self._new_engine()
                state = self._engine.state
            if state != "new":
                raise ManagerStateError(f"start() on a manager that is {state}")
            if self._control is not None:  # first: a port in use fails start() cleanly
                self._control.start()
            self._engine.start()
            if self._queue is not None:
                self._queue.start()
            else:  # (with a shared queue, one-off instances take the queue's path)
                self._short = ShortPath(
                    self,
                    self._engine,
                    self._registry,
                    globals(),
                    Instance,
                    task_bytes,
                    NO_ARGUMENTS,
                    State.SCHEDULED,
                    FLUSH_EVERY,
                )
        if self._signals is not None:
            self._signals.install()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every scheduled instance has reached a final state.  True if
        it did, False on timeout."""
        if self._queue is None:
            return self._engine.wait_idle(timeout)
        end = None if timeout is None else time.monotonic() + timeout
        if not self._queue.wait_produced(timeout):
            return False
        return self._engine.wait_idle(None if end is None else max(0.0, end - time.monotonic()))

    def stop(self, wait: bool = False, grace: float | None = None) -> None:
        """Stop: cancel instances still queued, let running ones finish (within `grace`
        seconds, if given: then their workers are killed and they become CANCELED), then
        shut the pool down.  With wait=True (stop_with_wait), run everything first.
        Recurring instances are suspended, not canceled: they stay in the store for the
        next manager.  A manager never started cancels what was scheduled on it."""
        grace = check_seconds(grace, "grace")
        engine = self._engine
        queue = self._queue
        with self._lifecycle:
            if engine.state == "new":
                if not (wait and (engine.has_pending() or (queue and queue.produced))):
                    engine.stop_unstarted()
                    if queue is not None:
                        queue.abandon_produced()  # they stay queued in the store
                    return
                self.start()  # stop_with_wait() runs what was scheduled before start()
        if engine.state == "stopped" and engine.error is None:
            return
        if wait:
            self.wait()
        if queue is not None:
            queue.stop()  # no more claims; what was claimed and not started goes back
        engine.begin_stop(grace)
        engine.join()
        engine.follow_ups.close()
        if self._control is not None:
            self._control.stop()
        if queue is not None:
            queue.abandon_produced()
        if self._signals is not None:
            self._signals.restore()
        engine.raise_if_failed()

    def stop_with_wait(self) -> None:
        """Run everything scheduled to its end, then stop."""
        self.stop(wait=True)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Executor.shutdown.  New submissions raise RuntimeError from now on.
        cancel_futures: cancel the instances no worker has taken yet.  wait=True: run
        what is left, then stop (stop_with_wait); wait=False: return at once while the
        manager runs what is left and then stops by itself.  Recurring instances are
        suspended in the store, as by stop()."""
        engine = self._engine
        if cancel_futures and self._queue is not None:
            for inst in list(self._queue.produced.values()):
                inst.cancel()
        if cancel_futures:
            # What free workers can take right now is handed out first (the stdlib's
            # call queue does the same); only the rest is canceled.
            engine.sync()
            engine.cancel_all_queued()
        with self._lifecycle:
            if engine.state == "new":
                if not engine.has_pending():
                    engine.stop_unstarted()
                    return
                self.start()  # what was scheduled before start() runs, as for a pool
        if wait:
            self.stop(wait=True)
        elif self._queue is not None:  # run what is left, then stop, in the background
            start_thread(threading.Thread(target=self.stop, args=(True,), daemon=True))
        else:
            engine.drain()

    def __enter__(self) -> Manager:
        with self._lifecycle:
            if self._engine.state == "new":
                self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_with_wait()

    # -- Executor API ----------------------------------------------------------------
    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Instance[T]:
        """Executor.submit: run fn(*args, **kwargs) on the pool; return its Instance (a
        Future).  Starts the manager if it was never started, as ProcessPoolExecutor
        starts its processes.  As there, an argument that cannot be pickled fails the
        Future (SerializationError, a pickle.PicklingError), not the call."""
        short = self._short  # the common case, compiled (_core.ShortPath)
        if short is not None:
            inst = short.submit(fn, args, kwargs)
            if inst is not None:
                return inst
        if self._short_path_open():
            job = self._registry.implicit(fn)  # (counts a transient job's instance)
            if _plain(job):
                return self._admit_plain(job, args, kwargs, raising=False)
        else:
            self._ensure_started()
            self._check_accepting(RuntimeError)
            job = self._registry.implicit(fn)
        try:
            inst, due, *_ = self._new_instance(job, args, kwargs, None, None, None, False, False)
        except BaseException:
            if job.transient:
                self._registry.settled(job)
            raise
        return self._admit_batch([(inst, due)])[0]

    def _short_path_open(self) -> bool:
        """Whether a new one-off instance may take _admit_plain: the manager runs, is
        not broken and has no shared queue (the general path raises or routes)."""
        engine = self._engine
        return (
            engine.state == "running"
            and engine.broken is None
            and self._queue is None
            and not _exiting
        )

    def _admit_plain(
        self, job: Job, args: tuple, kwargs: dict[str, Any], *, raising: bool
    ) -> Instance[Any]:
        """An instance of a job with no schedule options, due now (_plain(job)), on a
        manager whose short path is open: _new_instance and _admit_batch with only
        the steps that case takes (the general path costs ~2-3 us more a call).
        raising: the go-job rule (arguments converted by the executor's annotations;
        an executor or argument that cannot be pickled raises, nothing recorded),
        else the Executor rule (arguments as given; the Future fails instead)."""
        registry = self._registry
        args, kwargs = job.bind(args, kwargs, convert=raising)
        if raising:
            registry.executor_blob(job)  # an executor that cannot travel: refused
            registry.adopt(job)
        engine = self._engine
        created = self._clock.time_ns()
        inst: Instance[Any] = Instance(
            engine, job, self._next_uid(), args, kwargs, job.priority, created
        )
        inst.scheduled_ns = created
        try:
            if not raising:  # (raising: checked above, before anything was made)
                registry.executor_blob(job)  # made once per Job, then a dict lookup
            inst.payload = task_bytes(job, args, kwargs, inst.uuid_str)
        except Exception as e:
            err = _pickling_error(job, e)
            if raising:
                raise err from None
            inst.payload = err  # _admit_batch fails the Future with it
            return self._admit_batch([(inst, 0)])[0]
        return engine.admit(inst, 0)

    def _ensure_started(self) -> None:
        if self._engine.state == "new":
            with self._lifecycle:
                if self._engine.state == "new" and not _exiting:
                    self.start()

    def submit_many(self, fn: Callable[..., T], /, *iterables: Iterable[Any]) -> list[Instance[T]]:
        """submit() for many calls at once: fn(*args) for each args in
        zip(*iterables), one Instance (Future) each, in order -- map() without the
        waiting.  Cheaper per job than a loop of submit(): the checks run once and the
        instances reach the engine (or the store's shared queue) as one batch.  An
        argument that cannot be pickled fails its own Future, as in submit(); a call
        that does not fit fn's signature raises before anything is scheduled."""
        self._ensure_started()
        self._check_accepting(RuntimeError)
        calls = list(zip(*iterables, strict=False))
        if not calls:
            return []
        registry = self._registry
        job = registry.implicit(fn)  # holds it for one instance; the rest below
        registry.hold(job, len(calls) - 1)
        try:
            made = [self._new_instance(job, a, None, None, None, None, False, False) for a in calls]
        except BaseException:
            registry.settled(job, len(calls))
            raise
        return self._admit_batch([(inst, due) for inst, due, *_ in made])

    def schedule_many(
        self,
        job: Job,
        args_list: Iterable[Iterable[Any]],
        *,
        kwargs: dict[str, Any] | None = None,
        priority: int | None = None,
        schedule_at: datetime | None = None,
        schedule_after: float | timedelta | None = None,
    ) -> list[Instance[Any]]:
        """schedule_job() for many instances of `job` at once: one per argument tuple
        in args_list (kwargs and the options shared by all), in order, admitted as
        one batch.  Every instance is checked and pickled first: a bad one raises
        (SerializationError, a binding error, ...) and none is scheduled.  A recurring
        job's instances are scheduled one by one (each is its own recurrence)."""
        self._check_accepting()
        if isinstance(args_list, (str, bytes, dict)) or not isinstance(args_list, Iterable):
            raise InvalidArgumentTypeError(
                f"args_list must be an iterable of argument tuples, got {args_list!r}"
            )
        options = dict(
            kwargs=kwargs, priority=priority, schedule_at=schedule_at, schedule_after=schedule_after
        )
        if isinstance(job, Job) and job.crontab is not None:
            return [self.schedule_job(job, args=a, **options) for a in args_list]
        made = [
            self._new_instance(job, a, kwargs, priority, schedule_at, schedule_after)
            for a in args_list
        ]
        return self._admit_batch([(inst, due) for inst, due, *_ in made], raising=True)

    def _admit_batch(
        self, made: list[tuple[Instance[Any], int]], *, raising: bool = False
    ) -> list[Instance[Any]]:
        """Hand new one-off instances to the engine, or to the shared queue, as one
        batch, and return them in order.  One whose arguments cannot be pickled or
        stored fails its own Future (the Executor rule), or with `raising` (the go-job
        rule) raises before any of them is handed over."""
        queue = self._queue
        failed: list[tuple[Instance[Any], Exception]] = []
        batch: list = []
        for inst, due in made:
            try:
                if isinstance(inst.payload, SerializationError):
                    err, inst.payload = inst.payload, b""
                    raise err
                batch.append((inst, queue.entry_of(inst) if queue is not None else due))
            except (SerializationError, PayloadError) as e:
                if raising:
                    raise
                failed.append((inst, e))
        if queue is not None:
            queue.produce(batch)
        else:
            self._engine.admit_many(batch)
        for inst, e in failed:
            self._engine.fail_unadmitted(inst, e, str(e))
        return [inst for inst, _ in made]

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[T]:
        """Executor.map: results in order.  chunksize > 1 sends that many calls per
        job.  Every call is submitted now; the iterator keeps no result or Future it
        has already yielded."""
        if not isinstance(chunksize, int) or isinstance(chunksize, bool) or chunksize < 1:
            raise InvalidArgumentError(f"chunksize must be an int >= 1, got {chunksize!r}")
        end = None if timeout is None else time.monotonic() + timeout
        if chunksize == 1:
            futures = self.submit_many(fn, *iterables)
        else:
            self._ensure_started()
            self._check_accepting(RuntimeError)
            # One iterable: ship its items as they are (no per-item argument tuples).
            star = len(iterables) != 1
            registry = self._registry
            # implicit() holds the runner's job for this loop; each chunk holds it too.
            runner = registry.implicit(_ChunkRunner(fn, star), named=importable(fn))
            it = zip(*iterables, strict=False) if star else iter(iterables[0])
            futures = []
            try:
                while chunk := list(itertools.islice(it, chunksize)):
                    registry.hold(runner)
                    try:
                        futures.append(self.schedule_job(runner, args=(chunk,)))
                    except BaseException:
                        registry.settled(runner)
                        raise
            finally:
                registry.settled(runner)
        futures.reverse()  # popped from the end, in order: nothing kept once yielded
        return _results(futures, end, chunksize > 1)


def _results(futures: list[Instance[Any]], end: float | None, chunked: bool) -> Iterator[Any]:
    try:
        while futures:
            left = None if end is None else end - time.monotonic()
            if not chunked:
                yield futures.pop().result(left)
            else:
                chunk = futures.pop().result(left)
                chunk.reverse()
                while chunk:
                    yield chunk.pop()
    finally:
        for f in futures:
            f.cancel()


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


def _ns_or_none(dt: datetime | None) -> int | None:
    return None if dt is None else datetime_to_ns(dt)


def _uuid_of(ji: Any) -> str:
    """The uuid string of an Instance, an InstanceRecord, a uuid.UUID or a str;
    InvalidArgumentTypeError (a TypeError) for anything else."""
    if isinstance(ji, (Instance, InstanceRecord)):
        return ji.uuid_str
    if isinstance(ji, str):
        return ji
    if isinstance(ji, _uuid.UUID):
        return str(ji)
    raise InvalidArgumentTypeError(
        f"expected an Instance, InstanceRecord, UUID or uuid string, got {ji!r}"
    )


__all__ = ["Manager"]
