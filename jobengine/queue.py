"""SharedQueue: one manager's side of a durable store's shared queue of one-off instances.

On SQLite, Redis or PostgreSQL a one-off instance lives in the store, not in the
manager's memory, so it survives its manager and any manager on the store may run it:

- produce: schedule_job / submit / map write the instance's queue entry and its
  CREATED and SCHEDULED records in one store call (Store.enqueue) and return once it
  is there.  Callers on several threads share one call (group commit), and map()
  enqueues all its calls in chunks of ENQUEUE_CHUNK.
- consume: a claimer thread takes what is due, best first, in batches bounded by the
  manager's free credits (workers x CREDITS_PER_WORKER, minus what it holds), under a
  lease for this manager that it renews while it holds anything; the engine runs them
  as it runs local instances, and the final record finishes the entry (in the store's
  same write).  An entry reaped from a dead manager that had started it runs again
  with its attempts counted, or ends TERMINATED "manager lost" when no retry is left.
- watch: an instance this manager enqueued and another one ran settles its Future
  from the store's record (Store.take_finished).

Owns: the claimer thread, the instances it has claimed and those it enqueued.  Never
does: run anything itself (the engine does) or decide how a store keeps the queue.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
import uuid as _uuid
from concurrent.futures import wait as _wait_futures
from typing import TYPE_CHECKING, Any

import cloudpickle

from .errors import JobEngineError, ManagerStateError, SerializationError, StoreError
from .instance import Instance
from .job import Job, task_bytes, task_payload
from .payloads import dumps_value
from .query import Query
from .records import FINAL_STATES, QueueEntry
from .registry import importable
from .signals import start_thread
from .state import State

if TYPE_CHECKING:
    from .engine import Engine
    from .registry import JobRegistry
    from .stores.base import Store

log = logging.getLogger("jobengine")

CREDITS_PER_WORKER = 64  # the claim window: what a manager may hold per worker
ENQUEUE_CHUNK = 1000  # entries per enqueue call
IDLE_POLL_S = 0.05  # the longest wait between claims when the queue looks empty
HOT_S = 0.5  # after a claim that took something, poll every millisecond this long
CANCEL_POLL_S = 0.5  # how often a manager asks for cancels of what it runs
ENQUEUE_PATIENCE_S = 15.0  # how long a producer retries a failing enqueue before it raises

_SCHEDULED, _PROCESSING = State.SCHEDULED, State.PROCESSING


class ManagerLost(JobEngineError):
    """The manager that had started this instance died, and no retry was left."""


def target_of(fn: Any) -> str | None:
    """ "module:qualname" for a callable another process can import, else None."""
    if not importable(fn):
        return None
    return f"{fn.__module__}:{fn.__qualname__}"


def import_target(target: str) -> Any:
    module, _, qualname = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


class _Batch:
    __slots__ = ("done", "entries", "error", "rows", "states")

    def __init__(self) -> None:
        self.entries: list[QueueEntry] = []
        self.rows: list[tuple] = []
        self.states: list[tuple] = []
        self.done = False
        self.error: BaseException | None = None


class SharedQueue:
    """The producer, consumer and watcher of one manager on a store with a queue."""

    def __init__(self, engine: Engine, registry: JobRegistry, store: Store, lease_s: float):
        self.engine = engine
        self.registry = registry
        self.store = store
        self.lease_ns = int(lease_s * 1e9)
        self.node = engine.node
        self.produced: dict[str, Instance] = {}  # enqueued here, not settled yet
        self.claimed: dict[str, Instance] = {}  # claimed here, not finished yet
        self._lock = threading.Lock()  # the two dicts, the pending batch
        self._commit = threading.Lock()  # one enqueue call at a time (group commit)
        self._batch = _Batch()
        self._foreign: dict[Any, Job] = {}  # jobs made from entries: (kind, how) -> Job
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- producing -------------------------------------------------------------------
    def entry_of(self, inst: Instance) -> QueueEntry:
        """The queue entry of a new instance (PayloadError / SerializationError if its
        arguments or executor cannot travel through this store)."""
        job = inst.job
        codec = self.store.codec
        args, kwargs = inst.args, inst.kwargs
        # the worker's payload is (args, kwargs) already unless it carries the uuid too
        plain = len(task_payload(job, args, kwargs, "")) == 2
        raw = inst.payload if plain else dumps_value((args, kwargs))
        payload = codec.encode_pickled(raw, [list(args), kwargs])
        target = target_of(job.executor)
        executor = None
        if target is None:
            try:  # by value: a lambda, a closure, a bound method travel whole
                raw = cloudpickle.dumps(job.executor, protocol=5)
            except Exception as e:
                raise SerializationError(
                    f"the executor of job {job.kind!r} cannot travel through the store: "
                    f"{type(e).__name__}: {e}"
                ) from None
            executor = codec.encode_pickled(raw)
        backoff = job.backoff if isinstance(job.backoff, (int, float)) else None
        options = {"r": job.max_retries, "t": job.timeout, "b": backoff}
        return QueueEntry(inst.uuid_str, job.kind, inst.priority, inst.scheduled_ns or 0,
                          payload=payload, target=target, executor=executor, options=options,
                          created_ns=inst.created_ns, origin=self.node)  # fmt: skip

    def produce(self, made: list[tuple[Instance, QueueEntry]]) -> None:
        """Put new instances with their entries (entry_of) in the store; return once
        they are there.  StoreError if the store stays down."""
        s, c = int(_SCHEDULED), int(State.CREATED)
        for i in range(0, len(made), ENQUEUE_CHUNK):
            chunk = made[i : i + ENQUEUE_CHUNK]
            with self._lock:
                batch = self._batch
                for inst, entry in chunk:
                    u, k, t = inst.uuid_str, inst.job.kind, inst.created_ns
                    inst.state = _SCHEDULED
                    inst.hand_to(self)  # cancel() goes through the store
                    self.produced[u] = inst
                    batch.entries.append(entry)
                    batch.rows.append((u, k, s, inst.priority, 0, t, inst.scheduled_ns,
                                       None, None, None))  # fmt: skip
                    batch.states += [(u, k, c, t, 0, None, 1, None), (u, k, s, t, 0, None, 1, None)]
            self._commit_batch(batch)
        recorder = self.engine.recorder
        for inst, _ in made:
            self.engine.remember(inst)
            handler = inst.job.state_change_handler
            if handler is not None:  # (the later states' run where the instance runs)
                recorder.defer(recorder.call_handler, handler, inst, State.CREATED)
                recorder.defer(recorder.call_handler, handler, inst, _SCHEDULED)
        self._wake.set()

    def _commit_batch(self, batch: _Batch) -> None:
        """Leader/follower: whoever holds the commit lock writes every batch pending."""
        with self._commit:
            if not batch.done:
                with self._lock:
                    if self._batch is batch:
                        self._batch = _Batch()
                delay, give_up = 0.02, time.monotonic() + ENQUEUE_PATIENCE_S
                while True:  # a store blip delays the caller; an outage fails it
                    try:
                        self.store.enqueue(batch.entries, batch.rows, batch.states)
                        break
                    except StoreError as e:
                        if time.monotonic() + delay > give_up:
                            batch.error = e
                            break
                        time.sleep(delay)
                        delay = min(1.0, delay * 2)
                batch.done = True
        if batch.error is not None:
            with self._lock:
                for e in batch.entries:
                    self.produced.pop(e.uuid, None)
            raise StoreError(f"cannot enqueue: {batch.error}") from batch.error

    # -- the Owner protocol of produced instances ----------------------------------------
    def cancel_queued(self, inst: Instance) -> bool:
        """Instance.cancel() of an instance enqueued here: through the store."""
        if inst.handle >= 0 or inst.uuid_str in self.claimed:
            return self.engine.cancel_queued(inst)
        if inst.done():
            return inst.cancelled()
        taken, _ = self.store.cancel_queued(
            Query(uuid=inst.uuid_str), self.node, time.time_ns() + self.lease_ns
        )
        if taken:
            self._cancel_taken(inst)
            return True
        return False

    def append_log(self, inst: Instance, level: Any, message: str) -> None:
        self.engine.append_log(inst, level, message)

    def read_records(self, uuid: str, logs: bool) -> list:
        return self.engine.read_records(uuid, logs)

    def _cancel_taken(self, inst: Instance) -> None:
        """An entry this manager took to cancel: recorded CANCELED (the final record
        finishes the entry)."""
        inst.hand_to(self.engine)
        inst.state = _SCHEDULED
        inst.handle = -1
        self.engine.cancel_queued(inst)
        with self._lock:
            self.produced.pop(inst.uuid_str, None)

    def cancel(self, query: Query) -> list[Instance]:
        """cancel_instances across managers: what is queued in the store is taken and
        CANCELED here; what another manager holds is flagged for it."""
        taken, _ = self.store.cancel_queued(query, self.node, time.time_ns() + self.lease_ns)
        out = []
        for e in taken:
            inst = self.produced.get(e.uuid) or self._instance(e)
            if inst is not None:
                self._cancel_taken(inst)
                out.append(inst)
        return out

    # -- consuming -------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="jobengine-queue", daemon=True)
        start_thread(self._thread)

    def wake(self) -> None:
        self._wake.set()

    def _window(self) -> int:
        """What this manager may hold: credits for each live worker (a manager whose
        workers are still starting takes nothing it could not run yet)."""
        pool = self.engine.pool
        if pool is None:
            return 0
        live = sum(1 for w in list(pool.workers.values()) if w.pid is not None and not w.retiring)
        return live * CREDITS_PER_WORKER

    def _loop(self) -> None:
        store = self.store
        last_renew = last_cancel = last_watch = last_got = last_prune = 0.0
        idle = 0.001
        failures = 0
        while not self._stopping:
            try:
                now = time.monotonic()
                self._prune(now - last_prune > 0.5)
                if now - last_prune > 0.5:
                    last_prune = now
                window = self._window()
                held = len(self.claimed)
                got = 0
                if window > 0 and held <= window // 2:
                    lease_until = time.time_ns() + self.lease_ns
                    entries = store.claim(self.node, window - held, time.time_ns(), lease_until)
                    last_renew = now
                    got = len(entries)
                    if entries:
                        self._admit(entries)
                elif held and now - last_renew > self.lease_ns / 3e9:
                    store.renew_claims(self.node, time.time_ns() + self.lease_ns)
                    last_renew = now
                if held and now - last_cancel > CANCEL_POLL_S:
                    last_cancel = now
                    for u in store.cancel_requests(self.node):
                        self._cancel_request(u)
                if self.produced and now - last_watch > idle:
                    last_watch = now
                    for rec in store.take_finished(self.node):
                        self._settle_from_record(rec)
                failures = 0
            except Exception as e:  # a store blip: log, back off, go on
                failures += 1
                log.warning("jobengine: the shared queue's store call failed (%s); retrying", e)
                self._wake.wait(min(2.0, 0.05 * 2**failures))
                self._wake.clear()
                continue
            if got:
                idle, last_got = 0.001, time.monotonic()
                if len(self.claimed) <= self._window() // 2:
                    continue  # more may be waiting: claim again at once
            elif time.monotonic() - last_got > HOT_S:  # a producer may be mid-batch: stay
                idle = min(IDLE_POLL_S, idle * 2)  # quick a while, then back off
            self._wake.wait(idle if len(self.claimed) <= self._window() // 2 else 0.002)
            self._wake.clear()

    def _prune(self, produced: bool) -> None:
        """Forget claimed instances that ended (their final records finish the entries),
        and (`produced`: now and then, there may be many) settled produced ones."""
        with self._lock:
            for u in [u for u, i in self.claimed.items() if int(i.state) in FINAL_STATES]:
                del self.claimed[u]
            if produced:
                for u in [u for u, i in self.produced.items() if i.done()]:
                    del self.produced[u]

    def _job_for(self, e: QueueEntry) -> Job:
        """The job an entry runs: the one registered here under its kind (if it runs
        the same callable), else one made from its target or executor and options."""
        local = self.registry.get(e.kind)
        if local is not None and (e.target is None or target_of(local.executor) == e.target):
            return local
        o = e.options
        key = (e.kind, e.target or e.executor, o.get("r"), o.get("t"), o.get("b"))
        job = self._foreign.get(key)
        if job is None:
            if e.target is not None:
                fn = import_target(e.target)
            else:
                fn = self.store.codec.decode(e.executor, f"the executor of {e.uuid}")
            job = Job(e.kind, fn, max_retries=int(o.get("r") or 0), timeout=o.get("t") or None,
                      backoff=o.get("b"))  # fmt: skip
            self.registry.foreign(job)
            self._foreign[key] = job
        return job

    def _instance(self, e: QueueEntry) -> Instance | None:
        """An Instance for an entry another manager enqueued; None (the entry is
        finished TERMINATED) when it cannot be made here."""
        try:
            job = self._job_for(e)
            args, kwargs = self.store.codec.decode(e.payload, f"the arguments of {e.uuid}")
            args = tuple(args)
        except Exception as err:
            self._terminate_unmade(e, err)
            return None
        inst: Instance = Instance(self.engine, job, _uuid.UUID(e.uuid).int, args, kwargs,
                                  e.priority, e.created_ns)  # fmt: skip
        inst.scheduled_ns = e.due_ns
        inst.state = _SCHEDULED
        try:
            inst.payload = task_bytes(job, args, kwargs, inst.uuid_str)
        except Exception as err:
            self._terminate_unmade(e, err)
            return None
        return inst

    def _terminate_unmade(self, e: QueueEntry, err: BaseException) -> None:
        log.error("jobengine: queued instance %s (%s) cannot run here: %s", e.uuid, e.kind, err)
        job = Job(e.kind, _unrunnable)
        inst: Instance = Instance(self.engine, job, _uuid.UUID(e.uuid).int, (), {},
                                  e.priority, e.created_ns)  # fmt: skip
        inst.state = _SCHEDULED
        self._end(inst, _PROCESSING, JobEngineError(f"cannot run here: {err}"), State.TERMINATED)

    def _end(self, inst: Instance, via: State, err: BaseException, state: State) -> None:
        """Record inst ended (TERMINATED) without running it here."""
        rec = self.engine.recorder
        now = time.time_ns()
        inst.state = via
        inst.completed_ns = now
        cause = str(err)
        rec.outcome(inst, ("e", type(err).__name__, cause, ""))
        rec.transition(inst, state, now, cause)
        rec.flush()
        if not inst.done():
            inst.set_exception(err)

    def _admit(self, entries: list[QueueEntry]) -> None:
        """Hand claimed entries to the engine; one that fails here goes back to the
        queue (never held without running: this manager's lease would keep it)."""
        for i, e in enumerate(entries):
            try:
                self._admit_one(e)
            except Exception:
                log.exception("jobengine: could not take queued instance %s", e.uuid)
                rest = [x.uuid for x in entries[i:] if x.uuid not in self.claimed]
                self.store.release(self.node, rest)
                return

    def _admit_one(self, e: QueueEntry) -> None:
        engine = self.engine
        inst = self.produced.get(e.uuid) if e.origin == self.node else None
        if inst is None:
            inst = self._instance(e)
            if inst is None:
                return
            engine.remember(inst)
        else:
            inst.hand_to(engine)
        if e.reaped and not self._resume(e, inst):
            return
        if e.canceled:
            self._cancel_taken(inst)
            return
        with self._lock:
            self.claimed[e.uuid] = inst
        engine.admit(inst, 0, new=False)

    def _resume(self, e: QueueEntry, inst: Instance) -> bool:
        """A reaped entry: its manager died holding it.  True to run it now."""
        rec = self.store.get_instance(e.uuid)
        if rec is None:
            return True
        if int(rec.state) in FINAL_STATES:  # it ended; only the finishing was lost
            self.store.finish([e.uuid])
            return False
        if rec.attempts > 0:  # started: this is its next attempt, if one is left
            inst.attempts = rec.attempts
            if 0 <= inst.job.max_retries < rec.attempts:  # (-1: RETRY_FOREVER)
                inst.worker = None
                self._end(inst, _PROCESSING, ManagerLost(
                    "manager lost: the manager running it died and no retry was left"),
                    State.TERMINATED)  # fmt: skip
                return False
        return True

    def _cancel_request(self, uuid: str) -> None:
        inst = self.claimed.get(uuid)
        if inst is not None and not inst.done():
            inst.cancel() or self.engine.request_cancel(inst)

    def _settle_from_record(self, rec: Any) -> None:
        """An instance enqueued here finished on another manager."""
        with self._lock:
            inst = self.produced.pop(rec.uuid, None)
        if inst is None or inst.done():
            return
        inst.state = rec.state
        inst.attempts = rec.attempts
        inst.processed_ns, inst.completed_ns = rec.processed_ns, rec.completed_ns
        if inst.job.transient:
            self.engine.job_settled(inst.job)
        if rec.state == State.CANCELED:
            inst.cancel_future()
            return
        try:
            value = rec.result()
        except BaseException as err:  # the recorded failure, or a result not kept
            inst.set_exception(err)
        else:
            inst.set_result(value)

    # -- stopping --------------------------------------------------------------------
    def stop(self) -> None:
        """Stop claiming; hand back what this manager holds and has not started
        (unstarted instances are not canceled: another manager runs them)."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            # bounded: stop() also runs in a signal handler, on a thread the claimer may
            # be waiting for; what it has not handed back comes back when its lease lapses
            self._thread.join(2.0)
        given_back = []
        with self._lock:
            held = list(self.claimed.items())
        for u, inst in held:
            if self.engine.withdraw(inst):
                given_back.append(u)
                with self._lock:
                    self.claimed.pop(u, None)
        if given_back:
            try:
                self.store.release(self.node, given_back)
            except StoreError as e:  # they come back when this manager's lease lapses
                log.warning("jobengine: could not hand back %d instances: %s", len(given_back), e)

    def wait_produced(self, timeout: float | None) -> bool:
        """Wait until every instance enqueued here has settled."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                pending = [i for i in self.produced.values() if not i.done()]
            if not pending:
                return True
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                return False
            self._wake.set()
            _wait_futures(pending, timeout=left)

    def abandon_produced(self) -> None:
        """The manager stopped: Futures of instances still in the store get an error
        (the instances stay queued for other managers)."""
        with self._lock:
            pending = list(self.produced.values())
            self.produced.clear()
        for inst in pending:
            if not inst.done():
                inst.set_exception(ManagerStateError(
                    f"the manager stopped before {inst.uuid_str} ({inst.kind}) finished; it "
                    "stays queued in the store for the managers on it"))  # fmt: skip


def _unrunnable(*args: Any, **kwargs: Any) -> None:  # pragma: no cover - never called
    raise JobEngineError("this instance could not be made here")


__all__ = ["CREDITS_PER_WORKER", "ManagerLost", "SharedQueue"]
