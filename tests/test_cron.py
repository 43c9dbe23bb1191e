"""Recurring (crontab) instances, misfires, jitter and the virtual clock, end to end."""

import itertools
import os
import signal
import time
from datetime import datetime, timedelta, timezone

import jobs
import pytest
from conftest import all_workers_up, wait_for

from jobengine import Job, JobTimeout, LogLevel, Manager, ManagerStateError, Query, State
from jobengine.clock import VirtualClock

UTC = timezone.utc
T0 = datetime(2024, 3, 30, 23, 0, tzinfo=UTC)


@pytest.fixture
def vclock():
    return VirtualClock(T0)


@pytest.fixture
def vmgr(vclock):
    m = Manager(num_workers=1, clock=vclock).start()
    wait_for(all_workers_up(m))
    yield m
    m.stop()


def advance_and_settle(clock, ji, seconds, runs):
    clock.advance(seconds)
    wait_for(lambda: ji.run >= runs and ji.state is State.SCHEDULED)


def test_crontab_fires_every_tick_as_one_recurring_instance(vmgr, vclock):
    ji = vmgr.schedule_job(
        Job("daily", jobs.counter, crontab="30 2 * * *", timezone="Europe/Berlin")
    )
    assert ji.scheduled_at.isoformat() == "2024-03-31T01:30:00+00:00"  # 03:30 CEST (DST)
    time.sleep(0.1)
    assert ji.run == 1 and ji.state is State.SCHEDULED
    for day in range(1, 4):
        advance_and_settle(vclock, ji, 24 * 3600, day + 1)
    assert [f.isoformat() for _, f, _ in ji.fire_log] == [
        "2024-03-31T03:30:00+02:00",
        "2024-04-01T02:30:00+02:00",
        "2024-04-02T02:30:00+02:00",
        "2024-04-03T02:30:00+02:00",
    ]
    history = vmgr.lookup_instance_history(ji)
    runs = [(r.state, r.run) for r in history]
    assert runs[:2] == [(State.CREATED, 1), (State.SCHEDULED, 1)]
    for run in (1, 2, 3):
        assert (State.PROCESSING, run) in runs and (State.COMPLETED, run) in runs
    assert ji.result(timeout=5) == 3  # the latest finished run's result
    assert len({r.uuid for r in history}) == 1
    # runs start at their fire times, by the one clock
    starts = [r.time_ns for r in history if r.state is State.PROCESSING]
    fires = [int(f.timestamp() * 1e9) for _, f, _ in ji.fire_log[:3]]
    assert all(0 <= s - f < 24 * 3600e9 for s, f in zip(starts, fires, strict=True))
    assert ji.cancel() and ji.state is State.CANCELED  # ends the recurrence
    vclock.advance(3 * 24 * 3600)
    time.sleep(0.2)
    assert ji.run == 4 and ji.state is State.CANCELED


def test_schedule_at_with_crontab_starts_the_recurrence_then(vmgr, vclock):
    start = T0 + timedelta(days=2)
    ji = vmgr.schedule_job(Job("later", jobs.noop, crontab="0 * * * *", timezone="UTC"),
                           schedule_at=start)  # fmt: skip
    assert ji.scheduled_at == start
    vclock.advance(3600)
    time.sleep(0.2)
    assert ji.run == 1 and ji.state is State.SCHEDULED  # not yet: the recurrence starts later
    vclock.set(start)
    wait_for(lambda: ji.run == 2)
    assert ji.fire_log[0][1] == start


@pytest.mark.parametrize("policy", ["coalesce", "skip"])
def test_missed_ticks_coalesce_or_skip(vmgr, vclock, policy):
    job = Job(f"misfire-{policy}", jobs.noop, crontab="*/10 * * * *", timezone="UTC",
              misfire=policy, misfire_grace=30)  # fmt: skip
    ji = vmgr.schedule_job(job)
    advance_and_settle(vclock, ji, 600, 2)  # the 23:10 tick, on time
    # the manager misses 23:20 ... 00:10 (six ticks), then time is 00:15
    vclock.advance(3600 + 5 * 60)
    if policy == "coalesce":
        wait_for(lambda: ji.run == 3 and ji.state is State.SCHEDULED)
        assert ji.fire_log[1][1] == datetime(2024, 3, 31, 0, 10, tzinfo=UTC)  # the latest tick
    else:
        wait_for(lambda: any(r.level is LogLevel.WARN for r in vmgr.lookup_instance_logs(ji)))
        time.sleep(0.2)
        assert ji.run == 2 and ji.state is State.SCHEDULED  # nothing ran for them
    assert ji.scheduled_at == datetime(2024, 3, 31, 0, 20, tzinfo=UTC)  # the next tick
    (warn,) = [r.message for r in vmgr.lookup_instance_logs(ji) if r.level is LogLevel.WARN]
    # 23:20 ... 00:10 passed: six ticks; coalesce runs one of them, skip none
    expected = "5 missed tick(s) coalesced" if policy == "coalesce" else "6 missed tick(s) skipped"
    assert expected in warn and f"misfire={policy}" in warn


