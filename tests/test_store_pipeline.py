"""The store pipeline: records written off the engine's thread, outages survived against
real servers, payloads safe to load, results kept, bad records named, history bounded,
and everything flushed at exit."""

from __future__ import annotations

import logging
import os
import pickle
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time

import jobs
import psutil
import psycopg
import pytest
import redis
from conftest import POSTGRES_DSN, REDIS_URL, reachable, wait_for

from jobengine import (
    Job,
    Manager,
    MemoryStore,
    PostgresStore,
    Query,
    RedisStore,
    SQLiteStore,
    State,
    StoreError,
    open_store,
)
from jobengine.payloads import PayloadError

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
HAPPY = [State.CREATED, State.SCHEDULED, State.PROCESSING, State.COMPLETED]


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def durable(request, tmp_path):
    """A factory of fresh durable stores of one kind (its namespace cleared after)."""
    ns = f"pipe_{os.getpid()}_{request.param}"
    makers = {
        "sqlite": lambda: SQLiteStore(str(tmp_path / "pipe.db"), namespace=ns),
        "redis": lambda: RedisStore(REDIS_URL, namespace=ns),
        "postgres": lambda: PostgresStore(POSTGRES_DSN, namespace=ns),
    }
    make = makers[request.param]
    reachable(make)
    made = []

    def factory():
        s = make()
        made.append(s)
        return s

    factory.kind = request.param
    yield factory
    s = make()
    s.clear()
    s.close()


# -- the engine never waits on store I/O; read-your-writes ---------------------------------
def _cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:  # a child of an earlier test that exited (a zombie) or is gone
        return ""


def test_durable_stores_are_written_by_a_process_of_their_own(durable):
    store = durable()
    me = psutil.Process()
    with Manager(2, store=store) as m:
        m.submit(jobs.noop).result(timeout=30)
        writers = [p for p in me.children() if "store writer" in _cmdline(p)]
        assert len(writers) == 1
        # the engine thread never writes: block the store writer, and jobs still run
        writers[0].suspend()
        try:
            fs = [m.submit(jobs.add, i, 1) for i in range(50)]
            wait_for(lambda: m.workers and sum(w.jobs for w in m.workers) >= 51, timeout=30)
            assert not any(f.done() for f in fs)  # their records wait, so do their futures
        finally:
            writers[0].resume()
        assert [f.result(timeout=30) for f in fs] == [i + 1 for i in range(50)]


def test_when_result_returns_the_whole_history_is_in_the_store(durable):
    store = durable()
    seen = []

    def handler(ji, state):
        # a handler runs after the record that explains it is in the store
        seen.append((state, [r.state for r in store.lookup_history(ji.uuid_str)]))

    job = Job("ryw", jobs.add, state_change_handler=handler)
    with Manager(2, store=store) as m:
        fs = [m.schedule_job(job, args=(i, 1)) for i in range(200)]
        for f in fs:
            assert f.result(timeout=60) is not None
            history = [r.state for r in m.lookup_instance_history(f)]
            assert history == HAPPY, history
        other = open_store_like(store)  # another reader of the same store sees it too
        rec = other.get_instance(fs[-1].uuid_str)
        assert rec.state is State.COMPLETED and rec.result() == 200
    assert len(seen) == 800 and all(state in history for state, history in seen), seen[:5]


def open_store_like(store):
    spec = store.spec()
    return open_store(**spec) if spec else store


