"""submit() and schedule_job() of a job without schedule options, due now, take a short
path (Manager._admit_plain); what it records and returns is what the general path
records and returns for the same call."""

import functools

import jobs
import pytest
from conftest import wait_for

from jobengine import Job, Manager, Query, SerializationError, State
from jobengine.records import StateRecord

HAPPY = [State.CREATED, State.SCHEDULED, State.PROCESSING, State.COMPLETED]


@pytest.fixture
def spied(monkeypatch):
    taken = []
    original = Manager._admit_plain

    def spy(self, job, args, kwargs, *, raising):
        taken.append((job.kind, raising))
        return original(self, job, args, kwargs, raising=raising)

    monkeypatch.setattr(Manager, "_admit_plain", spy)
    return taken


def _shape(m: Manager, inst) -> dict:
    """What a caller can observe of a finished instance, minus its identity."""
    result = inst.result(timeout=30)  # settled once its records are written
    history: list[StateRecord] = m.lookup_instance_history(inst)
    return {
        "result": result,
        "states": [r.state for r in history],
        "attempts": [r.attempt for r in history],
        "created_is_scheduled": inst.scheduled_ns == inst.created_ns,
        "priority": inst.priority,
        "args": inst.args,
        "kwargs": inst.kwargs,
        "final": inst.state,
    }


def test_which_calls_take_the_short_path(spied, tmp_path):
    m = Manager(1)
    job = Job("add", jobs.add, priority=2)
    m.register_job(job)
    early = m.schedule_registered_job("add", args=(1, 1))  # before start: it waits
    assert spied == []
    with m:
        assert early.result(timeout=30) == 2
        m.submit(jobs.add, 1, 2).result(timeout=30)
        m.schedule_registered_job("add", args=(3, 4)).result(timeout=30)
        assert [raising for _, raising in spied] == [False, True]  # submit, then go-job
        assert spied[1][0] == "add"
        spied.clear()
        m.submit(functools.partial(jobs.add, 1), 2).result(timeout=30)  # transient job
        m.schedule_registered_job("add", args=(1, 2), priority=5).result(timeout=30)
        m.schedule_registered_job("add", args=(1, 2), schedule_after=0.01).result(timeout=30)
        m.schedule_registered_job("add", args=[1, 2]).result(timeout=30)  # a list, not a tuple
        m.schedule_job(job, args=(1, 2), max_retries=2).result(timeout=30)  # an override
        assert spied == []


def test_the_short_path_records_what_the_general_path_records(spied):
    with Manager(1) as m:
        m.register_job(Job("add", jobs.add, priority=3))
        short = m.schedule_registered_job("add", args=(1, 2), kwargs={})
        general = m.schedule_registered_job("add", args=(1, 2), kwargs={}, priority=3)
        assert len(spied) == 1  # only the first took it
        assert _shape(m, short) == _shape(m, general)
        assert _shape(m, short)["states"] == HAPPY

        spied.clear()
        short = m.submit(jobs.add, 5, b=6)
        general = m.submit(functools.partial(jobs.add), 5, b=6)  # transient: general
        assert len(spied) == 1
        assert _shape(m, short) == _shape(m, general)
        assert m.lookup_instances(Query(uuid=short.uuid_str)) == [short]  # the same object


def test_arguments_that_cannot_travel_follow_each_api_s_rule(spied):
    import threading

    with Manager(1) as m:
        job = m.register_job(Job("echo", jobs.echo))
        with pytest.raises(SerializationError):
            m.schedule_registered_job("echo", args=(threading.Lock(),))
        assert all(i.kind != "echo" for i in m.lookup_instances())  # go-job: nothing
        f = m.submit(jobs.echo, threading.Lock())  # Executor: the Future fails
        assert isinstance(f.exception(timeout=30), SerializationError)
        assert [k for k, _ in spied] == [job.kind, f.job.kind]
        assert f.state != State.COMPLETED
        wait_for(lambda: m.lookup_instance_history(f)[-1].state == f.state)


def test_a_call_without_arguments_is_pickled_once_not_per_instance():
    """NO_ARGUMENTS is every such instance's payload (~0.5 us a job saved); a call
    whose executor takes its Instance, or one with any argument, is pickled for itself."""
    import pickle

    from jobengine.job import NO_ARGUMENTS, task_bytes

    assert pickle.loads(NO_ARGUMENTS) == ((), {})
    plain, injected = Job("noop", jobs.noop), Job("stamp", jobs.stamp_run)
    assert task_bytes(plain, (), {}, "u") is NO_ARGUMENTS
    assert task_bytes(plain, (), None, "u") is NO_ARGUMENTS
    assert pickle.loads(task_bytes(injected, (), {}, "u1")) == ((), {}, "u1")
    assert pickle.loads(task_bytes(plain, (1,), {}, "u")) == ((1,), {})
    assert pickle.loads(task_bytes(plain, (), {"a": 1}, "u")) == ((), {"a": 1})
    with Manager(1) as m:  # and end to end: each gets what it was given
        m.register_job(Job("stamp", jobs.stamp_run, max_retries=0))
        assert m.submit(jobs.noop).result(timeout=30) is None
        assert m.schedule_registered_job("stamp").result(timeout=30) == 1
        assert m.submit(jobs.add, 2, b=3).result(timeout=30) == 5
