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


def test_state_groups_active_is_scheduled_or_processing_and_error_includes_canceled():
    assert State.ACTIVE == State.SCHEDULED | State.PROCESSING
    assert State.CREATED not in State.ACTIVE
    assert State.ERROR == State.TERMINATED | State.TIMED_OUT | State.CANCELED
    assert State.SUCCESS == State.COMPLETED
    assert State.FINAL == State.SUCCESS | State.ERROR
    with Manager(1) as m:
        ok = m.submit(jobs.add, 1, 2)
        bad = m.schedule_job(Job("parity-fail", jobs.fail))
        later = m.schedule_job(Job("parity-later", jobs.noop), schedule_after=3600)
        m.cancel_instances(Query(uuid=later.uuid_str))
        ok.result(timeout=30)
        wait_for(bad.done)
        errors = {i.uuid_str for i in m.lookup_instances(Query(state=State.ERROR))}
        assert errors == {bad.uuid_str, later.uuid_str}


def test_job_registered_at_is_when_a_manager_first_registered_it():
    from datetime import datetime, timezone

    job = Job("parity-registered", jobs.noop)
    assert job.registered_at is None
    before = datetime.now(timezone.utc)
    m = Manager(1)
    try:
        m.register_job(job)
        stamp = job.registered_at
        assert before <= stamp <= datetime.now(timezone.utc)
        m.unregister_job(job.kind)
        m.register_job(job)
        assert job.registered_at == stamp  # the first registration's time
        adopted = Job("parity-adopted", jobs.noop)
        m.schedule_job(adopted)  # scheduling a new job registers it too
        assert adopted.registered_at is not None
    finally:
        m.stop()


def test_instance_shows_its_options_records_and_final_times():
    job = Job("parity-surface", jobs.log_lines, max_retries=2, timeout=30)
    with Manager(1) as m:
        ji = m.schedule_job(job, args=(2,))
        assert ji.max_retries == 2 and ji.timeout == 30
        ji.result(timeout=30)
        assert [r.state for r in ji.history()] == [
            State.CREATED, State.SCHEDULED, State.PROCESSING, State.COMPLETED]  # fmt: skip
        assert [r.message for r in ji.logs()] == [r.message for r in m.lookup_instance_logs(ji)]
        assert len(ji.logs()) == 3
        assert ji.completed_at is not None
        assert ji.terminated_at is ji.canceled_at is ji.timed_out_at is None
        failed = m.schedule_job(Job("parity-term", jobs.fail))
        wait_for(failed.done)
        assert failed.terminated_at == failed.completed_at and failed.canceled_at is None
        slow = m.schedule_job(Job("parity-slow", jobs.sleep_then, timeout=0.2), args=(30,))
        wait_for(slow.done)
        assert slow.timed_out_at == slow.completed_at and slow.terminated_at is None
        later = m.schedule_job(Job("parity-cancel", jobs.noop), schedule_after=3600)
        later.cancel()
        assert later.canceled_at is not None


def test_question_mark_argument_is_replaced_by_the_instance():
    # go-job: WithArguments(..., "?") passes the job instance in the placeholder's place
    with Manager(1) as m:
        ji = m.schedule_job(Job("parity-placeholder", jobs.as_tuple), args=(["?"],))
        assert ji.result(timeout=30) == ("?",)  # only a top-level argument is one
        ji = m.schedule_job(Job("parity-uuid", jobs.uuid_of), args=("?",))
        assert ji.result(timeout=30) == ji.uuid_str
        ji = m.submit(jobs.uuid_of, target="?")  # as a keyword argument too
        assert ji.result(timeout=30) == ji.uuid_str
        # for a parameter that receives the instance anyway, "?" fills it once
        ji = m.schedule_job(Job("parity-ji", jobs.stamp_run), args=("?",))
        assert ji.result(timeout=30) == 1


def test_log_lookup_filtered_by_level_and_time():
    from jobengine import LogLevel

    def levels(records):
        return [r.level for r in records]

    with Manager(1) as m:
        ji = m.schedule_job(Job("parity-levels", jobs.log_levels), args=("?",))
        ji.result(timeout=30)
        every = m.lookup_instance_logs(ji)
        assert levels(every) == [LogLevel.DEBUG, LogLevel.INFO, LogLevel.WARN, LogLevel.ERROR]
        warn = m.lookup_instance_logs(ji, Query(level=LogLevel.WARN))
        assert levels(warn) == [LogLevel.WARN, LogLevel.ERROR]  # that level or more severe
        assert levels(m.lookup_instance_logs(ji, Query(level="error"))) == [LogLevel.ERROR]
        cut = every[2].timestamp
        assert levels(m.lookup_instance_logs(ji, Query(after=cut))) == levels(every[2:])
        assert levels(m.lookup_instance_logs(ji, Query(before=cut))) == levels(every[:2])
        assert len(m.lookup_instance_logs(ji, Query(limit=1))) == 1


def test_history_lookup_by_query_across_instances():
    with Manager(1) as m:
        job = Job("parity-across", jobs.add)
        a, b = m.schedule_job(job, args=(1, 1)), m.schedule_job(job, args=(2, 2))
        other = m.submit(jobs.noop)
        for f in (a, b, other):
            f.result(timeout=30)
        records = m.lookup_instance_history(Query(kind="parity-across"))
        assert {r.uuid for r in records} == {a.uuid_str, b.uuid_str}
        assert len(records) == 8
        assert [r.time_ns for r in records] == sorted(r.time_ns for r in records)
        done = m.lookup_instance_history(
            Query(kind="parity-across"), Query(after=records[0].timestamp, limit=3)
        )
        assert done == records[:3]
        logs = m.lookup_instance_logs(Query(state=State.COMPLETED))
        assert logs == []


def test_manager_clear_empties_the_store_namespace():
    with Manager(1) as m:
        ji = m.submit(jobs.add, 1, 2)
        ji.result(timeout=30)
        assert m.lookup_instances()
        m.clear()
        assert m.lookup_instances() == [] and m.lookup_instance_history(ji) == []
        assert m.submit(jobs.add, 2, 2).result(timeout=30) == 4  # and it serves on