# -- results are kept, under the payload policy ---------------------------------------------
def test_results_and_errors_are_kept_with_the_final_record(durable):
    store = durable()
    with Manager(2, store=store, secret="k3y") as m:
        ok = m.submit(jobs.add, 20, 22)
        rich = m.submit(jobs.echo, (1, 2))  # a tuple: not JSON-native, a signed pickle
        bad = m.submit(jobs.fail, "nope")
        big = m.submit(jobs.big, 2 << 20)
        for f in (ok, rich, big):
            f.result(timeout=60)
        bad.exception(timeout=60)
        reader = open_store_like(store)
        reader.use_secret(b"k3y")
        recs = {r.uuid: r for r in reader.lookup_instances(Query())}
    assert recs[ok.uuid_str].result() == 42
    assert recs[rich.uuid_str].result() == (1, 2)
    with pytest.raises(Exception, match="nope"):
        recs[bad.uuid_str].result()
    assert recs[bad.uuid_str].error["type"] == "ValueError"
    assert "Traceback" in recs[bad.uuid_str].error["traceback"]
    with pytest.raises(StoreError, match="not kept"):
        recs[big.uuid_str].result()


def test_the_memory_store_turns_outcomes_into_results_when_read():
    # it keeps each outcome as the worker sent it and decodes it on a lookup: the same
    # answers as a durable store's, read as often as asked; a result too large to
    # keep is dropped at once (its bytes are not held until someone reads it)
    store = MemoryStore()
    with Manager(2, store=store) as m:
        ok, rich = m.submit(jobs.add, 20, 22), m.submit(jobs.echo, (1, 2))
        bad, big = m.submit(jobs.fail, "nope"), m.submit(jobs.big, 2 << 20)
        for f in (ok, rich, big):
            f.result(timeout=60)
        bad.exception(timeout=60)
    recs = {r.uuid: r for r in store.lookup_instances(Query())}
    for _ in range(2):
        assert store.get_instance(ok.uuid_str).result() == 42
        assert recs[rich.uuid_str].result() == (1, 2)
    assert recs[bad.uuid_str].error["type"] == "ValueError"
    assert "Traceback" in recs[bad.uuid_str].error["traceback"]
    with pytest.raises(StoreError, match="not kept"):
        recs[big.uuid_str].result()
    held = store._outcomes[big.uuid_str]  # noqa: SLF001 - what it holds, not what it says
    assert held == (None, None, recs[big.uuid_str].note)


def test_without_a_secret_a_shared_store_keeps_only_json_results():
    reachable(lambda: RedisStore(REDIS_URL, namespace="pipe_nosecret"))
    store = RedisStore(REDIS_URL, namespace="pipe_nosecret")
    store.clear()
    os.environ.pop("JOBENGINE_SECRET", None)
    try:
        with Manager(1, store=store) as m:
            a = m.submit(jobs.echo, {"x": [1, "two"]})
            b = m.submit(jobs.as_tuple, [1, 2])  # JSON arguments, a tuple result
            a.result(timeout=30)
            b.result(timeout=30)
            recs = {r.uuid: r for r in m.store.lookup_instances(Query())}
        assert recs[a.uuid_str].result() == {"x": [1, "two"]}
        assert recs[b.uuid_str].result_payload is None
        assert "secret" in recs[b.uuid_str].note
    finally:
        store.clear()


# -- payloads: signed or refused ---------------------------------------------------------
def test_a_shared_store_refuses_unsigned_pickled_arguments_at_schedule_time():
    reachable(lambda: RedisStore(REDIS_URL, namespace="pipe_refuse"))
    store = RedisStore(REDIS_URL, namespace="pipe_refuse")
    os.environ.pop("JOBENGINE_SECRET", None)
    try:
        m = Manager(1, store=store)
        job = Job("nightly-args", jobs.echo, crontab="0 2 * * *", timezone="UTC")
        with pytest.raises(PayloadError, match="JOBENGINE_SECRET"):
            m.schedule_job(job, args=((1, 2),))  # a tuple is not JSON-native
        assert store.lookup_recurrences() == []
        ji = m.schedule_job(job, args=([1, 2],))  # JSON-native: fine without a secret
        assert store.lookup_recurrences()[0].uuid == ji.uuid_str
        m.stop()
    finally:
        store.clear()