def test_late_within_grace_runs_as_on_time(vmgr, vclock):
    job = Job("graceful", jobs.noop, crontab="*/10 * * * *", timezone="UTC", misfire="skip",
              misfire_grace=120)  # fmt: skip
    ji = vmgr.schedule_job(job)
    vclock.advance(600 + 90)  # 90 s late: within the grace
    wait_for(lambda: ji.run == 2)
    assert not [r for r in vmgr.lookup_instance_logs(ji) if r.level is LogLevel.WARN]


def test_a_slow_run_never_overlaps_the_next(vmgr, vclock):
    ji = vmgr.schedule_job(Job("slow", jobs.slow_value, crontab="* * * * *", timezone="UTC"),
                           args=(0.4, "v"))  # fmt: skip
    vclock.advance(60)
    wait_for(ji.running)
    vclock.advance(600)  # ten ticks pass while run 1 is still going
    wait_for(lambda: ji.run >= 2)
    history = vmgr.lookup_instance_history(ji)
    open_runs = 0
    for r in history:
        open_runs += r.state is State.PROCESSING
        open_runs -= r.state is State.COMPLETED
        assert open_runs <= 1
    assert ji.run == 2  # coalesced into one catch-up run, not ten


def test_jitter_is_drawn_once_per_fire_and_recorded(vmgr, vclock):
    draws = iter([5.0, 12.5, 0.25])
    ji = vmgr.schedule_job(Job("jit", jobs.noop, crontab="0 * * * *", timezone="UTC",
                               jitter=lambda: next(draws)))  # fmt: skip
    first_fire = ji.fire_log[0][1]
    assert ji.fire_log[0][2] == 5.0
    assert ji.scheduled_at == first_fire + timedelta(seconds=5)
    vclock.set(first_fire + timedelta(seconds=4))
    time.sleep(0.2)
    assert ji.run == 1 and ji.state is State.SCHEDULED  # not before its jitter
    vclock.advance(1)
    wait_for(lambda: ji.run == 2)
    assert [j for _, _, j in ji.fire_log] == [5.0, 12.5]
    debug = [r.message for r in vmgr.lookup_instance_logs(ji) if r.level is LogLevel.DEBUG]
    assert "jitter 5.000 s" in debug[0] and "jitter 12.500 s" in debug[1]


def test_delays_and_backoff_read_the_virtual_clock(vmgr, vclock):
    delayed = vmgr.schedule_job(Job("hour-later", jobs.add), args=(1, 2), schedule_after=3600)
    flaky = vmgr.schedule_job(Job("flaky", jobs.fail, max_retries=1, backoff=600))
    wait_for(lambda: flaky.attempts == 1 and flaky.state is State.SCHEDULED)
    time.sleep(0.2)
    assert not delayed.done() and flaky.attempts == 1
    vclock.advance(600)
    assert isinstance(flaky.exception(timeout=10), ValueError) and flaky.attempts == 2
    assert not delayed.done()
    vclock.advance(3000)
    assert delayed.result(timeout=10) == 3
    assert delayed.processed_at == T0 + timedelta(seconds=3600)


def test_timeouts_read_the_virtual_clock(vmgr, vclock):
    ji = vmgr.schedule_job(Job("hangs", jobs.hang_in_c, timeout=60), args=(30,))
    wait_for(ji.running)
    time.sleep(0.3)
    assert ji.running()  # real time passes; virtual time does not
    vclock.advance(61)
    assert isinstance(ji.exception(timeout=10), JobTimeout)
    assert ji.state is State.TIMED_OUT


def test_wait_and_stop_with_wait_do_not_wait_for_a_recurrence_to_end(vclock):
    with Manager(num_workers=1, clock=vclock) as m:
        ji = m.schedule_job(Job("forever", jobs.noop, crontab="* * * * *", timezone="UTC"))
        one = m.submit(jobs.add, 1, 1)
        assert m.wait(timeout=10) and one.result() == 2
    # stop suspends the recurrence: its next run stays SCHEDULED in the store
    assert ji.state is State.SCHEDULED and ji.done()
    assert isinstance(ji.exception(), ManagerStateError)
    assert State.CANCELED not in [r.state for r in m.lookup_instance_history(ji)]


