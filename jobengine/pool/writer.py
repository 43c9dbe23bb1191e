"""The store writer: batches of records -> the store, off the engine's thread.

    manager (engine side of recorder.py)          writer process (this module's main)
      tasks  Ring: T_INIT (store spec, secret)  -->  opens its own connection
                   T_TASK (a pickled batch)     -->  merges what has arrived, writes it
                   T_STOP                       -->  writes what it holds, exits
      status word: acked seq, records held, outage  <--  after every write
      doorbell                                  <--  rung after every write

A store that can say how to reopen it (Store.spec) is written by a process of its own,
so a slow or unreachable store never holds up the engine, nor the supervisor's timeouts;
any other store by a thread in the manager's process, through the same WriteLoop.

WriteLoop: one write per merged batch (one round trip in the built-in stores).  When
the store fails it logs the outage once, holds the batches (up to MAX_HELD_RECORDS,
then it stops taking more, and the manager's scheduling waits), retries with backoff,
reconnects, and logs once more when the outage ends, with how many records it held.
Every batch carries (node, seq): a store applies a batch at most once even if a write
that failed on the wire had reached it.  Retention (Store.apply_retention) runs here
too, every RETENTION_EVERY_S.

Owns: the writer's store connection, its held batches and outage state.  Never does:
decide what to record, or touch an instance.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pickle
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import StoreError
from ..signals import start_thread

log = logging.getLogger("jobengine")

MAX_HELD_RECORDS = 500_000  # about 50-100 MB: past this the manager's scheduling waits
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 2.0
RETENTION_EVERY_S = 1.0
# The writer's status, in its channel's status area: acked seq, records held now,
# outage start (Unix ns, 0 when none), outages so far.
STATUS = struct.Struct("=QQQQ")


def merge(batches: list[tuple]) -> tuple:
    """Batches (seq, instances, states, logs, ops) -> one, in order: the latest snapshot
    of each instance, every record, every store op after the records."""
    if len(batches) == 1:
        return batches[0]
    instances: dict[str, tuple] = {}
    states: list = []
    logs: list = []
    ops: list = []
    for _seq, ins, sts, lgs, ops_ in batches:
        for row in ins:
            old = instances.pop(row[0], None)
            if old is not None and row[9] is None and old[9] is not None:
                row = (*row[:9], old[9])  # keep an outcome a later snapshot lacks
            instances[row[0]] = row
        states += sts
        logs += lgs
        ops += ops_
    return batches[-1][0], list(instances.values()), states, logs, ops


def records_in(batch: tuple) -> int:
    return len(batch[1]) + len(batch[2]) + len(batch[3]) + len(batch[4])


class WriteLoop:
    """Writes batches to `store` in order, retrying through outages.  `node` names the
    manager the batches come from (with each batch's seq: at most once).

    Two threads: a preparer merges what has arrived and encodes it (Store.prepare_batch,
    CPU) while a writer puts the previous one on the wire (Store.write_prepared, mostly
    waiting for the server), so the store's work and ours overlap instead of taking
    turns.  on_status() is called (from the writer thread) after every write and when an
    outage begins."""

    def __init__(self, store: Any, node: str, on_status: Callable[[], None] | None = None):
        self.store = store
        self.node = node
        self.on_status = on_status or (lambda: None)
        self._cond = threading.Condition()
        self._pending: list[tuple] = []  # batches not yet prepared
        self._ready: tuple | None = None  # (seq, prepared, ops, records) to write next
        self._preparing = False  # the preparer holds batches taken from _pending
        self._writing = False  # the writer holds one taken from _ready
        self.held = 0  # records not yet written (pending, prepared, or being written)
        self.acked = 0  # the highest seq written
        self.outage_since = 0  # time.time_ns() the current outage began, or 0
        self.outages = 0
        self._closing = False
        self._abandon = False
        self._delay = RETRY_FIRST_S
        self._next_retention = time.monotonic() + RETENTION_EVERY_S
        self._threads = [
            threading.Thread(target=self._prepare_loop, name="jobengine-prepare", daemon=True),
            threading.Thread(target=self._write_loop, name="jobengine-write", daemon=True),
        ]
        for t in self._threads:
            start_thread(t)

    def add(self, batch: tuple) -> None:
        with self._cond:
            self._pending.append(batch)
            self.held += records_in(batch)
            self._cond.notify_all()

    @property
    def full(self) -> bool:
        """Whether to stop taking batches until some are written."""
        return self.held >= MAX_HELD_RECORDS

    def wait_for_room(self, timeout: float) -> None:
        """Block while full (at most `timeout` seconds)."""
        with self._cond:
            if self.held >= MAX_HELD_RECORDS:
                self._cond.wait(timeout)

    @property
    def idle(self) -> bool:
        """Whether everything added has been written."""
        return self.held == 0

    def close(self, timeout: float | None = None) -> bool:
        """Write what is held, then stop the threads; give up (what is held is lost)
        after `timeout` seconds.  Returns whether everything was written."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            with self._cond:
                self._abandon = True
                self._cond.notify_all()
            return False
        return True

    # -- the preparer --------------------------------------------------------------------
    def _prepare_loop(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while not self._abandon and not (self._pending and self._ready is None):
                    if self._closing and not self._pending and self._ready is None:
                        cond.notify_all()
                        return
                    if self._closing and not self._pending and not self._writing:
                        cond.notify_all()
                        return
                    cond.wait(0.5)
                if self._abandon:
                    return
                batches, self._pending = self._pending, []
                self._preparing = True
            seq, instances, states, logs, ops = batch = merge(batches)
            try:
                prepared = self.store.prepare_batch(instances, states, logs, (self.node, seq))
            except Exception:  # a record this store cannot encode: say so, do not wedge
                log.exception("jobengine: cannot encode a batch of %d records for the store; "
                              "it is dropped", records_in(batch))  # fmt: skip
                prepared = None
            with cond:
                self._ready = (seq, prepared, ops, records_in(batch))
                self._preparing = False
                cond.notify_all()

    # -- the writer ----------------------------------------------------------------------
    def _write_loop(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while self._ready is None and not self._abandon:
                    if self._closing and not self._pending and not self._preparing:
                        return
                    cond.wait(RETENTION_EVERY_S)
                    if self._ready is None:
                        break
                item, self._ready = self._ready, None  # the preparer may go on meanwhile
                self._writing = item is not None
                cond.notify_all()
                if self._abandon:
                    return
            if item is None:
                self._retain()
                continue
            seq, prepared, ops, n = item
            while not self._write(prepared, ops):
                with cond:
                    if self._abandon:
                        return
                    cond.wait(self._delay)
                    self._delay = min(RETRY_MAX_S, self._delay * 2)
            with cond:
                self._writing = False
                self.held -= n
                self.acked = seq
                cond.notify_all()
            self.on_status()
            self._retain()

    def _write(self, prepared: Any, ops: list) -> bool:
        try:
            if prepared is not None:
                self.store.write_prepared(prepared)
            for name, args in ops:
                getattr(self.store, name)(*args)
        except Exception as e:
            if not self.outage_since:
                self.outage_since = time.time_ns()
                self.outages += 1
                log.warning(
                    "jobengine: cannot write to the store (%s: %s); holding %d records and "
                    "retrying",
                    type(e).__name__,
                    e,
                    self.held,
                )
                self.on_status()
            with contextlib.suppress(Exception):
                self.store.reconnect()
            return False
        if self.outage_since:
            took = (time.time_ns() - self.outage_since) / 1e9
            log.warning(
                "jobengine: the store is back after %.1f s; %d records held meanwhile are written",
                took,
                self.held,
            )
            self.outage_since = 0
        self._delay = RETRY_FIRST_S
        return True

    def _retain(self) -> None:
        if self.store.max_instances is None and self.store.max_age is None:
            return
        now = time.monotonic()
        if now < self._next_retention:
            return
        self._next_retention = now + RETENTION_EVERY_S
        try:
            self.store.apply_retention(time.time_ns())
        except Exception:  # the next period tries again
            log.warning("jobengine: applying the store's retention failed", exc_info=True)


# -- the writer process ----------------------------------------------------------------
def _run(channel_fd: int, doorbell_fd: int, parent_pid: int) -> int:
    import setproctitle

    from .channel import (
        STATUS_OFFSET,
        T_INIT,
        T_STOP,
        T_TASK,
        TAG_MASK,
        Channel,
        attach_doorbell,
        read_payload,
    )
    from .control import unshield
    from .supervisor import die_with_parent

    stop = False

    def on_parent_death(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True  # write what we hold, then exit

    # The manager's death reaches us as SIGUSR1 (PR_SET_PDEATHSIG); SIGINT and SIGTERM
    # sent to the whole process group are the manager's to act on: it tells us when
    # to stop, once everything it recorded has reached us.
    signal.signal(signal.SIGUSR1, on_parent_death)
    unshield()
    die_with_parent(parent_pid, signal.SIGUSR1)
    setproctitle.setproctitle(f"jobengine store writer (manager pid {parent_pid})")
    # Every batch is thousands of short-lived tuples and no cycles: at the default
    # threshold the collector ran every 700 of them and took a quarter of this process
    # (PostgreSQL, 10 -> 7.3 us of CPU per job with this).
    gc.set_threshold(100_000, 20, 100)
    _mm, doorbell = attach_doorbell(doorbell_fd)
    channel = Channel(channel_fd, doorbell, "worker")
    tasks = channel.tasks
    loop: WriteLoop | None = None

    def publish() -> None:
        STATUS.pack_into(channel.mm, STATUS_OFFSET, loop.acked, loop.held, loop.outage_since,
                         loop.outages)  # fmt: skip
        doorbell.ring()

    while not stop:
        records = [] if loop is not None and loop.full else tasks.read_many(256)
        for tag, _a, _b, payload in records:
            kind = tag & TAG_MASK
            if kind == T_TASK:
                loop.add(pickle.loads(read_payload(tag, payload)))
            elif kind == T_INIT:
                from ..stores import open_store

                spec, secret, node = pickle.loads(read_payload(tag, payload))
                store = _open_patiently(open_store, spec)
                store.use_secret(secret)
                loop = WriteLoop(store, node, publish)
            elif kind == T_STOP:
                stop = True
        if loop is not None and loop.full:
            loop.wait_for_room(0.5)  # (not on the ring: it has data, it would not wait)
        elif not records:
            tasks.wait(0.5)
    # Told to stop (or the manager died): write what we hold; an outage that outlasts
    # the manager's patience ends with the manager killing us.
    if loop is None:
        return 0
    if not loop.close(None if os.getppid() == parent_pid else 60.0):
        log.error("jobengine: the manager is gone; %d records could not be written", loop.held)
        return 1
    loop.store.close()
    return 0


def _open_patiently(open_store: Any, spec: dict) -> Any:
    """The manager opened this store a moment ago: a failure now is a blip (a server
    restarting, a lock held by another process creating its tables): retry for a while."""
    delay, give_up = 0.05, time.monotonic() + 60.0
    while True:
        try:
            return open_store(**spec)
        except StoreError as e:
            if time.monotonic() + delay > give_up:
                raise
            log.warning("jobengine: the store writer cannot open the store yet (%s); retrying", e)
            time.sleep(delay)
            delay = min(2.0, delay * 2)


def main() -> None:
    """python -c "from jobengine.pool.writer import main; main()" CHANNEL_FD DOORBELL_FD
    MANAGER_PID (the recorder starts it so)."""
    channel_fd, doorbell_fd, parent_pid = (int(x) for x in sys.argv[1:4])
    logging.basicConfig(format="%(message)s")
    sys.exit(_run(channel_fd, doorbell_fd, parent_pid))


if __name__ == "__main__":
    main()
