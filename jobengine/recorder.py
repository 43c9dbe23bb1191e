"""The recorder: state transitions, their records, and the batches that carry them to the
store.

    any thread: transition / created / log / touch / store_op  (deques, no lock)
    flush():    one batch (seq, instances, states, logs, store ops) -> the writer
    writer:     MemoryStore   -> written at once, in the flushing thread
                Store.spec()  -> a writer process of its own (pool/writer.py)
                other stores  -> a writer thread in this process
    acks:       the writer says which seq it has written; futures are settled and
                handlers run only once the batch that explains them is written

Records are plain tuples (records.py: INSTANCE_ROW, STATE_ROW, LOG_ROW), state
records kept in a compiled buffer (_core.RecordBuffer) until the store writes them: the
memory store reads them in place, other stores get the tuples.  The engine thread
builds no record objects and never waits for store I/O.  Guarantees: when a
Future settles, the records up to its final state are in the store (lookups see the
whole history: read-your-writes); lookups from any thread first wait for everything
recorded before them to be written (sync).  While the store is unreachable the writer
holds what it cannot write; past MAX_PENDING records waiting, scheduling waits (user
threads only: the engine thread never blocks).

Owns: the records not yet written, the writer, and the callbacks (futures, handlers)
that wait for their batch.  Never does: decide a state (the engine and ticks do; this
module only validates and records the move).
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ._core import RecordBuffer, snapshots, take_all
from .errors import StoreError
from .instance import Instance
from .logbridge import to_job_logger
from .metrics import EngineStats
from .pool.channel import STATUS_OFFSET, T_INIT, T_STOP, T_TASK, Channel, write_record
from .pool.control import popen_shielded
from .pool.writer import STATUS, WriteLoop
from .signals import user_code
from .state import State, check_transition
from .stores.base import Store
from .stores.memory import MemoryStore

# Enum attribute access costs ~0.1 us (metaclass lookup); the hot paths use these.
_CREATED = State.CREATED
_SCHEDULED = State.SCHEDULED
_PROCESSING = State.PROCESSING
_FINAL_STATES = frozenset(s for s in State if s.name and s & State.FINAL and s != State.FINAL)

log = logging.getLogger("jobengine")

MAX_BATCH_RECORDS = 4096  # records per batch handed to the writer
FLUSH_EVERY = 16_384  # records recorded before a user thread flushes (nobody else does)
MAX_PENDING = 500_000  # records written-to-be past which scheduling waits
SYNC_TIMEOUT_S = 30.0  # how long a lookup waits for the store before StoreError


class Recorder:
    def __init__(self, store: Store, node: str, doorbell: Any = None, doorbell_fd: int = -1):
        self.store = store
        self.node = node
        self._doorbell = doorbell  # rung by writers when a batch is written
        self._doorbell_fd = doorbell_fd
        self._flush_lock = threading.Lock()  # keeps batches in order across flushers
        # state records (STATE_ROW's fields).  This buffer and _touched are read by
        # _core.ShortPath too: never rebind them.
        self._records = RecordBuffer()
        self._logs: deque[tuple] = deque()
        self._touched: deque[Instance] = deque()
        self._outcomes: dict[str, tuple] = {}  # uuid -> outcome of its final state
        self._store_ops: deque[tuple[str, tuple]] = deque()
        self._deferred: deque[tuple[Callable, tuple]] = deque()
        self._waiting: deque[tuple[int, Callable, tuple]] = deque()  # (seq, fn, args)
        self._writer: _Writer | None = None
        self._seq = 0  # the last batch handed to the writer
        self._batches: deque[tuple[int, int]] = deque()  # (seq, records) not yet written
        self._unwritten = 0  # records in those batches
        self._unflushed = 0  # records recorded since the last flush (approximate)
        self._space = threading.Condition()  # scheduling waits here when too much waits
        self.stats = EngineStats()  # counted as instances move (metrics.py)

    # -- recording (any thread) ------------------------------------------------------
    def transition(
        self, inst: Instance, state: State, time_ns: int, cause: str | None = None
    ) -> None:
        """Move inst (an Instance or a Run) to `state` (validated) and queue its record."""
        check_transition(inst.state, state)
        inst.state = state
        owner = inst.parent or inst  # a Run's records and handlers are its instance's
        if state is _PROCESSING:
            if inst.attempts <= 1:  # queue wait: from its due time to its first start
                due = inst.scheduled_ns if inst is owner else inst.due_ns
                self.stats.started(inst.job.kind, None if due is None else time_ns - due)
            else:
                self.stats.started(inst.job.kind, None)
        elif state in _FINAL_STATES:  # (`state & State.FINAL`, an IntFlag op, costs ~1 us)
            started = inst.processed_ns
            self.stats.ended(inst.job.kind, state, None if started is None else time_ns - started)
        self._records.append(owner.uuid_str, inst.job.kind, state._value_, time_ns,
                             inst.attempts, inst.worker, inst.run, cause)  # fmt: skip
        self._touched.append(owner)
        handler = inst.job.state_change_handler
        if handler is not None:
            self._deferred.append((self.call_handler, (handler, owner, state)))

    def next_run(
        self, inst: Instance, state: State, time_ns: int, cause: str | None = None
    ) -> None:
        """Record the state of a recurring instance's next run (inst.run), which has no
        Run yet: SCHEDULED when its tick is armed, CANCELED if the recurrence ends first."""
        self._records.append(inst.uuid_str, inst.job.kind, state._value_, time_ns, 0, None,
                             inst.run, cause)  # fmt: skip
        self._touched.append(inst)
        handler = inst.job.state_change_handler
        if handler is not None:
            self._deferred.append((self.call_handler, (handler, inst, state)))

    def outcome(self, inst: Instance, outcome: tuple) -> None:
        """inst (or its Run) ended: ("r", the result as the worker pickled it) or ("e",
        type, message, traceback), kept with the instance in the store (the latest run
        of a recurrence)."""
        self._outcomes[(inst.parent or inst).uuid_str] = outcome

    def store_op(self, name: str, *args: Any) -> None:
        """Call the store's method `name`(*args) with the next batch, after its records
        (a recurrence saved or deleted)."""
        self._store_ops.append((name, args))

    def touch(self, inst: Instance) -> None:
        """Write inst's instance row again with the next batch (a change without a
        state record of its own)."""
        self._touched.append(inst)

    def created(self, inst: Instance, time_ns: int) -> None:
        """Record a new instance: CREATED, then SCHEDULED, at the same instant.  Waits
        (the scheduling thread) while too much waits for the store."""
        inst.state = _SCHEDULED
        self._records.created(inst.uuid_str, inst.job.kind, time_ns, inst.run)
        self._touched.append(inst)
        self._unflushed += 2
        if self._unflushed > FLUSH_EVERY:
            # Nobody flushes yet (scheduled before start(), or the engine is behind):
            # keep what waits bounded, and wait while the store is behind.
            self._unflushed = 0
            self.flush()
            self._wait_for_space()
        handler = inst.job.state_change_handler
        if handler is not None:
            self.defer(self.call_handler, handler, inst, _CREATED)
            self.defer(self.call_handler, handler, inst, _SCHEDULED)

    def log(
        self,
        inst: Instance,
        level: int,
        time_ns: int,
        message: str,
        attempt: int | None = None,
    ) -> None:
        owner = inst.parent or inst
        attempt = inst.attempts if attempt is None else attempt
        self._logs.append((owner.uuid_str, inst.job.kind, int(level), time_ns, message, attempt))
        to_job_logger(owner.uuid_str, inst.job.kind, int(level), message, attempt)

    def defer(self, fn: Callable, *args: Any) -> None:
        """Run fn(*args) on the engine thread once what was recorded before is written."""
        self._deferred.append((fn, args))

    @staticmethod
    def call_handler(handler: Callable, *args: Any) -> None:
        """Run a user's handler; an exception it raises is logged, never propagated."""
        try:
            with user_code():
                handler(*args)
        except Exception:
            log.exception("jobengine: a handler raised; the engine goes on")

    # -- batches ---------------------------------------------------------------------
    def flush(self) -> int:
        """Hand everything recorded so far to the writer, in batches; return the seq of
        the last batch (what a caller waits for to read its own writes)."""
        with self._flush_lock:
            self._unflushed = 0
            touched = take_all(self._touched)
            states = self._records.take()
            logs = take_all(self._logs)
            ops = take_all(self._store_ops)
            if not (touched or states or logs or ops):
                return self._seq
            # the latest snapshot of each instance touched (compiled: per job, on the
            # engine thread)
            instances = snapshots(touched, self._outcomes)
            writer = self._writer or self._start_writer()
            n = MAX_BATCH_RECORDS
            while True:
                part_i, instances = instances[:n], instances[n:]
                part_s = states.take(n)
                if not writer.reads_buffers:
                    part_s = part_s.tuples()
                part_l, logs = logs[:n], logs[n:]
                last = not (instances or states or logs)
                self._seq += 1
                batch = (self._seq, part_i, part_s, part_l, ops if last else [])
                count = len(part_i) + len(part_s) + len(part_l) + (len(ops) if last else 0)
                self._batches.append((self._seq, count))
                self._unwritten += count
                writer.send(batch)
                if last:
                    return self._seq

    def detach_doorbell_fd(self) -> None:
        """The engine closed its doorbell's descriptor: a writer started from now on
        (records after the engine ended) is a thread, not a process given that fd."""
        self._doorbell_fd = -1

    def _start_writer(self) -> _Writer:
        store = self.store
        if isinstance(store, MemoryStore):
            self._writer = _InlineWriter(store)
        elif store.spec() is not None and self._doorbell_fd >= 0:
            self._writer = _ProcessWriter(store, self.node, self._doorbell, self._doorbell_fd)
        else:
            self._writer = _ThreadWriter(store, self.node, self._doorbell)
        return self._writer

    @property
    def acked(self) -> int:
        """The last batch the writer has written."""
        writer = self._writer
        return self._seq if writer is None else writer.acked()

    def run_deferred(self) -> bool:
        """Flush, then resolve futures and run handlers whose records are written.  One
        that raises is logged; the others still run.  (Engine thread.)"""
        seq = self.flush()
        waiting = self._waiting
        for fn, args in take_all(self._deferred):
            waiting.append((seq, fn, args))
        if not waiting:
            return False
        acked = self.acked
        ran = False
        while waiting and waiting[0][0] <= acked:
            _seq, fn, args = waiting.popleft()
            ran = True
            try:
                fn(*args)
            except Exception:
                log.exception("jobengine: settling an instance failed; the engine goes on")
        if ran:
            with self._space:
                self._space.notify_all()
        return ran

    @property
    def waiting(self) -> bool:
        """Whether callbacks wait for a batch to be written."""
        return bool(self._waiting)

    def pending(self) -> int:
        """Records handed to the writer and not yet written."""
        acked = self.acked
        with self._flush_lock:
            batches = self._batches
            while batches and batches[0][0] <= acked:
                self._unwritten -= batches.popleft()[1]
            return self._unwritten

    def sync(self, timeout: float = SYNC_TIMEOUT_S) -> None:
        """Wait until everything recorded before this call is in the store (StoreError
        naming the outage if the store stays unreachable for `timeout` seconds)."""
        seq = self.flush()
        writer = self._writer
        if writer is None or writer.acked() >= seq:
            return
        deadline = time.monotonic() + timeout
        pause = 0.0005
        while writer.acked() < seq:
            if time.monotonic() > deadline:
                raise StoreError(
                    f"the store has not taken what was recorded for {timeout:g} s "
                    f"({writer.describe()})"
                )
            time.sleep(pause)
            pause = min(0.01, pause * 2)

    def _wait_for_space(self) -> None:
        """Block the calling (scheduling) thread while more than MAX_PENDING records
        wait for the store."""
        if self.pending() <= MAX_PENDING:
            return
        log.warning("jobengine: %d records wait for the store; scheduling waits", self.pending())
        while self.pending() > MAX_PENDING:
            with self._space:
                self._space.wait(0.05)

    def outage(self) -> tuple[int, int]:
        """(records the writer holds now, outages so far)."""
        writer = self._writer
        return (0, 0) if writer is None else writer.outage()

    def close(self, timeout: float = SYNC_TIMEOUT_S) -> None:
        """Write everything, then stop the writer.  If the store stays unreachable for
        `timeout` seconds, what it holds is lost, and the error log says how much."""
        try:
            self.sync(timeout)
        except StoreError as e:
            log.error("jobengine: closing with records not written: %s", e)
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.stop(timeout)


