"""go-job's documented behaviour, one test per feature, named after it (issue 16 grows
this file).  Where go-job's code and README disagree, the README wins."""

from __future__ import annotations

import itertools
import time
from concurrent.futures import CancelledError
from datetime import datetime, timedelta, timezone

import jobs
import pytest
from conftest import wait_for

from jobengine import (
    RETRY_FOREVER,
    ArgumentBindingError,
    Job,
    JobCanceled,
    JobTimeout,
    LogLevel,
    Manager,
    Query,
    State,
)
from jobengine.errors import InvalidArgumentError, InvalidJobError


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


# -- schedule-time options (go-job: ScheduleJob(job, WithXxx(...))) ---------------------
def test_schedule_job_with_crontab_spec_makes_a_recurring_instance():
    # the seed: mgr.ScheduleJob(job, WithCrontabSpec("0 0 * * *"))
    job = Job("parity-cron-option", jobs.noop)
    with Manager(1) as m:
        ji = m.schedule_job(job, crontab="0 0 * * *", timezone="UTC")
        assert ji.state is State.SCHEDULED and ji.job.crontab == "0 0 * * *"
        assert ji.scheduled_at.hour == 0 and ji.scheduled_at.minute == 0
        assert job.crontab is None  # the Job itself is unchanged
        one_off = m.schedule_job(job)  # the same job without the option: runs once
        one_off.result(timeout=30)
        assert ji.state is State.SCHEDULED
        m.cancel_instances(Query(uuid=ji.uuid_str))


def test_schedule_options_override_the_job_for_that_instance_only():
    calls = []
    job = Job("parity-overrides", jobs.fail_until, max_retries=0, timeout=30)
    with Manager(1) as m:
        ji = m.schedule_registered_job(
            m.register_job(job).kind, args=(3,), max_retries=5, backoff=0.01, timeout=0,
            error_handler=lambda inst, err: calls.append(inst.attempts),
        )  # fmt: skip
        assert ji.result(timeout=30) == 3
        assert ji.max_retries == 5 and ji.timeout is None and calls == [1, 2]
        plain = m.schedule_job(job, args=(2,))  # the job's own: no retry
        with pytest.raises(RuntimeError):
            plain.result(timeout=30)
        assert plain.max_retries == 0 and plain.timeout == 30
        slow = m.schedule_job(Job("parity-slow-option", jobs.sleep_then), args=(30,), timeout=0.3)
        with pytest.raises(JobTimeout):
            slow.result(timeout=30)
        assert slow.state is State.TIMED_OUT


def test_schedule_options_are_checked_like_the_jobs():
    job = Job("parity-bad-option", jobs.noop)
    with Manager(1) as m:
        with pytest.raises(InvalidArgumentError):
            m.schedule_job(job, crontab="not a crontab")
        with pytest.raises(InvalidArgumentError):
            m.schedule_job(job, max_retries=-5)
        with pytest.raises(TypeError):
            m.schedule_job(job, colour="blue")
        assert m.lookup_instances() == []


def test_jitter_applies_to_one_shot_jobs():
    job = Job("parity-jitter", jobs.noop, jitter=0.4)
    with Manager(1) as m:
        made = [m.schedule_job(job) for _ in range(6)]
        delays = [(i.scheduled_ns - i.created_ns) / 1e9 for i in made]
        assert all(0 <= d <= 0.41 for d in delays) and len(set(delays)) > 1
        for i in made:
            i.result(timeout=30)
            assert i.processed_ns >= i.scheduled_ns


def test_schedule_job_runs_the_job_it_is_given_even_if_its_kind_is_registered():
    with Manager(1) as m:
        m.register_job(Job("parity-same-kind", jobs.echo))
        other = Job("parity-same-kind", jobs.add)
        assert m.schedule_job(other, args=(2, 3)).result(timeout=30) == 5
        reg = m.schedule_registered_job("parity-same-kind", args=("registered",))
        assert reg.result(timeout=30) == "registered"
        assert m.lookup_job("parity-same-kind").executor is jobs.echo


# -- arguments converted by annotations --------------------------------------------------
def test_with_arguments_converted_by_the_executors_annotations():
    with Manager(1) as m:
        assert m.schedule_job(Job("parity-typed-add", jobs.typed_add), args=("1", "2")).result(
            timeout=30
        ) == 3  # fmt: skip
        assert m.schedule_job(Job("parity-typed-str", jobs.typed_str), args=(123,)).result(
            timeout=30
        ) == "123"  # fmt: skip
        concat = Job("parity-concat", jobs.concat)
        # the seed's concatOpt: a struct argument, here a dataclass from a dict or JSON
        assert m.schedule_job(concat, args=({"a": "Hello", "b": "world!"},)).result(
            timeout=30
        ) == "Hello world!"  # fmt: skip
        assert m.schedule_job(concat, kwargs={"opt": '{"a": "Hi", "b": "there"}'}).result(
            timeout=30
        ) == "Hi there"  # fmt: skip
        untyped = m.schedule_job(Job("parity-untyped", jobs.echo), args=("1",))
        assert untyped.result(timeout=30) == "1"  # unannotated: as it is
        assert m.submit(jobs.typed_str, 5).result(timeout=30) == 5  # submit: the stdlib's rule


