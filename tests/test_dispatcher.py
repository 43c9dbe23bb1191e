"""The dispatcher's credit and nap policy, and what it buys: fewer engine wake-ups per
job for CPU-bound batches, with no lone result held back."""

import os
import sys
import threading
import time

import jobs
import pytest
from conftest import all_workers_up, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st

from jobengine import Job, Manager, SerializationError, scheduler
from jobengine import engine as engine_module
from jobengine._core import RING_HEADER, Ring, deal_tasks
from jobengine.clock import VirtualClock
from jobengine.pool.channel import FLAG_LARGE, T_TASK
from jobengine.pool.pool import WorkerSlot
from jobengine.scheduler import (
    LONG_JOB_NS,
    MAX_CREDITS,
    NAP_MAX_NS,
    NAP_MIN_JOB_NS,
    QUEUED_WORK_NS,
    Dispatcher,
)


class _Pool:
    def __init__(self, workers: int):
        self.workers = dict.fromkeys(range(workers))


def _learned(run_ns: int, workers: int = 2) -> Dispatcher:
    d = Dispatcher(_Pool(workers), None, None)
    for _ in range(64):
        d.observe(run_ns)
    return d


def test_long_jobs_get_one_credit_and_no_nap():
    d = _learned(LONG_JOB_NS * 2)
    assert (d.credits, d.nap_ns) == (1, 0)


def test_tiny_jobs_get_credits_but_no_nap():
    d = _learned(5_000)
    assert d.credits >= 2
    assert d.nap_ns == 0


@pytest.mark.parametrize("workers", [1, 2, 8, 64])
@pytest.mark.parametrize(
    "run_ns", [NAP_MIN_JOB_NS, 100_000, 300_000, 1_000_000, 5_000_000, LONG_JOB_NS - 1]
)
def test_a_worker_holds_enough_work_to_outlast_the_nap(run_ns, workers):
    d = _learned(run_ns, workers)
    assert 0 < d.nap_ns <= NAP_MAX_NS
    assert 2 <= d.credits <= MAX_CREDITS
    # besides the job it runs, what a worker holds lasts through the nap and one GIL
    # switch interval (the engine thread may wait that long while the host submits),
    # unless that would take more than MAX_CREDITS
    held = (d.credits - 1) * d.avg_ns
    switch_ns = sys.getswitchinterval() * 1e9
    assert held >= d.nap_ns
    assert held >= d.nap_ns + switch_ns or d.credits == MAX_CREDITS
    # and no more than that (the README's bound on what a high-priority arrival waits
    # behind): beyond the running job and one more, at most margin + nap + switch
    assert (d.credits - 2) * d.avg_ns <= QUEUED_WORK_NS + d.nap_ns + switch_ns


def test_the_engine_naps_only_while_work_waits_for_a_credit(tmp_path):
    gate = tmp_path / "gate"
    with Manager(1) as m:
        engine = m._engine
        first = m.submit(jobs.hold_until, str(gate), "first")
        wait_for(lambda: first.running())
        engine.dispatcher.nap_ns = 1_000_000
        assert engine._nap() == 0.0  # one job, nothing waiting: its result is not held
        waiting = [m.submit(jobs.add, i, 1) for i in range(3)]  # one credit: they wait
        engine.dispatcher.nap_ns = 1_000_000
        assert engine._nap() == pytest.approx(0.001)
        gate.write_text("go")
        assert first.result(timeout=10) == "first"
        assert [f.result(timeout=10) for f in waiting] == [1, 2, 3]
        wait_for(lambda: not engine.core.ready_len and not engine.inbox)
        engine.dispatcher.nap_ns = 1_000_000
        assert engine._nap() == 0.0


def test_no_nap_under_a_virtual_clock():
    clock = VirtualClock()
    with Manager(1, clock=clock) as m:
        engine = m._engine
        engine.inbox.append(object())  # as if work waited
        engine.dispatcher.nap_ns = 1_000_000
        try:
            assert engine._nap() == 0.0
        finally:
            engine.inbox.clear()


