"""submit_many and schedule_many: many instances in one call, with the rules of their
one-at-a-time counterparts (submit: the Executor's; schedule_job: go-job's)."""

from __future__ import annotations

import operator
import threading

import jobs
import pytest
from conftest import wait_for

from jobengine import (
    ArgumentBindingError,
    Job,
    Manager,
    Query,
    SerializationError,
    SQLiteStore,
    State,
)
from jobengine.errors import InvalidArgumentTypeError


def test_submit_many_returns_one_future_per_call_in_order(mgr):
    fs = mgr.submit_many(operator.add, range(100), range(100, 200))
    assert [f.result(timeout=30) for f in fs] == [i + i + 100 for i in range(100)]
    assert len({f.uuid_str for f in fs}) == 100
    assert mgr.submit_many(operator.add) == [] and mgr.submit_many(operator.neg, []) == []


def test_submit_many_fails_only_the_future_whose_argument_cannot_be_pickled(mgr):
    fs = mgr.submit_many(jobs.echo, [1, threading.Lock(), 3])
    assert fs[0].result(timeout=30) == 1 and fs[2].result(timeout=30) == 3
    with pytest.raises(SerializationError):
        fs[1].result(timeout=30)
    assert mgr.lookup_instance_history(fs[1])[-1].state is State.TERMINATED


def test_submit_many_with_a_call_that_does_not_fit_schedules_nothing(mgr):
    before = len(mgr.lookup_instances())
    with pytest.raises(ArgumentBindingError):
        mgr.submit_many(jobs.noop, [1, 2])  # noop() takes no argument
    assert len(mgr.lookup_instances()) == before  # nothing half-scheduled


def test_submit_many_of_a_lambda_lets_the_callable_go_when_all_settled(mgr):
    fs = mgr.submit_many(lambda x: x * 3, range(50))
    assert [f.result(timeout=30) for f in fs] == [x * 3 for x in range(50)]
    # the transient job is dropped once its last instance settled (held once per call)
    wait_for(lambda: not any(j.kind.startswith("<lambda>") for j in mgr.list_jobs()))


def test_submit_many_starts_the_manager_and_refuses_after_shutdown():
    m = Manager(1)
    try:
        assert [f.result(timeout=30) for f in m.submit_many(jobs.echo, "ab")] == ["a", "b"]
    finally:
        m.shutdown()
    with pytest.raises(RuntimeError):
        m.submit_many(jobs.echo, [1])


def test_schedule_many_shares_the_options_and_keeps_priority_order(tmp_path):
    m = Manager(1)
    job = Job("record", jobs.record_run)
    expected = []
    try:
        low = m.schedule_many(
            job, [(str(tmp_path / "runs"), f"low{i}") for i in range(3)], priority=1
        )
        high = m.schedule_many(
            job, [(str(tmp_path / "runs"), f"high{i}") for i in range(3)], priority=9
        )
        assert all(i.priority == 1 for i in low) and all(i.priority == 9 for i in high)
        assert all(i.state is State.SCHEDULED for i in low + high)
        expected = [i.uuid_str for i in high + low]
    finally:
        m.start()
        m.stop_with_wait()
    done = sorted(low + high, key=lambda i: m.lookup_instance_history(i)[2].time_ns)
    assert [i.uuid_str for i in done] == expected  # all high first, each FIFO


def test_schedule_many_refuses_a_bad_instance_before_scheduling_any(mgr):
    job = Job("echo-many", jobs.echo)
    with pytest.raises(SerializationError):
        mgr.schedule_many(job, [(1,), (threading.Lock(),)])
    with pytest.raises(ArgumentBindingError):
        mgr.schedule_many(job, [(1,), (1, 2)])
    with pytest.raises(InvalidArgumentTypeError):
        mgr.schedule_many(job, "abc")
    assert not mgr.lookup_instances()
    assert [i.result(timeout=30) for i in mgr.schedule_many(job, [(5,), (6,)])] == [5, 6]


def test_schedule_many_of_a_recurring_job_makes_one_recurrence_each(mgr):
    job = Job("tick-many", jobs.echo, crontab="0 0 1 1 *")
    made = mgr.schedule_many(job, [(1,), (2,)])
    assert len({i.uuid_str for i in made}) == 2 and all(i.state is State.SCHEDULED for i in made)
    assert len(mgr.cancel_instances(Query(kind="tick-many"))) == 2


def test_submit_many_on_a_shared_queue_is_one_enqueue(tmp_path):
    store = SQLiteStore(str(tmp_path / "q.db"))
    sizes = []
    enqueue = store.enqueue

    def counting(entries, *a, **kw):
        sizes.append(len(entries))
        return enqueue(entries, *a, **kw)

    store.enqueue = counting
    with Manager(2, store=store) as m:
        fs = m.submit_many(operator.mul, range(300), range(300))
        assert [f.result(timeout=60) for f in fs] == [i * i for i in range(300)]
    assert sizes == [300]
