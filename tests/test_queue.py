"""The shared queue (queue.py): one-off instances that live in a durable store, survive
their manager, and are shared by every manager on the store.  Real servers for Redis
and PostgreSQL; separate OS processes where a manager must die."""

from __future__ import annotations

import operator
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import jobs
import pytest
from conftest import REDIS_URL, reachable, store_on, wait_for

from jobengine import (
    Job,
    Manager,
    MemoryStore,
    Query,
    RedisStore,
    SQLiteStore,
    State,
    open_store,
)
from jobengine.errors import InvalidArgumentError, ManagerStateError, RemoteError
from jobengine.payloads import PayloadError
from jobengine.queue import CREDITS_PER_WORKER

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def shared(request, tmp_path):
    """(a factory of stores on one shared queue, its URL for other processes)."""
    ns = f"q_{os.getpid()}_{request.param}"
    make, url = store_on(request.param, tmp_path, ns)
    yield make, url, ns
    make().clear()


def _node(url, ns, code, *args):
    """Start a separate Python process running `code` (url, ns and args formatted in)."""
    src = textwrap.dedent(code).format(url=url, ns=ns, args=args)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, TESTS]))
    return subprocess.Popen([sys.executable, "-c", src], env=env, cwd=TESTS,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


WORKER_NODE = """
    import sys, time
    import jobs
    from jobengine import Job, Manager, open_store
    store = open_store({url!r}, namespace={ns!r})
    with Manager(2, store=store, lease={args[0]}) as m:
        # the producer's map() runs "add" (jobs:add); registered here, it runs as
        # registered: with a retry, for an attempt its manager's death cuts short
        m.register_job(Job("add", jobs.add, max_retries=1))
        print("ready", flush=True)
        sys.stdin.read() if False else time.sleep(3600)
"""


def _history(store, uuid):
    return [r.state for r in store.lookup_history(uuid)]


# -- producing and consuming -------------------------------------------------------------
def test_a_producer_only_manager_and_a_worker_manager_share_the_queue(shared):
    make, _, _ = shared
    with Manager(2, store=make()) as worker, Manager(0, store=make()) as producer:
        fs = [producer.submit(operator.add, i, 1) for i in range(200)]
        assert [f.result(timeout=60) for f in fs] == [i + 1 for i in range(200)]
        rec = worker.store.get_instance(fs[7].uuid_str)  # readable from any manager
        assert rec.state is State.COMPLETED and rec.result() == 8
        assert _history(worker.store, fs[7].uuid_str) == [
            State.CREATED, State.SCHEDULED, State.PROCESSING, State.COMPLETED]  # fmt: skip
        ran_on = {r.worker for r in worker.store.lookup_history(fs[7].uuid_str)} - {None}
        assert ran_on <= {w.pid for w in worker.workers} | {w.index for w in worker.workers}
    assert producer.store.queue_length() == 0


def test_map_enqueues_in_a_few_calls_and_returns_results_in_order(shared):
    make, _, _ = shared
    store = make()
    calls = []
    enqueue = store.enqueue

    def counting(*a, **kw):
        calls.append(len(a[0]))
        return enqueue(*a, **kw)

    store.enqueue = counting
    with Manager(2, store=store) as m:
        assert list(m.map(operator.mul, range(2500), range(2500))) == [i * i for i in range(2500)]
    assert sum(calls) == 2500 and len(calls) <= 3


def test_priority_holds_across_the_queue(shared, tmp_path):
    make, _, _ = shared
    out = tmp_path / "order.txt"
    producer = Manager(0, store=make()).start()
    job = Job("ordered", jobs.append_line)
    fs = [producer.schedule_job(job, args=(str(out), f"p{p}"), priority=p)
          for p in (1, 5, 3, 9, 7)]  # fmt: skip
    with Manager(1, store=make()) as worker:  # one worker: strictly in claim order
        [f.result(timeout=60) for f in fs]
        assert worker.store.queue_length() == 0
    assert out.read_text().split() == ["p9", "p7", "p5", "p3", "p1"]
    producer.stop()


def test_options_and_attempts_survive_the_trip(shared):
    make, _, _ = shared
    producer = Manager(0, store=make()).start()
    flaky = Job("flaky", jobs.fail, max_retries=2, backoff=0.01)  # unknown to the worker
    slow = Job("slow", jobs.sleep_then, timeout=0.3)
    f = producer.schedule_job(flaky, args=("nope",))
    g = producer.schedule_job(slow, args=(5,))
    with Manager(2, store=make()):
        with pytest.raises(RemoteError, match="nope"):
            f.result(timeout=60)
        with pytest.raises(RemoteError):
            g.result(timeout=60)
    rec = producer.store.get_instance(f.uuid_str)
    assert rec.state is State.TERMINATED and rec.attempts == 3
    assert producer.store.get_instance(g.uuid_str).state is State.TIMED_OUT
    producer.stop()


def test_a_lambda_travels_by_value_through_sqlite(tmp_path):
    store = SQLiteStore(str(tmp_path / "lam.db"))
    with Manager(1, store=store) as m:
        k = 5
        assert m.submit(lambda x: x * k, 3).result(timeout=30) == 15


def test_without_a_secret_a_network_store_refuses_pickled_arguments():
    reachable(lambda: RedisStore(REDIS_URL, namespace="q_nosecret"))
    os.environ.pop("JOBENGINE_SECRET", None)
    store = RedisStore(REDIS_URL, namespace="q_nosecret")
    store.clear()
    m = Manager(0, store=store)
    with pytest.raises(PayloadError, match="JOBENGINE_SECRET"):
        m.schedule_job(Job("tup", jobs.echo), args=((1, 2),))  # a tuple: not JSON-native
    f = m.submit(jobs.echo, (1, 2))  # the Executor path fails the Future instead
    assert isinstance(f.exception(timeout=10), PayloadError)
    assert store.queue_length() == 0
    m.stop()
    store.clear()


def test_queue_mode_is_chosen_by_the_store_and_can_be_turned_off(tmp_path):
    with pytest.raises(InvalidArgumentError, match="shared queue"):
        Manager(1, store=MemoryStore(), queue=True)
    with pytest.raises(InvalidArgumentError, match="producer-only"):
        Manager(0, store=MemoryStore())
    store = SQLiteStore(str(tmp_path / "off.db"))
    with Manager(1, store=store, queue=False) as m:
        assert m.submit(operator.add, 1, 1).result(timeout=30) == 2
        assert store.queue_length() == 0
    with pytest.raises(ManagerStateError, match="no workers"):
        Manager(0, store=store).schedule_job(Job("cron", jobs.noop, crontab="* * * * *"))


# -- stopping and cancelling -------------------------------------------------------------
def test_stop_hands_unstarted_instances_back_and_cancels_nothing(shared, tmp_path):
    make, _, _ = shared
    gate = tmp_path / "gate"
    producer = Manager(0, store=make()).start()
    job = Job("gated", jobs.hold_until)
    fs = [producer.schedule_job(job, args=(str(gate), i)) for i in range(20)]
    first = Manager(1, store=make()).start()
    wait_for(lambda: any(r.state is State.PROCESSING
                         for r in first.store.lookup_instances(Query(kind="gated"))))  # fmt: skip
    gate.touch()  # the running one finishes; the ones it claimed go back
    first.stop(wait=False)
    with Manager(2, store=make()):
        assert sorted(f.result(timeout=60) for f in fs) == list(range(20))
    states = {r.state for r in producer.store.lookup_instances(Query(kind="gated"))}
    assert states == {State.COMPLETED}  # nothing canceled
    producer.stop()


def test_a_stopped_producer_leaves_its_instances_queued(shared):
    make, _, _ = shared
    producer = Manager(0, store=make()).start()
    f = producer.submit(operator.add, 2, 3)
    producer.stop()
    with pytest.raises(ManagerStateError, match="stays queued"):
        f.result(timeout=5)
    with Manager(1, store=make()) as worker:
        wait_for(lambda: worker.store.get_instance(f.uuid_str).state is State.COMPLETED)
        assert worker.store.get_instance(f.uuid_str).result() == 5


def test_cancel_reaches_queued_and_running_instances_on_other_managers(shared, tmp_path):
    make, _, _ = shared
    producer = Manager(0, store=make()).start()
    queued = producer.schedule_job(Job("later", jobs.noop), schedule_after=3600)
    assert queued.cancel()  # still in the store: canceled there
    wait_for(lambda: producer.store.get_instance(queued.uuid_str).state is State.CANCELED)
    with Manager(2, store=make()) as runner:
        long = producer.schedule_job(Job("long", jobs.hold_until),
                                     args=(str(tmp_path / "never"), None, 60))  # fmt: skip
        other = producer.submit(jobs.sleep_then, 1.0, "kept")
        wait_for(lambda: runner.store.get_instance(long.uuid_str).state is State.PROCESSING)
        t0 = time.monotonic()
        assert producer.cancel_instances(Query(uuid=long.uuid_str)) == []  # flagged for its owner
        wait_for(lambda: runner.store.get_instance(long.uuid_str).state is State.CANCELED)
        assert time.monotonic() - t0 < 3.0  # seen within a second, then the kill
        wait_for(long.done)  # the producer's Future settles from the store's record
        assert long.cancelled()
        assert other.result(timeout=30) == "kept"  # only that job was stopped
        assert _history(runner.store, other.uuid_str).count(State.PROCESSING) == 1
    producer.stop()


def test_an_enqueue_waits_out_a_locked_sqlite_file(tmp_path):
    path = str(tmp_path / "locked.db")
    with Manager(1, store=SQLiteStore(path)) as m:
        m.submit(jobs.noop).result(timeout=30)
        # (timeout: the claimer polls in short transactions; wait for a gap between them)
        blocker = sqlite3.connect(path, isolation_level=None, timeout=10, check_same_thread=False)
        blocker.execute("BEGIN EXCLUSIVE")
        threading.Timer(1.5, lambda: (blocker.execute("COMMIT"), blocker.close())).start()
        t0 = time.monotonic()
        f = m.submit(operator.add, 1, 2)  # returns once it is in the store
        assert time.monotonic() - t0 > 1.0
        assert f.result(timeout=30) == 3


# -- faults: managers that die -------------------------------------------------------------
def _kill_runner(url, ns, tmp_path, job_code):
    """A manager in another process that claims and starts a gated job, then is SIGKILLed
    (its lease: 1 s)."""
    gate = tmp_path / "started"
    code = (
        """
        import jobs, time
        from jobengine import Job, Manager, open_store
        store = open_store({url!r}, namespace={ns!r})
        m = Manager(1, store=store, lease=1.0).start()
        """
        + job_code
        + """
        time.sleep(3600)
    """
    )
    proc = _node(url, ns, code, str(gate))
    wait_for(lambda: gate.exists() or proc.poll() is not None, timeout=60)
    assert proc.poll() is None, proc.stderr.read()
    store = open_store(url, namespace=ns)  # killed once its start is recorded
    wait_for(lambda: any(r.state is State.PROCESSING for r in store.lookup_instances(Query())))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return gate


def test_an_instance_started_by_a_dead_manager_runs_again_with_its_attempt_counted(
    shared, tmp_path
):
    make, url, ns = shared
    _kill_runner(
        url,
        ns,
        tmp_path,
        """
        j = Job("again", jobs.touch_then_sleep, max_retries=1)
        m.schedule_job(j, args=({args[0]!r}, 30))
    """,
    )
    store = make()
    (uuid,) = [r.uuid for r in store.lookup_instances(Query(kind="again"))]
    with Manager(1, store=make(), lease=1.0):
        wait_for(lambda: store.get_instance(uuid).state is State.COMPLETED, timeout=60)
    rec = store.get_instance(uuid)
    assert rec.attempts == 2
    assert _history(store, uuid).count(State.PROCESSING) == 2


def test_an_instance_started_by_a_dead_manager_without_retries_is_terminated(shared, tmp_path):
    make, url, ns = shared
    _kill_runner(
        url,
        ns,
        tmp_path,
        """
        m.schedule_job(Job("once", jobs.touch_then_sleep), args=({args[0]!r}, 30))
    """,
    )
    store = make()
    (uuid,) = [r.uuid for r in store.lookup_instances(Query(kind="once"))]
    with Manager(1, store=make(), lease=1.0):
        wait_for(lambda: store.get_instance(uuid).state is State.TERMINATED, timeout=60)
    rec = store.get_instance(uuid)
    assert "manager lost" in rec.error["message"] and rec.attempts == 1


def test_a_sqlite_manager_killed_mid_run_and_restarted_completes_everything(tmp_path):
    path = tmp_path / "crash.db"
    url = f"sqlite:///{path}"
    proc = _node(
        url,
        "jobengine",
        """
        import jobs, time
        from jobengine import Job, Manager, open_store
        m = Manager(2, store=open_store({url!r}), lease=1.0).start()
        step = Job("step", jobs.sleep_then, max_retries=1)  # a started one runs again
        for i in range(3000):
            m.schedule_job(step, args=(0.001, i))
        print("queued", flush=True)
        time.sleep(3600)
    """,
    )
    assert proc.stdout.readline().strip() == "queued", proc.stderr.read()
    store = SQLiteStore(str(path))
    wait_for(lambda: store.lookup_instances(Query(state=State.COMPLETED, limit=200)).__len__()
             >= 200)  # fmt: skip
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with Manager(2, store=SQLiteStore(str(path)), lease=1.0):
        wait_for(lambda: store.queue_length() == 0, timeout=120)
    recs = store.lookup_instances(Query())
    assert len(recs) == 3000
    assert {r.state for r in recs} == {State.COMPLETED}, [r for r in recs if r.state
                                                           is not State.COMPLETED][:3]  # fmt: skip


# -- the delivery guarantee, across OS processes ------------------------------------------
PRODUCER = """
    import jobs
    from jobengine import Manager, open_store
    m = Manager(0, store=open_store({url!r}, namespace={ns!r}))
    for i in range(0, {args[0]}, 1000):
        m.map(jobs.add, range(i, i + 1000), [1] * 1000)
    print("queued", flush=True)
    m.stop()
"""


def _run_cluster(make, url, ns, kill_one: bool):
    n = 10_000
    store = make()
    # a lease long enough that a manager starved of CPU here is not taken for dead;
    # short enough that the killed one's work comes back soon
    workers = [_node(url, ns, WORKER_NODE, 3.0 if kill_one else 30.0) for _ in range(2)]
    try:
        for w in workers:
            assert w.stdout.readline().strip() == "ready", w.stderr.read()
        producer = _node(url, ns, PRODUCER, n)
        assert producer.stdout.readline().strip() == "queued", producer.stderr.read()
        assert producer.wait(60) == 0, producer.stderr.read()
        if kill_one:
            wait_for(lambda: len(store.lookup_instances(Query(state=State.COMPLETED,
                                                              limit=1000))) >= 1000)  # fmt: skip
            workers[0].send_signal(signal.SIGKILL)
        wait_for(lambda: store.queue_length() == 0, timeout=180)
    finally:
        for w in workers:
            w.kill()
            w.wait()
    recs = store.lookup_instances(Query())
    assert len(recs) == n
    assert {r.state for r in recs} == {State.COMPLETED}
    assert sorted(r.result() for r in recs) == list(range(1, n + 1))
    return {r.uuid: r for r in recs}


def test_ten_thousand_jobs_run_exactly_once_on_two_managers(shared):
    make, url, ns = shared
    recs = _run_cluster(make, url, ns, kill_one=False)
    assert {r.attempts for r in recs.values()} == {1}
    store = make()
    sample = list(recs)[::97]
    twice = {u: h for u in sample if (h := _history(store, u)).count(State.PROCESSING) != 1}
    assert not twice, list(twice.items())[:3]


def test_a_killed_manager_loses_nothing_and_repeats_only_what_it_had_started(shared):
    make, url, ns = shared
    recs = _run_cluster(make, url, ns, kill_one=True)
    repeated = [r for r in recs.values() if r.attempts > 1]
    # at least once: a repeat is an instance the killed manager had started (run, or
    # run and finished with its final record not yet written), so at most what it
    # held: its claim window, 64 per worker; each repeats once, its attempt counted
    assert len(repeated) <= 2 * CREDITS_PER_WORKER
    assert all(r.attempts == 2 for r in repeated)