def _turns_per_job(m: Manager, n: int, seconds: float) -> float:
    engine = m._engine
    before = engine._turns_begun
    futures = [m.submit(jobs.spin, seconds, i) for i in range(n)]
    assert [f.result(timeout=60) for f in futures] == list(range(n))
    return (engine._turns_begun - before) / n


def test_a_cpu_bound_batch_wakes_the_engine_for_several_jobs_at_once():
    with Manager(2) as m:
        _turns_per_job(m, 64, 200e-6)  # the dispatcher learns the job length
        assert m._engine.dispatcher.nap_ns > 0
        turns = _turns_per_job(m, 400, 200e-6)
    # one turn per job or more without the nap (each finished job woke the engine)
    assert turns < 0.4  # ~0.1 measured; 0.7-0.8 with the nap off


def test_back_to_back_jobs_cost_one_engine_turn_each(monkeypatch):
    # Without the nap: a worker publishes a job's outcome with the next job's start,
    # one wake-up for both, and the engine does not turn again only to find nothing
    # (two or more turns per job before).
    monkeypatch.setattr(scheduler, "NAP_MIN_JOB_NS", LONG_JOB_NS)
    with Manager(1) as m:
        _turns_per_job(m, 20, 1e-3)
        assert m._engine.dispatcher.nap_ns == 0
        assert m._engine.dispatcher.credits >= 2
        turns = _turns_per_job(m, 100, 1e-3)
    assert turns < 1.6