def test_a_tampered_payload_is_refused_never_unpickled(tmp_path):
    reachable(lambda: RedisStore(REDIS_URL, namespace="pipe_tamper"))
    marker = tmp_path / "pwned"
    store = RedisStore(REDIS_URL, namespace="pipe_tamper")
    store.clear()
    try:
        job = Job("signed-nightly", jobs.echo, crontab="0 2 * * *", timezone="UTC")
        m = Manager(1, store=store, secret="right key")
        ji = m.schedule_job(job, args=((1, 2),))
        m.stop()
        r = redis.Redis.from_url(REDIS_URL)
        key = f"pipe_tamper:r:{ji.uuid_str}"

        class Evil:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))

        for forged in (
            b"P" + pickle.dumps(Evil()),  # an unsigned pickle
            pickle.dumps(Evil()),  # a bare one, as before this policy
            b"S" + b"\0" * 32 + pickle.dumps(Evil()),  # a signature that does not verify
        ):
            r.hset(key, "payload", forged)
            again = RedisStore(REDIS_URL, namespace="pipe_tamper")
            m2 = Manager(1, store=again, secret="right key")
            with pytest.raises(PayloadError):
                m2.schedule_job(job, args=((1, 2),))  # its stand-in must decode it
            m2.start()  # resuming it must refuse too
            time.sleep(0.3)
            m2.stop()
            assert not marker.exists()
        r.hset(key, "payload", pickle.dumps(([1], {})))  # even a harmless bare pickle
        with pytest.raises(PayloadError, match="unsigned"):
            store.codec.decode(r.hget(key, "payload"))
    finally:
        store.clear()


# -- outages lose nothing ----------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnRedis:
    """A redis-server of the test's own, on a free port, that it can stop and start."""

    def __init__(self, tmp):
        self.port = _free_port()
        self.dir = tmp
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(lambda: self._ping(), timeout=10)

    def _ping(self) -> bool:
        try:
            return redis.Redis(port=self.port).ping()
        except redis.RedisError:
            return False

    def stop(self):
        self.proc.kill()
        self.proc.wait()

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"


def _check_complete(store, instances):
    for f in instances:
        rec = store.get_instance(f.uuid_str)
        assert rec is not None and rec.state is State.COMPLETED, (f, rec)
        history = [r.state for r in store.lookup_history(f.uuid_str)]
        assert history == HAPPY, (f.uuid_str, history)  # whole, and nothing twice


def test_a_redis_restart_loses_no_record_and_duplicates_none(tmp_path, caplog):
    if not shutil_which("redis-server"):
        pytest.skip("redis-server is not installed")
    server = OwnRedis(tmp_path)
    caplog.set_level(logging.WARNING, logger="jobengine")
    try:
        store = RedisStore(server.url, namespace="outage")
        # the record pipeline of instances queued in memory (the shared queue's own
        # outage behaviour: tests/test_queue.py)
        with Manager(2, store=store, queue=False) as m:
            m.submit(jobs.noop).result(timeout=30)
            server.stop()  # down for 3 seconds, and back empty
            during = [m.submit(jobs.add, i, i) for i in range(300)]
            time.sleep(3)
            server.start()
            for f in during:
                assert f.result(timeout=60) == 2 * during.index(f)
            after = [m.submit(jobs.add, i, 1) for i in range(50)]
            [f.result(timeout=60) for f in after]
            m.lookup_instance_history(after[-1])  # everything written
            _check_complete(RedisStore(server.url, namespace="outage"), during + after)
    finally:
        server.stop()


def shutil_which(name):
    import shutil

    return shutil.which(name)