# -- writers ---------------------------------------------------------------------------
class _Writer:
    # whether send() takes a batch's state records as the RecordBuffer (else the
    # recorder turns them into STATE_ROW tuples first)
    reads_buffers = False

    def send(self, batch: tuple) -> None:
        raise NotImplementedError

    def acked(self) -> int:
        raise NotImplementedError

    def outage(self) -> tuple[int, int]:
        return (0, 0)

    def describe(self) -> str:
        held, outages = self.outage()
        return f"{held} records held, {outages} outage(s) so far"

    def stop(self, timeout: float) -> None:
        return None


class _InlineWriter(_Writer):
    """MemoryStore: written in the flushing thread (a dict write cannot fail)."""

    def __init__(self, store: Store):
        self.store = store
        self._acked = 0
        # the stock write_batch reads the buffer in place; a subclass's gets tuples
        self.reads_buffers = type(store).write_batch is MemoryStore.write_batch

    def send(self, batch: tuple) -> None:
        seq, instances, states, logs, ops = batch
        self.store.write_batch(instances, states, logs)
        for name, args in ops:
            getattr(self.store, name)(*args)
        self._acked = seq

    def acked(self) -> int:
        return self._acked


class _ThreadWriter(_Writer):
    """A store that cannot be reopened elsewhere (one of yours): written from threads
    in this process, through the same WriteLoop as the writer process."""

    def __init__(self, store: Store, node: str, doorbell: Any):
        self._doorbell = doorbell
        self._loop = WriteLoop(store, node, self._on_status)
        self._acked = 0

    def _on_status(self) -> None:
        self._acked = self._loop.acked
        if self._doorbell is not None:
            self._doorbell.ring()

    def send(self, batch: tuple) -> None:
        while self._loop.full:  # (the recorder's MAX_PENDING usually stops callers first)
            time.sleep(0.01)
        self._loop.add(batch)

    def acked(self) -> int:
        return self._acked

    def outage(self) -> tuple[int, int]:
        return (self._loop.held if self._loop.outage_since else 0, self._loop.outages)

    def stop(self, timeout: float) -> None:
        self._loop.close(timeout)