def test_an_argument_that_cannot_be_converted_names_its_parameter():
    with Manager(1) as m:
        with pytest.raises(ArgumentBindingError, match=r"'b'.*not a valid int"):
            m.schedule_job(Job("parity-typed-add", jobs.typed_add), args=(1, "two"))
        with pytest.raises(ArgumentBindingError, match="'opt'"):
            m.schedule_job(Job("parity-concat", jobs.concat), args=({"a": "only a"},))
        assert m.lookup_instances() == []


# -- graceful cancel and timeout -----------------------------------------------------------
@pytest.mark.parametrize("how", ["cancel", "timeout"])
def test_context_cancel_runs_finally_blocks_and_escapes_except_exception(tmp_path, how):
    # go-job hands the executor a context; here JobCanceled / JobTimeout is raised in
    # the job, a BaseException, so `except Exception` does not swallow it
    assert not issubclass(JobCanceled, Exception) and not issubclass(JobTimeout, Exception)
    path = tmp_path / "trace"
    timeout = 0.5 if how == "timeout" else None
    job = Job(f"parity-graceful-{how}", jobs.catch_exception_then_clean, timeout=timeout)
    with Manager(1, kill_grace=5) as m:
        ji = m.schedule_job(job, args=(str(path), 30))
        wait_for(ji.running)
        if how == "cancel":
            time.sleep(0.2)
            m.cancel_instances(Query(uuid=ji.uuid_str))
        assert m.wait(timeout=30)
    assert path.read_text().splitlines() == ["finally ran"]
    assert ji.state is (State.CANCELED if how == "cancel" else State.TIMED_OUT)


def test_error_handler_is_called_once_on_cancel_with_a_cancelled_error():
    seen = []

    def handler(ji, err):
        seen.append((ji.uuid_str, type(err)))

    with Manager(1) as m:
        queued = m.schedule_job(
            Job("parity-cancel-queued", jobs.noop, error_handler=handler), schedule_after=3600
        )
        assert queued.cancel()
        running = m.schedule_job(
            Job("parity-cancel-running", jobs.sleep_then, error_handler=handler), args=(30,)
        )
        wait_for(running.running)
        m.cancel_instances(Query(uuid=running.uuid_str))
        assert m.wait(timeout=30)
        wait_for(lambda: len(seen) == 2)
    assert sorted(seen) == sorted(
        [(queued.uuid_str, CancelledError), (running.uuid_str, CancelledError)]
    )


# -- crontab descriptors, ordering, times --------------------------------------------------
def test_every_descriptor_fires_at_its_interval():
    from jobengine.schedule import preview

    fires = preview("@every 90s", "UTC", datetime(2026, 1, 1, tzinfo=timezone.utc), 3)
    assert [(f - fires[0]).total_seconds() for f in fires] == [0, 90, 180]
    with pytest.raises(InvalidJobError, match="@every needs a positive duration"):
        Job("parity-every-bad", jobs.noop, crontab="@every soon")
    with Manager(1) as m:
        ji = m.schedule_job(Job("parity-every", jobs.noop, crontab="@every 1s"))
        wait_for(lambda: len(ji.fire_log) >= 3, timeout=10)
        times = [t for _, t, _ in ji.fire_log[:3]]
        assert [(b - a).total_seconds() for a, b in itertools.pairwise(times)] == [1.0, 1.0]
        m.cancel_instances(Query(uuid=ji.uuid_str))


def test_at_equal_priority_the_earlier_scheduled_time_runs_first(tmp_path):
    path = tmp_path / "order"
    job = Job("parity-order", jobs.record_run)
    now = datetime.now(timezone.utc)
    m = Manager(1)
    # scheduled in reverse order of their times; all due by the time the pool starts
    for key, delay in (("c", 0.3), ("b", 0.2), ("a", 0.1)):
        m.schedule_job(job, args=(str(path), key), schedule_at=now + timedelta(seconds=delay))
    time.sleep(0.5)
    m.start()
    m.stop_with_wait()
    assert [line.split()[0] for line in path.read_text().splitlines()] == ["a", "b", "c"]