def test_a_terminated_postgres_backend_loses_no_record_and_duplicates_none():
    reachable(lambda: PostgresStore(POSTGRES_DSN, namespace="pipe_outage"))
    store = PostgresStore(POSTGRES_DSN, namespace="pipe_outage")
    store.clear()
    admin = psycopg.connect(POSTGRES_DSN, autocommit=True)
    try:
        with Manager(2, store=store) as m:
            fs = []
            for round_ in range(3):
                fs += [m.submit(jobs.add, i, round_) for i in range(200)]
                time.sleep(0.05)
                # every backend of this store's writer (and any other) but ours
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND application_name NOT LIKE 'psql%%'"
                )
            for f in fs:
                f.result(timeout=60)
            m.lookup_instances(Query(limit=1))  # everything written
            _check_complete(PostgresStore(POSTGRES_DSN, namespace="pipe_outage"), fs)
    finally:
        admin.close()
        PostgresStore(POSTGRES_DSN, namespace="pipe_outage").clear()


def test_a_locked_sqlite_file_delays_records_and_loses_none(tmp_path):
    path = str(tmp_path / "locked.db")
    store = SQLiteStore(path)
    with Manager(2, store=store, queue=False) as m:  # (the shared queue: test_queue.py)
        m.submit(jobs.noop).result(timeout=30)
        blocker = sqlite3.connect(path, isolation_level=None, timeout=0)
        blocker.execute("BEGIN EXCLUSIVE")  # nobody else writes until it lets go
        fs = [m.submit(jobs.add, i, 1) for i in range(200)]
        time.sleep(2)
        assert not all(f.done() for f in fs)  # their records wait: so do their futures
        blocker.execute("COMMIT")
        blocker.close()
        for f in fs:
            f.result(timeout=60)
        _check_complete(SQLiteStore(path), fs)


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(tmp_path, caplog):
    from jobengine.pool.writer import WriteLoop

    class Flaky(MemoryStore):
        down = True

        def write_prepared(self, prepared):
            if self.down:
                raise StoreError("down")
            super().write_prepared(prepared)

    store = Flaky()
    caplog.set_level(logging.WARNING, logger="jobengine")
    loop = WriteLoop(store, "node")
    for seq in range(1, 6):
        loop.add((seq, [], [("u", "k", 2, seq, 0, None, 1, None)], [], []))
    time.sleep(0.3)
    store.down = False
    wait_for(lambda: loop.acked == 5)
    loop.close(5)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot write to the store" in x for x in messages) == 1
    assert sum("the store is back" in x for x in messages) == 1
    assert len(store.lookup_history("u")) == 5


# -- bad records are named, never hide the others ------------------------------------------
def test_a_garbage_record_is_skipped_with_a_warning_naming_its_key(caplog):
    reachable(lambda: RedisStore(REDIS_URL, namespace="pipe_garbage"))
    store = RedisStore(REDIS_URL, namespace="pipe_garbage")
    store.clear()
    try:
        with Manager(1, store=store) as m:
            good = [m.submit(jobs.add, i, 0) for i in range(3)]
            [f.result(timeout=30) for f in good]
            m.lookup_instances()
        r = redis.Redis.from_url(REDIS_URL)
        r.hset(f"pipe_garbage:i:{good[1].uuid_str}", "j", b"\xff not json")
        r.rpush("pipe_garbage:order", "no-such-instance")
        caplog.set_level(logging.WARNING, logger="jobengine")
        found = store.lookup_instances(Query())
        assert {x.uuid for x in found} == {good[0].uuid_str, good[2].uuid_str}
        assert any(f"pipe_garbage:i:{good[1].uuid_str}" in r.getMessage() for r in caplog.records)
    finally:
        store.clear()


# -- history is bounded ------------------------------------------------------------------
def test_the_default_memory_store_keeps_the_10000_most_recent_finished_instances():
    with Manager(2) as m:
        fs = [m.submit(jobs.noop) for _ in range(12_500)]
        for f in fs:
            f.result(timeout=60)
        kept = m.lookup_instances()
    assert len(kept) == 10_000
    by_finish = sorted(fs, key=lambda f: f.completed_ns)
    kept_ids = {k.uuid_str for k in kept}
    # the most recent by the order the store learned of them: two workers' events of
    # one engine turn may reach it a few microseconds out of completion order
    assert kept_ids >= {f.uuid_str for f in by_finish[-9_900:]}
    assert not kept_ids & {f.uuid_str for f in by_finish[:2_400]}
    assert m.lookup_instance_history(by_finish[0]) == []


