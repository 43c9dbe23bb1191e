"""The dispatcher's credit and nap policy, and what it buys: fewer engine wake-ups per
job for CPU-bound batches, with no lone result held back."""

import sys
import time

import jobs
import pytest
from conftest import wait_for

from jobengine import Manager, scheduler
from jobengine.clock import VirtualClock
from jobengine.scheduler import (
    LONG_JOB_NS,
    MAX_CREDITS,
    NAP_MAX_NS,
    NAP_MIN_JOB_NS,
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
    assert held >= d.nap_ns
    assert held >= d.nap_ns + sys.getswitchinterval() * 1e9 or d.credits == MAX_CREDITS


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
