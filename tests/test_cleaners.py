"""Cleaner jobs (go-job's system jobs): history and logs cleared by age, on a crontab, in
every store."""

from __future__ import annotations

import os
import time

import jobs
import pytest
from conftest import store_on, wait_for

from jobengine import (
    Manager,
    Query,
    State,
)
from jobengine.errors import InvalidArgumentError


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
def make_store(request, tmp_path):
    make, _ = store_on(request.param, tmp_path, f"cleaners_{os.getpid()}")
    store = make()
    yield store
    store.clear()
    store.close()


def test_cleaners_clear_records_older_than_their_retention(make_store):
    with Manager(1, store=make_store, queue=False) as m:
        old = [m.submit(jobs.log_lines, 1) for _ in range(3)]
        for f in old:
            f.result(timeout=30)
        time.sleep(3.5)  # these are now older than the retention below (3 s)
        new = m.submit(jobs.log_lines, 1)
        new.result(timeout=30)  # this one stays younger than it for the checks below
        logs = m.schedule_log_cleaner(3.0, crontab="@every 1s")
        assert logs.state is State.SCHEDULED and logs.kind == "jobengine.log-cleaner"
        wait_for(lambda: any("cleared" in r.message for r in logs.logs()), timeout=15)
        first = next(r.message for r in logs.logs() if "cleared" in r.message)
        assert first == "cleared 6 log records"  # the three old instances' two lines each
        # (the history cleaner after it: clearing an instance's last state record
        # removes the instance, its logs with it)
        assert [r.message for r in m.lookup_instance_logs(new)] == ["line 0", "careful"]
        history = m.schedule_history_cleaner(3.0, crontab="@every 1s")
        wait_for(lambda: any("cleared" in r.message for r in history.logs()), timeout=15)
        for f in old:
            assert m.lookup_instance_logs(f) == [] and m.lookup_instance_history(f) == []
        assert [r.state for r in m.lookup_instance_history(new)][-1] is State.COMPLETED
        # scheduling it again returns the same recurrence
        assert m.schedule_log_cleaner(3.0, crontab="@every 1s").uuid == logs.uuid
        m.cancel_instances(Query(state=State.ACTIVE))


def test_a_cleaner_needs_a_positive_retention():
    m = Manager(1)
    try:
        with pytest.raises(InvalidArgumentError):
            m.schedule_history_cleaner(0)
        with pytest.raises(InvalidArgumentError):
            m.schedule_log_cleaner(-5)
    finally:
        m.stop()
