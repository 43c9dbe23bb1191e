"""The dispatcher: ready instances -> workers with a free credit -> their task rings.

Owns: the credit policy (how many dispatched-but-unfinished attempts a worker may hold)
and the dealing of ready instances to workers.  It is handed the pool (worker slots and
their rings) and the job registry (kind ids, executor blobs); it never touches the
scheduler core (the heap), the handle table or the engine's lock; the loop that writes
tasks into the rings is compiled (_core.deal_tasks).  Never does: decide priority
(the engine pops what is ready from the core, in one place, and hands it over).  Runs
under the engine's turn: on the engine thread, or on a thread admitting a job to an
idle engine (engine.py: _deal_here).

Each worker holds at most `credits` instances, so none hoards work and a high-priority
arrival waits at most for the jobs already handed out.  Credits adapt to job length (an
EWMA of attempt run times): one for long jobs (strict priority), two or more for short
ones, up to MAX_CREDITS for tiny ones, so a worker finds its next job in its ring
instead of waiting for a round trip through the manager.

The dispatcher also sets the engine's nap (`nap_ns`): while a backlog waits, for
CPU-bound jobs of 50 us to 20 ms, the engine thread sleeps that long after a turn
instead of waking for every finished job, and hands out enough credits that no worker
runs dry meanwhile.  A wake-up costs the manager ~50-120 us on a busy 2-core machine
(context switch, cold caches, a turn); taken once per job it was the manager's whole
budget for 100 us jobs.  Napping, each turn handles about NAP_JOBS finished jobs;
results reach their Futures at most NAP_MAX_NS later, and a high-priority arrival waits
behind at most the nap, the usual margin and one GIL switch interval of work per worker
(~7 ms by default; 1 ms jobs get 9 credits).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from ._core import deal_tasks
from .job import Job
from .pool.channel import T_DEFINE, T_TASK, pack, write_record
from .pool.pool import Pool, WorkerSlot
from .registry import JobRegistry

# At most this many jobs in a worker's ring: for 100 us jobs, 32 let the workers run dry
# while the engine thread waited for the GIL (a submitting loop holds it up to a switch
# interval): speedup on 2 cores 1.42x at 32, 1.56x at 64 (NAP_JOBS 32, medians of 6).
MAX_CREDITS = 64
# Aim for this much queued work per worker: enough to hide the manager's reaction time,
# little enough that priority order stays tight.
QUEUED_WORK_NS = 200_000
# Jobs longer than this get one credit: strict priority order, and the round trip after
# each job (~0.1-0.3 ms here) costs them under 2%.  Shorter jobs get a second credit so
# the worker finds its next job waiting in its ring instead of idling through that trip.
LONG_JOB_NS = 20_000_000
# The nap: jobs at least this long (shorter ones keep the engine busy anyway, and it
# spins for them instead), aiming at NAP_JOBS finished jobs per turn, never longer
# than NAP_MAX_NS (the most a result waits for the manager to notice it).  A turn after
# a nap costs ~100 us on a core a worker just left (cold caches), whatever it handles:
# 8 jobs a turn cost the engine thread 14-15 us a 100 us job, 32 cost 8-9.5.
NAP_MIN_JOB_NS = 50_000
NAP_JOBS = 32
NAP_MAX_NS = 2_000_000


class Dispatcher:
    def __init__(self, pool: Pool, registry: JobRegistry, max_jobs_per_worker: int | None):
        self.pool = pool
        self.registry = registry
        self.max_jobs = max_jobs_per_worker
        self.credits = 1  # until the first attempt finishes: assume long jobs
        self.nap_ns = 0  # how long the engine may sleep after a turn while a backlog waits
        self.avg_ns = float(LONG_JOB_NS)  # moving average (EWMA) of attempt run time, ns
        self.seen = 0  # attempts observed

    def observe(self, run_ns: int) -> None:
        """Feed one attempt's run time into the credit estimate.  (_core.EventDrain does
        the same for the jobs it handles, step for step: keep them in agreement.)"""
        self.avg_ns = self.avg_ns * 0.9 + run_ns * 0.1
        self.seen += 1
        if self.seen & 15 == 0 or self.credits == 1:  # the credit count needs no more
            self.recompute()

    def recompute(self) -> None:
        """Credits and nap from the average run time."""
        avg = self.avg_ns
        if avg >= LONG_JOB_NS:
            self.credits, self.nap_ns = 1, 0
        elif avg < NAP_MIN_JOB_NS:
            self.credits = max(2, min(MAX_CREDITS, int(QUEUED_WORK_NS / (avg + 1.0))))
            self.nap_ns = 0
        else:
            workers = max(1, len(self.pool.workers))
            nap = int(min(NAP_MAX_NS, NAP_JOBS * avg / workers))
            # Enough for the nap, the usual margin and one GIL switch interval
            # (the engine thread waits up to that long for the GIL while the host
            # submits in a loop: 12% of the cores idled for 100 us jobs without
            # it), plus the job running now and one more.
            switch_ns = sys.getswitchinterval() * 1e9
            work = (QUEUED_WORK_NS + nap + switch_ns) / avg
            self.credits = max(2, min(MAX_CREDITS, int(work) + 2))
            self.nap_ns = nap

    def room(self) -> int:
        """How many more instances the workers can take now (free credits)."""
        credits = self.credits
        return sum(
            credits - len(w.inflight)
            for w in self.pool.workers.values()
            if not w.retiring and len(w.inflight) < credits
        )

    def deal(self, instances: list) -> tuple[list, list]:
        """Hand `instances` (best first) to workers with free credits, round-robin,
        least-loaded worker first, so the best ones start first wherever a worker is
        free.  Returns (those that found no room: their rings were full, [(instance,
        exception)] for those that could not be written: a payload or executor that
        cannot travel)."""
        credits = self.credits
        slots = sorted(
            (w for w in self.pool.workers.values() if not w.retiring and len(w.inflight) < credits),
            key=_load,
        )
        if not slots:
            return list(instances), []
        free = [credits - len(w.inflight) for w in slots]
        # A recycled worker counts each task it is sent (_send retires it at its
        # limit): with no kind ids given, deal_tasks sends every task through _send.
        kind_ids = self.registry.kind_ids() if self.max_jobs is None else {}
        requeue, failed, touched = deal_tasks(slots, free, instances, kind_ids, self._send, T_TASK)
        for w in touched:
            w.channel.tasks.publish()
        return requeue, failed

    def preload(self, jobs: Iterable[Job]) -> None:
        """Ship the executors of `jobs` to every worker now, ahead of their due time:
        a worker unpickles an executor (importing its module) when it receives it, so
        a delayed or crontab job's first run does not pay that at its tick."""
        registry = self.registry
        jobs = list(jobs)
        for w in self.pool.workers.values():
            if w.retiring:
                continue
            sent = False
            for job in jobs:
                kind_id = registry.kind_id(job)
                if kind_id not in w.kinds:
                    if not write_record(
                        w.channel.tasks, T_DEFINE, kind_id, 0, registry.executor_blob(job)
                    ):
                        break  # the ring is full: the executor goes with its first task
                    w.kinds.add(kind_id)
                    sent = True
            if sent:
                w.channel.tasks.publish()

    def _send(self, w: WorkerSlot, inst: Any) -> bool:
        job = inst.job
        registry = self.registry
        kind_id = registry.kind_id(job)
        ring = w.channel.tasks
        if kind_id not in w.kinds:
            if not write_record(ring, T_DEFINE, kind_id, 0, registry.executor_blob(job)):
                return False
            w.kinds.add(kind_id)
        attempt = inst.attempts + 1
        payload = inst.payload
        if len(payload) <= ring.max_payload:  # write_record's check, inlined: once a task
            sent = ring.write(T_TASK, inst.handle | attempt << 32, kind_id, payload)
        else:
            sent = write_record(ring, T_TASK, pack(inst.handle, attempt), kind_id, payload)
        if not sent:
            return False
        inst.attempts = attempt
        inst.worker = w.index
        w.inflight[inst.handle] = inst
        w.dispatched += 1
        limit = self.max_jobs
        if limit is not None and w.dispatched >= limit:
            # Recycle: it gets nothing more, finishes what it holds, exits; a fresh
            # worker takes its place (the engine's resize counts only non-retiring).
            self.pool.retire(w)
        return True


def _load(w: WorkerSlot) -> int:
    return len(w.inflight)


__all__ = ["Dispatcher"]
