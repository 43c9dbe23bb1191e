"""Instance as a Future, raced: its Condition and lists are made lazily (instance.py), so
every way of waiting must still see every outcome, whichever thread gets there first."""

import concurrent.futures as cf
import random
import threading

import pytest

from jobengine import Job, Manager
from jobengine.instance import Instance


def noop():
    return None


@pytest.fixture(scope="module")
def job():
    return Job("futures-race", noop)


def fresh(job, n):
    return [Instance(None, job, i + 1, (), {}, 0, 0) for i in range(n)]


def _race_result_waiters(job):
    insts = fresh(job, 200)
    got = []

    def waiter(chunk):
        got.extend(i.result(timeout=10) for i in chunk)

    threads = [threading.Thread(target=waiter, args=(insts[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    order = list(range(200))
    random.shuffle(order)
    for k in order:
        insts[k].set_result(k)
    for t in threads:
        t.join(10)
        assert not t.is_alive(), "a waiter missed its wake-up"
    assert sorted(got) == list(range(200))


def test_result_waiters_racing_the_setter_all_wake(job):
    for _ in range(20):
        _race_result_waiters(job)


def _race_callbacks(job):
    insts = fresh(job, 300)
    calls = []
    lock = threading.Lock()

    def cb(f):
        with lock:
            calls.append(f)

    adder = threading.Thread(target=lambda: [i.add_done_callback(cb) for i in insts])
    adder.start()
    for i in insts:
        i.set_result(None)
    adder.join(10)
    assert len(calls) == 300 and len(set(map(id, calls))) == 300


def test_callbacks_added_before_during_and_after_completion_each_run_once(job):
    for _ in range(20):
        _race_callbacks(job)


def _race_wait(job):
    insts = fresh(job, 100)

    def set_all():
        for k, i in enumerate(insts):
            i.set_exception(ValueError(k))

    setter = threading.Thread(target=set_all)
    setter.start()
    done = list(cf.as_completed(insts, timeout=10))
    setter.join()
    assert len(done) == 100 and all(isinstance(f.exception(), ValueError) for f in done)
    _, pending = cf.wait(insts, timeout=10)
    assert not pending


def test_wait_and_as_completed_racing_completion(job):
    for _ in range(20):
        _race_wait(job)


def test_setting_twice_is_refused(job):
    (i,) = fresh(job, 1)
    i.set_result(1)
    with pytest.raises(cf.InvalidStateError):
        i.set_result(2)
    assert i.result() == 1


def test_no_condition_is_made_for_futures_nobody_waits_on():
    with Manager(num_workers=1) as m:
        fs = [m.submit(noop) for _ in range(50)]
        m.wait()
        assert all(f.done() and f.result() is None and f.exception() is None for f in fs)
        assert sum("_cond" in f.__dict__ for f in fs) == 0  # reading them made none either
