"""Recurrences outlive their manager: suspended by stop(), resumed by the next manager
on the store (misfire policy for the ticks missed meanwhile), taken over when their
owner dies, and run by exactly one of several managers sharing a store."""

import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jobs
import pytest
from conftest import wait_for
from test_store_contract import STORES, _external

from jobengine import (
    Instance,
    Job,
    LogLevel,
    Manager,
    ManagerStateError,
    MemoryStore,
    Query,
    SQLiteStore,
    State,
    StoreError,
)
from jobengine.clock import VirtualClock

UTC = timezone.utc
T0 = datetime(2024, 3, 30, 23, 0, tzinfo=UTC)


def nightly(policy="coalesce"):
    return Job("nightly", jobs.noop, crontab="*/10 * * * *", timezone="UTC", misfire=policy,
               misfire_grace=30)  # fmt: skip


def logs(m, ji, level):
    return [r.message for r in m.lookup_instance_logs(ji) if r.level is level]


@pytest.mark.parametrize("policy", ["coalesce", "skip"])
def test_a_restarted_manager_resumes_the_recurrence_and_applies_the_misfire_policy(
    tmp_path, policy
):
    db = str(tmp_path / "jobs.db")
    clock = VirtualClock(T0)
    with Manager(num_workers=1, store=SQLiteStore(db), clock=clock) as m1:
        ji = m1.schedule_job(nightly(policy))
        clock.advance(600)  # the 23:10 tick runs (run 1)
        wait_for(lambda: ji.run == 2 and ji.state is State.SCHEDULED)
    # stop() suspended it: released in the store, its next run still SCHEDULED there
    (r,) = SQLiteStore(db).lookup_recurrences()
    assert (r.uuid, r.owner, r.run, r.fire_at) == (ji.uuid_str, None, 2, T0 + timedelta(minutes=20))
    assert SQLiteStore(db).get_instance(ji.uuid_str).state is State.SCHEDULED

    clock.advance(3600 + 5 * 60)  # down for an hour: 23:20 ... 00:10 missed, now 00:15
    m2 = Manager(num_workers=1, store=SQLiteStore(db), clock=clock)
    m2.register_job(nightly(policy))
    m2.start()
    try:
        (ji2,) = m2.lookup_instances(Query(kind="nightly"))
        assert isinstance(ji2, Instance) and ji2.uuid_str == ji.uuid_str  # the same one
        assert m2.schedule_registered_job("nightly") is ji2  # scheduling again: no double
        if policy == "coalesce":
            wait_for(lambda: ji2.run == 3 and ji2.state is State.SCHEDULED)
            assert ji2.fire_log[0][1] == datetime(2024, 3, 31, 0, 10, tzinfo=UTC)  # the latest
            (warn,) = logs(m2, ji2, LogLevel.WARN)
            assert "5 missed tick(s) coalesced into run 2" in warn
        else:
            wait_for(lambda: logs(m2, ji2, LogLevel.WARN))
            time.sleep(0.2)
            assert ji2.run == 2 and ji2.state is State.SCHEDULED  # nothing ran for them
            assert "6 missed tick(s) skipped" in logs(m2, ji2, LogLevel.WARN)[0]
        assert ji2.scheduled_at == datetime(2024, 3, 31, 0, 20, tzinfo=UTC)  # the next tick
        assert any("resumed by manager" in m for m in logs(m2, ji2, LogLevel.INFO))
        history = m2.lookup_instance_history(ji2)
        ran = sorted({r.run for r in history if r.state is State.COMPLETED})
        assert ran == ([1, 2] if policy == "coalesce" else [1])
        assert [r.state for r in history[:2]] == [State.CREATED, State.SCHEDULED]
        assert (r := m2.store.lookup_recurrences()[0]).owner == m2.node and r.run == ji2.run
    finally:
        m2.stop()


def test_cancel_ends_the_recurrence_in_the_store_too(tmp_path):
    db = str(tmp_path / "jobs.db")
    with Manager(num_workers=1, store=SQLiteStore(db), clock=VirtualClock(T0)) as m:
        ji = m.schedule_job(nightly())
        assert len(m.store.lookup_recurrences()) == 1
        assert ji.cancel() and ji.state is State.CANCELED
        m.lookup_instance_history(ji)  # flushes
        assert m.store.lookup_recurrences() == []
    m2 = Manager(num_workers=1, store=SQLiteStore(db))
    m2.register_job(nightly())
    m2.start()
    try:
        assert [type(i) for i in m2.lookup_instances()] == [
            type(SQLiteStore(db).get_instance(ji.uuid_str))
        ]  # fmt: skip  (nothing resumed: only the old record)
    finally:
        m2.stop()