def test_a_past_schedule_at_keeps_its_time():
    past = datetime.now(timezone.utc) - timedelta(hours=1)
    with Manager(1) as m:
        ji = m.schedule_job(Job("parity-past", jobs.noop), schedule_at=past)
        ji.result(timeout=30)  # due at once
        assert abs((ji.scheduled_at - past).total_seconds()) < 1e-3


# -- the manager's life ------------------------------------------------------------------
def test_a_stopped_manager_can_be_started_again():
    m = Manager(1)
    m.start()
    tick = m.schedule_job(Job("parity-restart-tick", jobs.noop, crontab="@every 1s"))
    assert m.submit(jobs.add, 1, 2).result(timeout=30) == 3
    m.stop()
    runs_before = len(tick.fire_log)
    m.start()
    try:
        assert m.submit(jobs.add, 2, 2).result(timeout=30) == 4
        assert m.lookup_job("parity-restart-tick").crontab == "@every 1s"  # still registered
        # the recurrence resumed from the store under the same uuid
        wait_for(
            lambda: (
                sum(r.state is State.COMPLETED for r in m.lookup_instance_history(tick))
                > runs_before
            ),
            timeout=10,
        )
    finally:
        m.shutdown()
    with pytest.raises(RuntimeError):  # after shutdown, the Executor rule holds
        m.submit(jobs.add, 1, 1)


# -- one test per section of go-job's README -----------------------------------------------
def test_readme_basic_usage():
    seen = []
    sum_job = Job(
        "sum",
        jobs.add,
        schedule_at=datetime.now(timezone.utc),  # "immediate scheduling is the default"
        response_handler=lambda ji, res: (ji.info(f"Result: {res}"), seen.append(res)),
        error_handler=lambda ji, err: ji.error(f"Error executing job: {err}"),
    )
    mgr = Manager()
    mgr.register_job(sum_job)
    ji = mgr.schedule_registered_job("sum", args=(1, 2))
    mgr.start()
    mgr.stop_with_wait()
    assert [r.state for r in mgr.lookup_instance_history(ji)] == [
        State.CREATED, State.SCHEDULED, State.PROCESSING, State.COMPLETED]  # fmt: skip
    assert [r.message for r in mgr.lookup_instance_logs(ji)] == ["Result: 3"]
    assert seen == [3]


def test_readme_job_execution_with_arbitrary_functions():
    with Manager(1) as mgr:
        sum_job = Job("sum", lambda a, b: a + b)
        concat_job = Job("concat", jobs.concat)
        assert mgr.schedule_job(sum_job, args=(1, 2)).result(timeout=30) == 3
        opt = jobs.ConcatOpt("Hello", "world!")
        assert mgr.schedule_job(concat_job, args=(opt,)).result(timeout=30) == "Hello world!"


def test_readme_schedule_at_a_specific_time_and_with_a_delay():
    with Manager(1) as mgr:
        at = datetime.now(timezone.utc) + timedelta(seconds=0.5)
        ji = mgr.schedule_job(Job("at", jobs.noop), schedule_at=at)
        after = mgr.schedule_job(Job("after", jobs.noop), schedule_after=0.5)
        for i in (ji, after):
            i.result(timeout=30)
        assert ji.processed_at >= at
        assert after.processed_ns - after.created_ns >= 0.5e9


def test_readme_cron_style_scheduling():
    with Manager(1) as mgr:
        ji = mgr.schedule_job(Job("cron", jobs.noop, crontab="* * * * * */1"))
        wait_for(lambda: len(ji.fire_log) >= 2, timeout=10)
        assert ji.state in State.ACTIVE
        mgr.cancel_instances(Query(uuid=ji.uuid_str))


def test_readme_job_priority_higher_values_run_first(tmp_path):
    path = tmp_path / "order"
    job = Job("prio", jobs.record_run)
    mgr = Manager(1)
    for key, prio in (("low", 1), ("high", 10), ("mid", 5)):
        mgr.schedule_job(job, args=(str(path), key), priority=prio)
    mgr.start()
    mgr.stop_with_wait()
    assert [line.split()[0] for line in path.read_text().splitlines()] == ["high", "mid", "low"]


def test_readme_worker_pool_management():
    mgr = Manager(num_workers=2)
    mgr.start()
    try:
        mgr.resize_workers(3)
        assert mgr.num_workers == 3
        wait_for(lambda: len([w for w in mgr.workers if w.pid]) == 3)
    finally:
        mgr.stop()