class _ProcessWriter(_Writer):
    """A store spec() can describe: a writer process of its own (pool/writer.py), fed
    through a shared-memory ring, reporting through its channel's status word."""

    def __init__(self, store: Store, node: str, doorbell: Any, doorbell_fd: int):
        self._channel = Channel.create("store-writer", doorbell)
        ring = self._channel.tasks
        config = pickle.dumps((store.spec(), store.codec.secret, node), protocol=5)
        write_record(ring, T_INIT, 0, 0, config)
        ring.publish()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        fd = self._channel.fd
        self._proc = popen_shielded(
            # (-c, not -m: the package imports the module, and -m would run a second copy)
            [sys.executable, "-c", "from jobengine.pool.writer import main; main()", str(fd),
             str(doorbell_fd), str(os.getpid())],
            pass_fds=(fd, doorbell_fd),
            env=env,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self._channel.close()  # the process has its own copy; the mapping stays
        self._unsent: deque[bytes] = deque()

    def send(self, batch: tuple) -> None:
        self._unsent.append(pickle.dumps(batch, protocol=5))
        self._push()

    def _push(self) -> None:
        ring = self._channel.tasks
        unsent = self._unsent
        wrote = False
        while unsent:
            if not write_record(ring, T_TASK, 0, 0, unsent[0]):
                break  # the ring is full: the writer is behind; the rest goes next time
            unsent.popleft()
            wrote = True
        if wrote:
            ring.publish()

    def _status(self) -> tuple[int, int, int, int]:
        if self._unsent:
            self._push()
        return STATUS.unpack_from(self._channel.mm, STATUS_OFFSET)

    def acked(self) -> int:
        return self._status()[0]

    def outage(self) -> tuple[int, int]:
        _acked, held, since, outages = self._status()
        return (held if since else 0, outages)

    def stop(self, timeout: float) -> None:
        ring = self._channel.tasks
        deadline = time.monotonic() + timeout
        while self._unsent and time.monotonic() < deadline:
            self._push()
            time.sleep(0.01)
        while not ring.push(T_STOP, 0, 0) and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            self._proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("jobengine: the store writer did not finish in %.0f s; stopping it",
                      timeout)  # fmt: skip
            self._proc.kill()
            self._proc.wait()


__all__ = ["MAX_PENDING", "Recorder"]
