"""Bad input, one table: each row raises a named JobEngineError subclass whose message
names the bad value, and leaves nothing half-created behind."""

import math
from datetime import datetime

import jobs
import pytest

from jobengine import (
    ArgumentBindingError,
    DuplicateJobError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidJobError,
    Job,
    JobEngineError,
    Manager,
    ManagerStateError,
    Query,
    SerializationError,
    UnknownJobError,
)

SUM = Job("sum", jobs.add)

ROWS = [
    # (id, call(manager), exception, text the message must contain, builtin it also is)
    ("unknown kind", lambda m: m.schedule_registered_job("nope"), UnknownJobError, "nope",
     KeyError),
    ("duplicate kind", lambda m: m.register_job(Job("sum", jobs.add)), DuplicateJobError, "sum",
     ValueError),
    ("executor not callable", lambda m: Job("x", 42), InvalidJobError, "42", ValueError),
    ("empty kind", lambda m: Job("", jobs.add), InvalidJobError, "''", ValueError),
    ("too few args", lambda m: m.schedule_job(SUM, args=(1,)), ArgumentBindingError, "(1,)",
     TypeError),
    ("unknown kwarg", lambda m: m.schedule_job(SUM, args=(1, 2), kwargs={"c": 3}),
     ArgumentBindingError, "'c'", TypeError),
    ("args not a sequence", lambda m: m.schedule_job(SUM, args=5), InvalidArgumentTypeError, "5",
     TypeError),
    ("priority as str", lambda m: m.schedule_job(SUM, args=(1, 2), priority="high"),
     InvalidArgumentTypeError, "'high'", TypeError),
    ("priority out of range", lambda m: m.schedule_job(SUM, args=(1, 2), priority=10**9),
     InvalidArgumentError, "1000000000", ValueError),
    ("delay as str", lambda m: m.schedule_job(SUM, args=(1, 2), schedule_after="soon"),
     InvalidArgumentTypeError, "'soon'", TypeError),
    ("negative delay", lambda m: m.schedule_job(SUM, args=(1, 2), schedule_after=-1),
     InvalidArgumentError, "-1", ValueError),
    ("NaN delay", lambda m: m.schedule_job(SUM, args=(1, 2), schedule_after=math.nan),
     InvalidArgumentError, "nan", ValueError),
    ("schedule_at not a datetime", lambda m: m.schedule_job(SUM, args=(1, 2), schedule_at="9am"),
     InvalidArgumentTypeError, "'9am'", TypeError),
    ("timeout as str", lambda m: Job("t", jobs.add, timeout="1"), InvalidArgumentTypeError, "'1'",
     TypeError),
    ("negative timeout", lambda m: Job("t", jobs.add, timeout=-1), InvalidArgumentError, "-1",
     ValueError),
    ("NaN timeout", lambda m: Job("t", jobs.add, timeout=math.nan), InvalidArgumentError, "nan",
     ValueError),
    ("retries as float", lambda m: Job("t", jobs.add, max_retries=1.5), InvalidArgumentTypeError,
     "1.5", TypeError),
    ("retries below -1", lambda m: Job("t", jobs.add, max_retries=-2), InvalidArgumentError, "-2",
     ValueError),
    ("negative backoff", lambda m: Job("t", jobs.add, backoff=-2), InvalidArgumentError, "-2",
     ValueError),
    ("invalid crontab", lambda m: Job("t", jobs.add, crontab="* * *"), InvalidJobError,
     "'* * *'", ValueError),
    ("unknown time zone", lambda m: Job("t", jobs.add, crontab="* * * * *", timezone="Moon/Base"),
     InvalidJobError, "Moon/Base", ValueError),
    ("bad misfire policy", lambda m: Job("t", jobs.add, crontab="* * * * *", misfire="later"),
     InvalidArgumentError, "'later'", ValueError),
    ("max_overlap as str", lambda m: Job("t", jobs.add, crontab="* * * * *", max_overlap="2"),
     InvalidArgumentTypeError, "'2'", TypeError),
    ("zero max_overlap", lambda m: Job("t", jobs.add, crontab="* * * * *", max_overlap=0),
     InvalidArgumentError, "0", ValueError),
    ("crontab job, unpicklable arg", lambda m: m.schedule_job(
        Job("cron-arg", jobs.echo, crontab="* * * * *"), args=(lambda: 1,)),
     SerializationError, "cron-arg", ValueError),
    ("zero lease", lambda m: Manager(lease=0), InvalidArgumentError, "lease", ValueError),
    ("lease as str", lambda m: Manager(lease="30"), InvalidArgumentTypeError, "'30'", TypeError),
    ("zero workers", lambda m: Manager(num_workers=0), InvalidArgumentError, "0", ValueError),
    ("workers as str", lambda m: Manager(num_workers="2"), InvalidArgumentTypeError, "'2'",
     TypeError),
    ("resize to zero", lambda m: m.resize_workers(0), InvalidArgumentError, "0", ValueError),
    ("bad query state", lambda m: m.lookup_instances(Query(state="done")),
     InvalidArgumentTypeError, "'done'", TypeError),
    ("negative query limit", lambda m: Query(limit=-1), InvalidArgumentError, "-1", ValueError),
    ("bad map chunksize", lambda m: m.map(jobs.add, [1], [2], chunksize=0), InvalidArgumentError,
     "0", ValueError),
]  # fmt: skip


@pytest.fixture(scope="module")
def manager():
    m = Manager(num_workers=1)
    m.register_job(SUM)
    yield m
    m.stop()


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_table(manager, row):
    _, call, exc, text, builtin = row
    before = manager.lookup_instances()
    recurrences = manager.store.lookup_recurrences()
    with pytest.raises(exc) as info:
        call(manager)
    err = info.value
    assert isinstance(err, JobEngineError) and isinstance(err, builtin)
    assert text in str(err), str(err)
    assert manager.lookup_instances() == before  # nothing half-created
    assert manager.store.lookup_recurrences() == recurrences


def test_schedule_at_in_the_past_runs_now():
    with Manager(num_workers=1) as m:
        ji = m.schedule_job(Job("past", jobs.add), args=(1, 1), schedule_at=datetime(2000, 1, 1))
        assert ji.result(timeout=10) == 2


def test_scheduling_on_a_stopped_manager_is_refused_and_records_nothing():
    m = Manager(num_workers=1).start()
    m.stop()
    with pytest.raises(ManagerStateError, match="stopp"):
        m.schedule_job(SUM, args=(1, 2))
    assert m.lookup_instances() == []
    m.start()  # go-job's rule: a stopped manager starts again (test_gojob_parity.py)
    m.stop()