def test_real_clock_seconds_field_fires_every_second():
    with Manager(num_workers=1) as m:
        wait_for(all_workers_up(m))  # a worker still starting up would make run 1 late
        ji = m.schedule_job(Job("every-second", jobs.noop, crontab="* * * * * *", timezone="UTC"))
        wait_for(lambda: ji.run >= 3, timeout=10)
        fires = [f for _, f, _ in ji.fire_log]
        assert all(f.microsecond == 0 for f in fires)
        assert [(b - a).total_seconds() for a, b in itertools.pairwise(fires)] == [1.0] * (
            len(fires) - 1
        )
        history = m.lookup_instance_history(ji)
        starts = [r.time_ns for r in history if r.state is State.PROCESSING]
        for fire, start in zip(fires, starts, strict=False):
            assert 0 <= start - fire.timestamp() * 1e9 < 0.5e9  # started within 0.5 s of its tick


def open_runs_over_time(history):
    """The most runs of one instance PROCESSING at once, read from its history."""
    open_runs, most = set(), 0
    for r in history:
        if r.state is State.PROCESSING:
            open_runs.add(r.run)
        elif r.state & State.FINAL:
            open_runs.discard(r.run)
        most = max(most, len(open_runs))
    return most


def test_max_overlap_lets_that_many_runs_of_one_instance_overlap(vclock, tmp_path):
    gate = tmp_path / "gate"
    with Manager(num_workers=3, clock=vclock) as m:
        wait_for(all_workers_up(m))
        ji = m.schedule_job(Job("overlap", jobs.hold_until, crontab="* * * * *", timezone="UTC",
                                max_overlap=2), args=(str(gate), "done"))  # fmt: skip
        vclock.advance(60)
        wait_for(ji.running)
        assert ji.run == 2 and ji.scheduled_at == T0 + timedelta(minutes=2)  # armed at once
        vclock.advance(60)
        wait_for(lambda: len([w for w in m.workers if w.current == ji.uuid_str]) == 2)
        assert ji.state is State.PROCESSING and not ji.cancel()  # runs in flight
        vclock.advance(60)  # a third tick while two runs hold: it waits, never a third run
        time.sleep(0.3)
        assert len([w for w in m.workers if w.current == ji.uuid_str]) == 2
        gate.touch()

        def completed():
            history = m.lookup_instance_history(ji)
            return {r.run for r in history if r.state is State.COMPLETED}

        wait_for(lambda: completed() == {1, 2, 3})  # the waiting tick ran as run 3
        assert ji.run == 4 and ji.result() == "done"
        history = m.lookup_instance_history(ji)
    assert open_runs_over_time(history) == 2
    for run in (1, 2, 3):  # each run's own records are a legal life
        assert [r.state for r in history if r.run == run and r.state is not State.CREATED] == [
            State.SCHEDULED, State.PROCESSING, State.COMPLETED]  # fmt: skip
    first_done = next(i for i, r in enumerate(history) if r.state is State.COMPLETED)
    third_start = next(i for i, r in enumerate(history)
                       if r.state is State.PROCESSING and r.run == 3)  # fmt: skip
    assert third_start > first_done  # the third run waited for a slot
    workers = {r.worker for r in history if r.state is State.PROCESSING and r.run in (1, 2)}
    assert len(workers) == 2


def test_cancel_instances_ends_an_overlapping_recurrence_and_its_runs(vclock, tmp_path):
    with Manager(num_workers=2, clock=vclock) as m:
        wait_for(all_workers_up(m))
        ji = m.schedule_job(Job("overlap-cancel", jobs.hold_until, crontab="* * * * *",
                                timezone="UTC", max_overlap=3),
                            args=(str(tmp_path / "never"),))  # fmt: skip
        vclock.advance(60)
        wait_for(ji.running)
        vclock.advance(60)
        wait_for(lambda: len([w for w in m.workers if w.current == ji.uuid_str]) == 2)
        assert m.cancel_instances(Query(uuid=ji.uuid)) == [ji]
        wait_for(ji.done)
        assert ji.cancelled() and ji.state is State.CANCELED
        history = m.lookup_instance_history(ji)
        # both running runs and the armed third tick end CANCELED; nothing runs after
        assert {(r.run, r.state) for r in history if r.state is State.CANCELED} == {
            (1, State.CANCELED), (2, State.CANCELED), (3, State.CANCELED)}  # fmt: skip
        vclock.advance(600)
        time.sleep(0.2)
        assert m.lookup_instance_history(ji) == history
        assert m.wait(timeout=5)


