"""go-job's documented behaviour, one test per feature, named after it (issue 16 grows
this file).  Where go-job's code and README disagree, the README wins."""

from __future__ import annotations

import jobs
from conftest import wait_for

from jobengine import RETRY_FOREVER, Job, Manager, Query, State


def test_with_max_retries_minus_one_retries_until_success():
    # go-job: a negative retry count retries until the job succeeds (or is canceled)
    assert RETRY_FOREVER == -1
    job = Job("stubborn", jobs.fail_until, max_retries=RETRY_FOREVER, backoff=0.001)
    with Manager(1) as m:
        ji = m.schedule_job(job, args=(6,))
        assert ji.result(timeout=60) == 6
        assert ji.attempts == 6 and ji.state is State.COMPLETED
        history = [r.state for r in m.lookup_instance_history(ji)]
        assert history.count(State.TERMINATED) == 5


def test_with_max_retries_minus_one_a_cancel_still_ends_it():
    job = Job("forever", jobs.fail_until, max_retries=RETRY_FOREVER, backoff=0.05)
    with Manager(1) as m:
        ji = m.schedule_job(job, args=(10**9,))  # never succeeds
        wait_for(lambda: ji.attempts >= 3)
        m.cancel_instances(Query(uuid=ji.uuid_str))
        assert m.wait(timeout=30)
        assert ji.state is State.CANCELED and ji.cancelled()


def test_with_timeout_zero_means_no_timeout():
    # go-job: a zero timeout is no timeout (not "time out at once")
    job = Job("patient", jobs.sleep_then, timeout=0)
    assert job.timeout is None
    with Manager(1) as m:
        assert m.schedule_job(job, args=(0.3, "done")).result(timeout=30) == "done"
