"""The dispatcher: due timers -> ready heap -> workers with a free credit.

Priority is decided in one place, the compiled core's ready heap.  Each worker holds at
most `credits` instances (dispatched, not finished), so none hoards work and a
high-priority arrival waits at most for the jobs already handed out.  Credits adapt to
job length (an EWMA of attempt run times): one for long jobs (strict priority), two or
more for short ones, up to MAX_CREDITS for tiny ones, so a worker finds its next job in
its ring instead of waiting for a round trip through the manager.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .pool.channel import T_DEFINE, T_TASK, pack, write_record

if TYPE_CHECKING:
    from .manager import Manager
    from .pool.pool import WorkerSlot

MAX_CREDITS = 32
# Aim for this much queued work per worker: enough to hide the manager's reaction time,
# little enough that priority order stays tight.
QUEUED_WORK_NS = 200_000
# Jobs longer than this get one credit: strict priority order, and the round trip after
# each job (~0.1-0.3 ms here) costs them under 2%.  Shorter jobs get a second credit so
# the worker finds its next job waiting in its ring instead of idling through that trip.
LONG_JOB_NS = 20_000_000


class Dispatcher:
    def __init__(self, manager: Manager):
        self.m = manager
        self.credits = 1  # until the first attempt finishes: assume long jobs
        self._avg_ns = float(LONG_JOB_NS)  # EWMA of attempt run time
        self._seen = 0

    @property
    def avg_ns(self) -> float:
        """Moving average of attempt run time (ns)."""
        return self._avg_ns

    def observe(self, run_ns: int) -> None:
        """Feed one attempt's run time into the credit estimate."""
        avg = self._avg_ns = self._avg_ns * 0.9 + run_ns * 0.1
        self._seen += 1
        if self._seen & 15 == 0 or self.credits == 1:  # the credit count needs no more
            if avg >= LONG_JOB_NS:
                self.credits = 1
            else:
                self.credits = max(2, min(MAX_CREDITS, int(QUEUED_WORK_NS / (avg + 1.0))))

    def dispatch(self) -> bool:
        m = self.m
        workers = [
            w for w in m._pool.workers.values() if not w.retiring and len(w.inflight) < self.credits
        ]
        if not workers:
            return False
        credits = self.credits
        room = sum(credits - len(w.inflight) for w in workers)
        with m._lock:
            if m._inbox:
                m._take_inbox()
            handles = m._core.pop_ready(m._clock.monotonic_ns(), room)
            if not handles:
                return False
            by_handle = m._by_handle
            instances = [by_handle[h] for h in handles]
            late = []
            if not all(i._counted for i in instances):  # recurring instances and Runs
                # a tick: dispatch a Run for it; a run that waited too long: skip it
                instances = [r for i in instances if (r := m._fire(i) if i._recurring else i)]
                late = [i for i in instances if i._parent is not None and m._too_late(i)]
                if late:
                    instances = [i for i in instances if i not in late]
        for run in late:
            m._skip_late_run(run)
        # Deal the instances out round-robin, least-loaded worker first: the best
        # ones start first, wherever a worker is free.
        slots = sorted(workers, key=_load)
        free = [credits - len(w.inflight) for w in slots]
        touched = set()
        requeue = []
        k = 0
        n = len(slots)
        for inst in instances:
            for _ in range(n):
                if free[k]:
                    break
                k = (k + 1) % n
            w = slots[k]
            if not free[k] or not self._send(w, inst):
                requeue.append(inst)
                continue
            free[k] = 0 if w.retiring else free[k] - 1
            touched.add(w)
            k = (k + 1) % n
        for w in touched:
            w.channel.tasks.publish()
        if requeue:
            with m._lock:
                for inst in requeue:
                    m._core.add(inst._handle, 0, inst.priority)
        return True

    def preload(self, jobs: set) -> None:
        """Ship the executors of `jobs` to every worker now, ahead of their due time:
        a worker unpickles an executor (importing its module) when it receives it, so
        a delayed or crontab job's first run does not pay that at its tick."""
        m = self.m
        for w in m._pool.workers.values():
            if w.retiring:
                continue
            sent = False
            for job in jobs:
                kind_id = m._kind_ids[job]
                if kind_id not in w.kinds:
                    if not write_record(
                        w.channel.tasks, T_DEFINE, kind_id, 0, m._executor_blob(job)
                    ):
                        break  # the ring is full: the executor goes with its first task
                    w.kinds.add(kind_id)
                    sent = True
            if sent:
                w.channel.tasks.publish()

    def _send(self, w: WorkerSlot, inst) -> bool:
        m = self.m
        job = inst.job
        kind_id = m._kind_ids[job]
        ring = w.channel.tasks
        if kind_id not in w.kinds:
            if not write_record(ring, T_DEFINE, kind_id, 0, m._executor_blob(job)):
                return False
            w.kinds.add(kind_id)
        attempt = inst.attempts + 1
        if not write_record(ring, T_TASK, pack(inst._handle, attempt), kind_id, inst._payload):
            return False
        inst.attempts = attempt
        inst.worker = w.index
        w.inflight[inst._handle] = inst
        w.dispatched += 1
        limit = m._max_jobs
        if limit is not None and w.dispatched >= limit:
            # Recycle: it gets nothing more, finishes what it holds, exits; a fresh
            # worker takes its place (Manager._apply_resize counts only non-retiring).
            m._pool.retire(w)
        return True


def _load(w: WorkerSlot) -> int:
    return len(w.inflight)