def test_wait_returns_at_once_with_only_a_recurrence_scheduled(vclock):
    m = Manager(num_workers=1, clock=vclock)
    m.schedule_job(Job("only-cron", jobs.noop, crontab="@daily", timezone="UTC"))
    assert m.wait(timeout=0.1)  # before start: it sits in the inbox, uncounted
    m.start()
    assert m.wait(timeout=5)
    m.stop_with_wait()


def test_a_day_of_missed_per_second_ticks_is_jumped_not_walked(vmgr, vclock):
    ji = vmgr.schedule_job(Job("per-second", jobs.noop, crontab="* * * * * *", timezone="UTC"))
    vclock.advance(1)
    wait_for(lambda: ji.run == 2)
    t = time.monotonic()
    vclock.advance(86_400 + 0.5)  # a day of ticks missed: 86,400 of them
    wait_for(lambda: ji.run == 3)
    assert time.monotonic() - t < 2.0  # not a croniter walk over every one
    (warn,) = [r.message for r in vmgr.lookup_instance_logs(ji) if r.level is LogLevel.WARN]
    assert "1000+ missed tick(s) coalesced into run 2" in warn
    latest = ji.fire_log[1][1]  # the run is for the latest past tick
    assert latest == T0 + timedelta(seconds=86_401)
    assert ji.scheduled_at == T0 + timedelta(seconds=86_402)


@pytest.mark.parametrize("policy", ["skip", "coalesce"])
def test_a_tick_kept_waiting_by_a_saturated_pool_follows_the_misfire_policy(
    vmgr, vclock, tmp_path, policy
):
    gate = tmp_path / "gate"
    busy = vmgr.submit(jobs.hold_until, str(gate))  # the only worker, taken
    wait_for(busy.running)
    ji = vmgr.schedule_job(Job(f"starved-{policy}", jobs.noop, crontab="*/10 * * * *",
                               timezone="UTC", misfire=policy, misfire_grace=30))  # fmt: skip
    vclock.advance(600)  # 23:10: the tick is due, but no worker is free
    time.sleep(0.2)
    vclock.advance(60)  # a worker frees up only 60 s after the tick (grace: 30 s)
    gate.touch()
    busy.result(timeout=10)
    if policy == "skip":
        wait_for(lambda: any(r.level is LogLevel.WARN for r in vmgr.lookup_instance_logs(ji)))
        time.sleep(0.2)
        assert ji.run == 1 and ji.state is State.SCHEDULED  # 23:10 did not run
        history = vmgr.lookup_instance_history(ji)
        assert State.PROCESSING not in [r.state for r in history]
        warn = [r.message for r in vmgr.lookup_instance_logs(ji) if r.level is LogLevel.WARN]
        assert "1 missed tick(s) skipped" in warn[0]
    else:
        wait_for(lambda: ji.run == 2)  # it ran, late
        (start,) = [r for r in vmgr.lookup_instance_history(ji) if r.state is State.PROCESSING]
        assert start.timestamp == T0 + timedelta(minutes=11)
        warn = [r.message for r in vmgr.lookup_instance_logs(ji) if r.level is LogLevel.WARN]
        assert "run 1 starts 60.000 s after its tick" in warn[0]
    assert ji.scheduled_at == T0 + timedelta(minutes=20)


def test_a_run_requeued_after_its_worker_died_is_skipped_when_too_late(vmgr, vclock, tmp_path):
    for _ in range(40):  # tiny jobs: the dispatcher gives each worker a second credit
        vmgr.submit(jobs.noop).result(timeout=10)
    wait_for(lambda: vmgr._engine.dispatcher.credits >= 2)
    busy = vmgr.submit(jobs.hold_until, str(tmp_path / "never"))
    wait_for(busy.running)
    (worker,) = vmgr.workers
    ji = vmgr.schedule_job(Job("requeued", jobs.noop, crontab="*/10 * * * *", timezone="UTC",
                               misfire="skip", misfire_grace=30))  # fmt: skip
    vclock.advance(600)  # on time: run 1 goes to the busy worker's ring, behind busy
    time.sleep(0.3)
    assert ji.state is State.SCHEDULED  # handed over, not started
    vclock.advance(60)
    os.kill(worker.pid, signal.SIGKILL)  # run 1 goes back to the queue, unstarted
    wait_for(lambda: any(r.run == 1 and r.state is State.CANCELED
                         for r in vmgr.lookup_instance_history(ji)))  # fmt: skip
    (end,) = [r for r in vmgr.lookup_instance_history(ji) if r.run == 1 and r.state & State.FINAL]
    assert "missed: a worker was free only 60." in end.cause
    assert State.PROCESSING not in [r.state for r in vmgr.lookup_instance_history(ji)]
    wait_for(lambda: ji.run == 2)  # the recurrence goes on at the next tick
    assert ji.scheduled_at == T0 + timedelta(minutes=20)