def test_results_are_not_held_back_once_the_backlog_is_gone():
    with Manager(1) as m:
        _turns_per_job(m, 40, 300e-6)
        assert m._engine.dispatcher.nap_ns > 0
        # a lone job: the engine wakes for its outcome, it does not nap
        lags = []
        for _ in range(20):
            f = m.submit(jobs.spin, 300e-6)
            f.result(timeout=10)
            lags.append(time.time_ns() - f.completed_ns)
        lags.sort()
    assert lags[len(lags) // 2] < NAP_MAX_NS / 2  # napping, ~NAP_MAX_NS


# -- an idle engine: the admitting thread deals a new job itself --------------------------
def _idle(m):
    engine = m._engine
    wait_for(all_workers_up(m))
    wait_for(lambda: not engine.has_pending() and not len(engine.core))
    # and its thread between turns (it may still be settling the last job's Future:
    # the submitting thread deals only while nobody holds the turn)
    wait_for(lambda: not engine._turn.locked())


def _dealing_threads(monkeypatch, engine) -> list[str]:
    """Names of the threads that run the engine's _dispatch from now on."""
    seen = []
    real = engine._dispatch

    def spy():
        seen.append(threading.current_thread().name)
        return real()

    monkeypatch.setattr(engine, "_dispatch", spy)
    return seen


def test_a_job_on_an_idle_pool_is_dealt_before_submit_returns(monkeypatch):
    # One thread wake-up (the engine thread's) less between submit and start.
    with Manager(2) as m:
        m.submit(jobs.noop).result(timeout=30)
        for schedule in (
            lambda: m.submit(jobs.slow_value, 0.2, "executor"),
            lambda: m.schedule_job(Job("idle-plain", jobs.slow_value), args=(0.2, "go-job")),
            lambda: m.submit_many(jobs.slow_value, [0.2], ["many"])[0],
        ):
            _idle(m)
            seen = _dealing_threads(monkeypatch, m._engine)
            f = schedule()
            # in a worker's ring already: the engine thread never ran for it
            assert f.attempts == 1 and f.worker is not None
            assert seen == [threading.current_thread().name]
            assert f.result(timeout=30) in ("executor", "go-job", "many")
            monkeypatch.undo()


def test_a_busy_engine_deals_on_its_own_thread(monkeypatch):
    with Manager(2) as m:
        _idle(m)
        first = m.submit(jobs.slow_value, 0.5, 1)  # the engine is no longer idle
        seen = _dealing_threads(monkeypatch, m._engine)
        later = [m.submit(jobs.noop) for _ in range(20)]
        delayed = m.schedule_job(Job("idle-later", jobs.noop), schedule_after=0.05)
        for f in [first, *later, delayed]:
            f.result(timeout=30)
        assert seen and threading.current_thread().name not in seen


def test_many_threads_submitting_to_an_idle_pool_lose_nothing():
    # Submitters race each other and the engine thread for the turn; every job runs
    # once, with its own result, and the engine ends idle.
    with Manager(2) as m:
        _idle(m)
        results = {}

        def submitter(t):
            for i in range(150):
                if i % 10 == 0:
                    time.sleep(0.002)  # the pool goes idle now and then
                results[(t, i)] = m.submit(jobs.slow_value, 0, (t, i))

        threads = [threading.Thread(target=submitter, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert all(f.result(timeout=60) == key for key, f in results.items())
        assert len(results) == 600
        m.wait()
        assert not m._engine.has_pending() and m._engine._active == 0


# -- the compiled deal (_core.deal_tasks) against the Python loop it replaced -----------
class _Channel:
    def __init__(self, mem: bytearray):
        self.tasks = Ring(mem, None, True)


class _Registry:
    """kind ids and executor blobs, as JobRegistry hands them to the dispatcher."""

    def __init__(self, jobs_: list):
        self.ids = {job: i + 1 for i, job in enumerate(jobs_)}

    def kind_id(self, job):
        return self.ids[job]

    def kind_ids(self):
        return self.ids

    def executor_blob(self, job):
        if job.kind == "cannot-travel":
            raise SerializationError("its executor cannot be pickled")
        return b"executor " + job.kind.encode()


class _Unit:  # what the dispatcher reads and writes of an instance
    def __init__(self, handle, job, payload, attempts):
        self.handle, self.job, self.payload, self.attempts = handle, job, payload, attempts
        self.worker = None


RING_SIZE = RING_HEADER + 16 * 1024  # max_payload 4 KiB: a few tasks fill it
DEAL_JOBS = [Job(k, jobs.noop) for k in ("a", "b", "cannot-travel")]


def _reference_deal(d: Dispatcher, slots: list, free: list, instances: list) -> tuple:
    # Dispatcher.deal's loop as it was in Python, every task through _send
    touched = set()
    requeue = []
    failed = []
    k = 0
    n = len(slots)
    for inst in instances:
        for _ in range(n):
            if free[k]:
                break
            k = (k + 1) % n
        w = slots[k]
        try:
            sent = free[k] and d._send(w, inst)
        except Exception as e:  # only this instance fails, never the dispatch
            failed.append((inst, e))
            continue
        if not sent:
            requeue.append(inst)
            continue
        free[k] = 0 if w.retiring else free[k] - 1
        touched.add(w)
        k = (k + 1) % n
    return requeue, failed, touched


def _deal(how: str, spec: dict) -> dict:
    """how: "compiled" (the common task written by deal_tasks), "via-send" (deal_tasks
    with no kind ids: every task through _send, as for recycled workers), "reference"."""
    pool = _Pool(0)
    pool.workers = {}
    slots = []
    for i, (inflight, known, filler) in enumerate(spec["workers"]):
        w = WorkerSlot(i, _Channel(bytearray(RING_SIZE)))
        for h in range(inflight):
            w.inflight[1000 + h] = None
        w.kinds = {k + 1 for k in known}  # kind ids whose executor it has
        for _ in range(filler):  # what earlier turns left in its ring
            w.channel.tasks.write(99, 0, 0, b"x" * 3000)
        pool.workers[i] = w
        slots.append(w)
    registry = _Registry(DEAL_JOBS)
    d = Dispatcher(pool, registry, None)
    d.credits = spec["credits"]
    units = [
        _Unit(h, DEAL_JOBS[j], b"p" * size if size >= 0 else None, attempts)
        for h, (j, size, attempts) in enumerate(spec["units"])
    ]
    slots = sorted((w for w in slots if len(w.inflight) < d.credits), key=lambda w: len(w.inflight))
    free = [d.credits - len(w.inflight) for w in slots]
    if how == "compiled":
        requeue, failed, touched = deal_tasks(slots, free, units, registry.ids, d._send, T_TASK)
    elif how == "via-send":
        requeue, failed, touched = deal_tasks(slots, free, units, {}, d._send, T_TASK)
    elif not slots:  # deal() returns before its loop (deal_tasks copes)
        requeue, failed, touched = list(units), [], set()
    else:
        requeue, failed, touched = _reference_deal(d, slots, free, units)
    rings = {}
    for w in pool.workers.values():
        w.channel.tasks.publish()
        rings[w.index] = _records(w)
    return {
        "requeue": [u.handle for u in requeue],
        "failed": [(u.handle, type(e).__name__, str(e)) for u, e in failed],
        "touched": sorted(w.index for w in touched),
        "units": [(u.attempts, u.worker) for u in units],
        "workers": [
            (sorted(k for k in w.inflight if k < 1000), w.dispatched, sorted(w.kinds))
            for w in pool.workers.values()
        ],
        "free": free,
        "rings": rings,
    }


def _records(w) -> list:
    ring = w.channel.tasks
    out = []
    for tag, a, b, payload in ring.read_many():
        if tag & FLAG_LARGE:  # spilled: the file's content, then the file goes
            path = payload.decode()
            with open(path, "rb") as f:
                payload = f.read()
            os.unlink(path)
        out.append((tag & ~FLAG_LARGE, a, b, payload))
    return out


deal_specs = st.fixed_dictionaries(
    {
        "credits": st.integers(1, 6),
        # per worker: attempts it holds already, the kinds it knows, records in its ring
        "workers": st.lists(
            st.tuples(st.integers(0, 5), st.sets(st.integers(0, 2)), st.integers(0, 5)),
            min_size=1,
            max_size=3,
        ),
        # per instance: its job, payload size (-1: not bytes; over 4 KiB: spilled), attempts
        "units": st.lists(
            st.tuples(
                st.integers(0, 2),
                st.sampled_from([0, 10, 2_000, 4_000, 5_000, -1]),
                st.integers(0, 2),
            ),
            max_size=12,
        ),
    }
)


@settings(max_examples=300, deadline=None)
@given(deal_specs)
def test_the_compiled_deal_does_what_the_python_loop_does(spec):
    # round-robin order, credits, full rings (requeued), executors sent first, spilled
    # payloads, a payload or executor that cannot travel (failed): the same everywhere
    reference = _deal("reference", spec)
    assert _deal("compiled", spec) == reference
    assert _deal("via-send", spec) == reference


def test_the_common_task_takes_the_compiled_write():
    spec = {"credits": 2, "workers": [(0, {0}, 0)], "units": [(0, 10, 0), (0, 10, 1)]}
    sends = []
    original = Dispatcher._send
    try:
        Dispatcher._send = lambda self, w, inst: sends.append(inst) or original(self, w, inst)
        out = _deal("compiled", spec)
    finally:
        Dispatcher._send = original
    assert sends == []  # both written by deal_tasks itself
    assert [r[1] for r in out["rings"][0]] == [0 | 1 << 32, 1 | 2 << 32]


# -- making way for the engine while a worker waits for work (Engine.make_way) ------------
def _a_worker_parked(engine) -> bool:
    return any(w.channel.tasks.consumer_parked for w in engine.pool.workers.values())


def test_submit_makes_way_for_the_engine_while_a_worker_waits_in_the_nap_regime(
    tmp_path, monkeypatch
):
    gate = tmp_path / "gate"
    with Manager(2) as m:
        engine = m._engine
        wait_for(all_workers_up(m))
        busy = m.submit(jobs.hold_until, str(gate), "busy")  # the engine is not idle
        wait_for(lambda: busy.running())
        wait_for(lambda: _a_worker_parked(engine))  # the other worker sleeps
        calls = []
        real = engine.make_way

        def spy():
            calls.append(threading.current_thread().name)
            real()

        monkeypatch.setattr(engine, "make_way", spy)
        me = threading.current_thread().name
        with engine._turn:  # the engine thread cannot take what is admitted now
            engine.dispatcher.nap_ns = 0  # not CPU-bound jobs: no way is made
            plain = [m.submit(jobs.add, 1, 1)]
            assert calls == []
            engine.dispatcher.nap_ns = 1_000_000
            started = time.monotonic()
            plain.append(m.submit(jobs.add, 2, 2))  # the compiled path
            waited = time.monotonic() - started
            assert calls == [me]
            # no turn could begin (this thread holds it): make_way gave up after its
            # bound, and waits no more this turn
            assert waited >= engine_module.MAKE_WAY_MAX_S * 0.9
            assert engine._way_made == engine._turns_begun
            keyword = m.submit(jobs.add, 3, b=3)  # the Python path (a keyword argument)
            assert calls == [me, me]
            # while work waits and a worker sleeps, the engine does not nap
            assert engine.inbox and _a_worker_parked(engine)
            assert engine._nap() == 0.0
        gate.write_text("go")
        assert busy.result(timeout=30) == "busy"
        assert [f.result(timeout=30) for f in plain] == [2, 4]
        assert keyword.result(timeout=30) == 6


def test_make_way_returns_once_the_engine_thread_begins_a_turn(monkeypatch):
    monkeypatch.setattr(engine_module, "MAKE_WAY_MAX_S", 30.0)
    with Manager(1) as m:
        engine = m._engine
        m.submit(jobs.noop).result(timeout=30)
        for _ in range(3):
            before = engine._turns_begun
            engine.pool.doorbell.ring()  # as a submit does: the engine thread wakes
            started = time.monotonic()
            engine.make_way()
            assert engine._turns_begun > before
            assert time.monotonic() - started < 15  # not its 30 s bound


def test_make_way_never_waits_on_the_engine_thread_under_its_lock_or_once_stopped(
    monkeypatch,
):
    # Each case, were it to wait, would wait the whole (30 s) bound: no turn can begin.
    monkeypatch.setattr(engine_module, "MAKE_WAY_MAX_S", 30.0)
    with Manager(1) as m:
        engine = m._engine
        m.submit(jobs.noop).result(timeout=30)
        with engine._turn, engine.lock:
            assert _timed(engine.make_way) < 10
        # on the engine thread, in its turn: a callback that schedules
        took = []
        f = m.submit(jobs.slow_value, 0.5, 1)  # the callback is added while it runs
        f.add_done_callback(
            lambda _f: took.append((threading.current_thread().name, _timed(engine.make_way)))
        )
        f.result(timeout=30)
        wait_for(lambda: took, timeout=60)
        assert took[0][0] == "jobengine-engine" and took[0][1] < 10
    assert _timed(engine.make_way) < 10  # stopped


def _timed(fn) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started


def test_the_watched_task_rings_are_those_of_workers_that_take_work():
    with Manager(2) as m:
        pool = m._engine.pool
        wait_for(all_workers_up(m))
        assert pool.task_rings == [w.channel.tasks for w in pool.workers.values()]
        m.resize_workers(1)
        wait_for(lambda: len(pool.workers) == 1 or any(w.retiring for w in pool.workers.values()))
        live = [w.channel.tasks for w in pool.workers.values() if not w.retiring]
        assert pool.task_rings == live and len(live) == 1