APP = """
import sys, time
sys.path.insert(0, {tests!r})
import jobs
from jobengine import Manager, Job, SQLiteStore
m = Manager(num_workers=1, store=SQLiteStore({db!r}), lease=1.0).start()
ji = m.schedule_job(Job("every-second", jobs.record_run, crontab="* * * * * *",
                        timezone="UTC"), args=({log!r}, "dead"))
while ji.run < 3:
    time.sleep(0.01)
print(ji.uuid_str, flush=True)
time.sleep(60)
"""


def test_a_dead_manager_s_recurrence_is_taken_over_when_its_lease_lapses(tmp_path):
    db, log = str(tmp_path / "jobs.db"), str(tmp_path / "runs.log")
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent(APP.format(tests=str(Path(__file__).parent), db=db, log=log)))
    proc = subprocess.Popen([sys.executable, str(app)], stdout=subprocess.PIPE, text=True)
    uuid = proc.stdout.readline().strip()
    proc.send_signal(signal.SIGKILL)  # no stop(): the lease is never released
    proc.wait()
    killed = time.monotonic()
    (r,) = SQLiteStore(db).lookup_recurrences()
    assert r.uuid == uuid and r.owner is not None
    m2 = Manager(num_workers=1, store=SQLiteStore(db), lease=1.0)
    m2.register_job(Job("every-second", jobs.record_run, crontab="* * * * * *", timezone="UTC"))
    m2.start()
    try:

        def resumed():
            return [i for i in m2.lookup_instances() if isinstance(i, Instance)]

        wait_for(resumed, timeout=5)
        assert time.monotonic() - killed >= 0.5  # not while the dead manager's lease held
        assert m2.store.lookup_recurrences()[0].owner == m2.node
        (ji,) = resumed()
        assert ji.uuid_str == uuid
        before = ji.run
        wait_for(lambda: ji.run >= before + 2, timeout=5)
        runs = [(r.run, r.state) for r in m2.lookup_instance_history(ji)]
        # one uuid throughout; run numbers carry on from where the dead manager was
        done = [n for n, s in runs if s is State.COMPLETED]
        assert done == sorted(done) and len(set(done)) == len(done) and done[-1] > before - 1
    finally:
        m2.stop()


@pytest.mark.parametrize("store", ["sqlite", "redis", "postgres"])
def test_two_managers_on_one_store_run_a_schedule_once_and_take_over_on_stop(tmp_path, store):
    if store != "sqlite":
        _external(store)
    made = []

    def make():
        s = STORES[store]("twomgr", tmp_path)
        made.append(s)
        return s

    make().clear()
    job = lambda: Job("tick", jobs.noop, crontab="* * * * * *", timezone="UTC")  # noqa: E731
    a = Manager(num_workers=1, store=make(), lease=1.0).start()
    b = Manager(num_workers=1, store=make(), lease=1.0).start()
    try:
        ja = a.schedule_job(job())
        jb = b.schedule_job(job())  # the same schedule: b stands by
        assert jb.uuid_str == ja.uuid_str and jb is not ja
        standby_run = jb.run  # a snapshot of the stored recurrence; b does not run it
        wait_for(lambda: ja.run >= standby_run + 2, timeout=6)
        assert jb.run == standby_run and jb.state is State.SCHEDULED and not jb.cancel()
        a.stop()  # suspends and releases: b takes over within lease / 3
        last = ja.run
        wait_for(lambda: jb.run >= last + 2, timeout=6)
        history = b.lookup_instance_history(jb)
        started = [r.run for r in history if r.state is State.PROCESSING]
        assert len(started) == len(set(started))  # no run number ran twice: one owner at a time
        assert started == sorted(started)
        assert (b.store.lookup_recurrences()[0]).owner == b.node
    finally:
        a.stop()
        b.stop()
        for s in made:
            s.clear()
            s.close()


def test_a_run_finishing_during_stop_is_not_run_again_by_the_next_manager(tmp_path):
    db = str(tmp_path / "jobs.db")
    clock = VirtualClock(T0)
    job = lambda: Job("slow-nightly", jobs.slow_value, crontab="*/10 * * * *",  # noqa: E731
                      timezone="UTC")  # fmt: skip
    m1 = Manager(num_workers=1, store=SQLiteStore(db), clock=clock).start()
    ji = m1.schedule_job(job(), args=(0.5, "v"))
    clock.advance(600)
    wait_for(ji.running)
    m1.stop()  # run 1 finishes during the stop: the store moves on to run 2 at 23:20
    assert ji.result() == "v"
    (r,) = SQLiteStore(db).lookup_recurrences()
    assert (r.run, r.fire_at, r.owner) == (2, T0 + timedelta(minutes=20), None)
    m2 = Manager(num_workers=1, store=SQLiteStore(db), clock=clock)
    m2.register_job(job())
    m2.start()
    try:
        wait_for(lambda: [i for i in m2.lookup_instances() if isinstance(i, Instance)])
        time.sleep(0.3)
        (ji2,) = m2.lookup_instances()
        assert ji2.run == 2 and ji2.state is State.SCHEDULED
        history = m2.lookup_instance_history(ji2)
        assert [r.run for r in history if r.state is State.PROCESSING] == [1]  # once
        clock.advance(600)
        wait_for(lambda: ji2.run == 3)
        assert ji2.result(timeout=5) == "v"
    finally:
        m2.stop()