def test_readme_handler_for_custom_observation():
    with Manager(1) as mgr:
        job = Job(
            "observe",
            lambda a: a * 2,
            response_handler=lambda ji, res: ji.info(f"Job completed: {res}"),
            error_handler=lambda ji, err: ji.error(f"Job failed: {err}"),
        )
        ok = mgr.schedule_job(job, args=(1,))
        ok.result(timeout=30)
        bad = mgr.schedule_job(job, args=(None,))
        wait_for(bad.done)
        assert mgr.wait(timeout=30)
        assert [r.message for r in mgr.lookup_instance_logs(ok)] == ["Job completed: 2"]
        assert any(r.message.startswith("Job failed: ") for r in mgr.lookup_instance_logs(bad))


def test_readme_tracking_state_transitions_and_logs():
    with Manager(1) as mgr:
        ji = mgr.schedule_job(Job("track", jobs.log_lines), args=(1,))
        ji.result(timeout=30)
        states = mgr.process_history(ji)  # the README's name; lookup_instance_history
        assert [s.state for s in states] == [r.state for r in mgr.lookup_instance_history(ji)]
        assert all(s.timestamp.tzinfo is not None for s in states)
        logs = mgr.process_logs(ji)
        assert [(str(r.level), r.message) for r in logs] == [
            ("INFO", "line 0"),
            ("WARN", "careful"),
        ]


def test_readme_distributed_support_via_store_interface(tmp_path):
    from jobengine import SQLiteStore

    path = str(tmp_path / "jobs.db")
    with Manager(1, store=SQLiteStore(path)) as mgr:
        ji = mgr.submit(jobs.add, 2, 3)
        assert ji.result(timeout=30) == 5
    with Manager(1, store=SQLiteStore(path)) as other:  # another manager, the same store
        assert other.lookup_instances(Query(uuid=ji.uuid_str))[0].result() == 5


def test_executor_parameters_annotated_manager_and_worker_info_are_injected():
    with Manager(2) as m:
        m.register_job(Job("add", jobs.add))
        ji = m.schedule_job(Job("parity-follow-ups", jobs.schedule_follow_ups), args=(10,))
        out = ji.result(timeout=30)
        index, pid, current, state = out["worker"]
        assert current == ji.uuid_str and state == "busy"
        assert pid in {w.pid for w in m.workers} and index in {w.index for w in m.workers}

        def finished(uuid):
            found = m.lookup_instances(Query(uuid=uuid, state=State.FINAL))
            return found[0] if found else None

        results = {}
        for name in ("registered", "submitted", "job"):
            wait_for(lambda n=name: finished(out[n]) is not None)
            results[name] = finished(out[name]).result()
        assert results == {"registered": 11, "submitted": 12, "job": 10}
        assert m.lookup_instances(Query(uuid=out["job"]))[0].priority == 3
        # a follow-up the manager refuses is logged where it was asked, by its uuid
        wait_for(lambda: any(out["refused"] in r.message for r in ji.logs()))
        (line,) = [r for r in ji.logs() if out["refused"] in r.message]
        assert line.level is LogLevel.ERROR and "no-such-kind" in line.message
        assert m.lookup_instances(Query(uuid=out["refused"])) == []


def test_a_past_schedule_at_runs_before_what_was_scheduled_for_now(tmp_path):
    path = tmp_path / "order"
    job = Job("parity-past-first", jobs.record_run)
    with Manager(1) as m:
        blocker = m.submit(jobs.sleep_then, 0.5)
        wait_for(blocker.running)
        m.schedule_job(job, args=(str(path), "now"))
        hour_ago = datetime.now(timezone.utc) - timedelta(hours=1)
        m.schedule_job(job, args=(str(path), "an-hour-ago"), schedule_at=hour_ago)
        m.schedule_job(job, args=(str(path), "urgent"), priority=5)  # priority still first
        assert m.wait(timeout=30)
    runs = [line.split()[0] for line in path.read_text().splitlines()]
    assert runs == ["urgent", "an-hour-ago", "now"]


def test_a_per_schedule_crontab_is_kept_in_the_store_for_the_next_manager(tmp_path):
    from jobengine import SQLiteStore

    path = str(tmp_path / "jobs.db")
    first = Manager(1, store=SQLiteStore(path), lease=2)
    first.start()
    ji = first.schedule_job(Job("parity-kept", jobs.noop), crontab="@every 1s", max_retries=2)
    first.stop()  # the recurrence is suspended in the store, with its own crontab
    second = Manager(1, store=SQLiteStore(path), lease=2)
    second.register_job(Job("parity-kept", jobs.noop))  # no crontab in the code
    second.start()
    try:
        wait_for(
            lambda: any(
                r.state is State.COMPLETED and r.run > 1
                for r in second.lookup_instance_history(ji.uuid_str)
            ),
            timeout=15,
        )
        (live,) = second.lookup_instances(Query(uuid=ji.uuid_str))
        assert live.job.crontab == "@every 1s" and live.max_retries == 2
    finally:
        second.stop()