def test_the_memory_store_forgets_a_dropped_instance_whole_and_keeps_the_rest():
    from jobengine.stores.memory import MemoryStore

    store = MemoryStore(max_instances=3)
    with Manager(1, store=store) as m:
        fs = [m.submit(jobs.log_lines, i) for i in range(8)]  # logs i lines, returns i
        assert [f.result(timeout=30) for f in fs] == list(range(8))
        m.lookup_instances()  # flushed
        kept = {r.uuid for r in store.lookup_instances(Query())}
    by_finish = sorted(fs, key=lambda f: f.completed_ns)
    assert kept == {f.uuid_str for f in by_finish[-3:]}
    for f in by_finish[:-3]:  # its row, history and logs: all gone
        u = f.uuid_str
        assert store.get_instance(u) is None and store.lookup_history(u) == []
        assert store.lookup_logs(u) == []
    for f in by_finish[-3:]:
        record = store.get_instance(f.uuid_str)
        assert record.result() == f.result()
        n = f.result()
        logged = [r.message for r in store.lookup_logs(f.uuid_str)]
        assert logged == [f"line {i}" for i in range(n)] + ["careful"]


def test_every_store_takes_a_retention(durable):
    store = durable()
    store.set_retention(max_instances=5)
    with Manager(1, store=store) as m:
        fs = [m.submit(jobs.noop) for _ in range(12)]
        [f.result(timeout=30) for f in fs]
        m.lookup_instances()
    store.apply_retention(time.time_ns())
    left = {r.uuid for r in store.lookup_instances(Query())}
    by_finish = sorted(fs, key=lambda f: f.completed_ns)
    assert left == {f.uuid_str for f in by_finish[-5:]}
    assert store.lookup_history(by_finish[0].uuid_str) == []
    store.set_retention(max_age=0.0)
    store.apply_retention(time.time_ns())
    assert store.lookup_instances(Query()) == []


def test_clear_instance_history_removes_the_instances_too(durable):
    store = durable()
    with Manager(1, store=store) as m:
        fs = [m.submit(jobs.noop) for _ in range(4)]
        [f.result(timeout=30) for f in fs]
        assert m.clear_instance_history() >= 16
        assert m.lookup_instances() == []


# -- exit flushes ------------------------------------------------------------------------
def test_a_program_that_never_stops_leaves_every_instance_final_in_the_store(tmp_path):
    path = tmp_path / "exit.db"
    code = textwrap.dedent(f"""
        import jobs
        from jobengine import Job, Manager, SQLiteStore
        m = Manager(2, store=SQLiteStore({str(path)!r}))
        for i in range(500):
            m.submit(jobs.add, i, 1)
        later = Manager(1, store=SQLiteStore({str(path)!r}, namespace="never_started"))
        later.schedule_job(Job("never", jobs.noop))
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, TESTS]))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=TESTS, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    store = SQLiteStore(str(path))
    recs = store.lookup_instances(Query())
    assert len(recs) == 500 and all(r.state is State.COMPLETED for r in recs)
    # a manager never started leaves what it queued in the store's shared queue, for
    # the next manager on it (a manager without a shared queue cancels it: nothing
    # would ever run it)
    never_store = SQLiteStore(str(path), namespace="never_started")
    never = never_store.lookup_instances(Query())
    assert [r.state for r in never] == [State.SCHEDULED] and never_store.queue_length() == 1
    with Manager(1, store=never_store):
        deadline = time.monotonic() + 30
        while never_store.get_instance(never[0].uuid).state is not State.COMPLETED:
            assert time.monotonic() < deadline, "the queued instance never ran"
            time.sleep(0.05)
    assert never_store.queue_length() == 0