def test_a_tick_another_manager_claimed_is_not_run_again(tmp_path):
    clock = VirtualClock(T0)
    with Manager(num_workers=1, store=SQLiteStore(str(tmp_path / "jobs.db")), clock=clock) as m:
        ji = m.schedule_job(nightly())
        (r,) = m.store.lookup_recurrences()
        # as if another manager (which took the recurrence over while this one was
        # paused past its lease) had already run the 23:10 tick
        assert m.store.claim_tick(r.key, int((T0 + timedelta(minutes=10)).timestamp() * 1e9))
        clock.advance(600)
        wait_for(lambda: logs(m, ji, LogLevel.WARN))
        assert "23:10:00+00:00 was run by another manager; skipped" in logs(m, ji, LogLevel.WARN)[0]
        assert ji.run == 1 and ji.scheduled_at == T0 + timedelta(minutes=20)
        clock.advance(600)  # the 23:20 tick is this manager's to run
        wait_for(lambda: ji.run == 2)
        assert [r.run for r in m.lookup_instance_history(ji) if r.state is State.COMPLETED] == [1]


def test_stop_before_start_frees_the_recurrence_and_settles_stand_ins(tmp_path):
    db = str(tmp_path / "jobs.db")
    owner = Manager(num_workers=1, store=SQLiteStore(db))
    ji = owner.schedule_job(nightly())
    other = Manager(num_workers=1, store=SQLiteStore(db))
    standby = other.schedule_job(nightly())  # owner holds the lease: a stand-in
    assert standby.uuid_str == ji.uuid_str and standby is not ji
    other.stop()
    assert isinstance(standby.exception(timeout=1), ManagerStateError)
    owner.stop()  # never started: the recurrence is free for the next manager at once
    assert isinstance(ji.exception(timeout=1), ManagerStateError)
    assert ji.state is State.SCHEDULED
    (r,) = SQLiteStore(db).lookup_recurrences()
    assert r.owner is None and r.uuid == ji.uuid_str


class UnreachableStore(MemoryStore):
    """A store whose lease and tick verbs fail while `down` is set (a store outage)."""

    down = False

    def renew_recurrences(self, owner, lease_until_ns):
        if self.down:
            raise StoreError("store unreachable")
        return super().renew_recurrences(owner, lease_until_ns)

    def claim_tick(self, schedule_key, fire_ns):
        if self.down:
            raise StoreError("store unreachable")
        return super().claim_tick(schedule_key, fire_ns)


def test_a_store_outage_neither_stops_the_engine_nor_loses_ticks():
    store = UnreachableStore()
    clock = VirtualClock(T0)
    with Manager(num_workers=1, store=store, clock=clock, lease=0.3) as m:
        ji = m.schedule_job(nightly())
        store.down = True
        time.sleep(0.3)  # renewals fail meanwhile
        clock.advance(600)  # the tick cannot be claimed: it runs anyway (at least once)
        wait_for(lambda: ji.run == 2)
        store.down = False
        wait_for(lambda: store.lookup_recurrences()[0].lease_until_ns > time.time_ns())
        clock.advance(600)
        wait_for(lambda: ji.run == 3)
        assert m.submit(jobs.add, 1, 2).result(timeout=10) == 3  # the engine lives


def test_an_edited_crontab_moves_the_recurrence_instead_of_doubling_it(tmp_path):
    db = str(tmp_path / "jobs.db")
    clock = VirtualClock(T0)
    with Manager(num_workers=1, store=SQLiteStore(db), clock=clock) as m1:
        ji = m1.schedule_job(nightly())  # */10
        assert ji.scheduled_at == T0 + timedelta(minutes=10)
    hourly = Job("nightly", jobs.noop, crontab="0 * * * *", timezone="UTC")  # edited, redeployed
    with Manager(num_workers=1, store=SQLiteStore(db), clock=clock) as m2:
        again = m2.schedule_job(hourly)
        assert again.uuid == ji.uuid and len(m2.store.lookup_recurrences()) == 1
        # the stored tick (23:10) is where the walk resumes: the new crontab's next is 00:00
        assert again.scheduled_at == T0 + timedelta(hours=1)
        clock.advance(3600)
        wait_for(lambda: again.run == 2)
        assert again.fire_log[0][1] == T0 + timedelta(hours=1)
