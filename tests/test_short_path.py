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
