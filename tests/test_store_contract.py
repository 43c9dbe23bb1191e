"""The Store contract (stores/base.py), run against every store.

External stores join the STORES list when they exist; they read their URL from
JOBENGINE_REDIS_URL / JOBENGINE_POSTGRES_DSN."""

import os
from datetime import datetime, timezone

import pytest

from jobengine import (
    InstanceRecord,
    LogLevel,
    LogRecord,
    MemoryStore,
    PostgresStore,
    Query,
    RecurrenceRecord,
    RedisStore,
    SQLiteStore,
    State,
    StateRecord,
    open_store,
)
from jobengine.errors import StoreError

REDIS_URL = os.environ.get("JOBENGINE_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_DSN = os.environ.get("JOBENGINE_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def _ns(ns: str) -> str:
    # fixed names: the tables are reused by later runs instead of piling up
    return f"test_{ns.replace('-', '_')}"


STORES = {
    "memory": lambda ns, tmp: MemoryStore(namespace=ns),
    "memory-url": lambda ns, tmp: open_store("memory://", namespace=ns),
    # two namespaces in one file: clear() must keep to its own tables
    "sqlite": lambda ns, tmp: SQLiteStore(str(tmp / "store.db"), namespace=_ns(ns)),
    "sqlite-url": lambda ns, tmp: open_store(f"sqlite:///{tmp}/url.db", namespace=_ns(ns)),
    "redis": lambda ns, tmp: RedisStore(REDIS_URL, namespace=_ns(ns)),
    "postgres": lambda ns, tmp: PostgresStore(POSTGRES_DSN, namespace=_ns(ns)),
}


def _external(name: str) -> None:
    """External stores talk to real servers: skip when one is down locally, fail in CI."""
    try:
        STORES[name]("probe", None).close()
    except StoreError as e:
        if os.environ.get("CI"):
            pytest.fail(f"{name} server unreachable in CI: {e}")
        pytest.skip(f"{name} server unreachable: {e}")


@pytest.fixture(params=sorted(STORES))
def make_store(request, tmp_path):
    if request.param in ("redis", "postgres"):
        _external(request.param)
    made = []

    def make(ns="contract"):
        s = STORES[request.param](ns, tmp_path)
        made.append(s)
        return s

    yield make
    for s in made:
        s.clear()
        s.close()


def inst(uuid, kind="k", state=State.SCHEDULED, created=1_000):
    return InstanceRecord(uuid, kind, state, 0, 0, created, created, None, None)


def test_instances_upsert_and_keep_creation_order(make_store):
    s = make_store()
    s.put_instances([inst("a", created=1), inst("b", created=2)])
    s.put_instances([inst("a", state=State.COMPLETED, created=1), inst("c", created=3)])
    assert [r.uuid for r in s.lookup_instances(Query())] == ["a", "b", "c"]
    assert s.get_instance("a").state is State.COMPLETED
    assert s.get_instance("zzz") is None


def test_lookup_filters_and_limit(make_store):
    s = make_store()
    sec = 1_000_000_000
    s.put_instances(
        [
            inst("a", "x", State.COMPLETED, 10 * sec),
            inst("b", "y", State.TERMINATED, 20 * sec),
            inst("c", "x", State.SCHEDULED, 30 * sec),
        ]
    )

    def ns(records):
        return [i.uuid for i in records]

    assert ns(s.lookup_instances(Query(kind="x"))) == ["a", "c"]
    assert ns(s.lookup_instances(Query(state=State.FINAL))) == ["a", "b"]
    assert ns(s.lookup_instances(Query(uuid="b"))) == ["b"]
    assert ns(s.lookup_instances(Query(limit=2))) == ["a", "b"]
    t20 = datetime.fromtimestamp(20, timezone.utc)
    t30 = datetime.fromtimestamp(30, timezone.utc)
    assert ns(s.lookup_instances(Query(after=t20))) == ["b", "c"]
    assert ns(s.lookup_instances(Query(before=t20))) == ["a"]
    assert ns(s.lookup_instances(Query(after=t20, before=t30))) == ["b"]
    assert ns(s.lookup_instances(Query(kind="x", state=State.ACTIVE))) == ["c"]


def test_histories_append_in_order_per_instance(make_store):
    s = make_store()
    s.append_states(
        [StateRecord("a", "k", State.CREATED, 1), StateRecord("b", "k", State.CREATED, 2)]
    )
    s.append_states([StateRecord("a", "k", State.SCHEDULED, 3, attempt=0, worker=None, run=1)])
    s.append_logs([LogRecord("a", "k", LogLevel.INFO, 4, "hello", 1)])
    assert [r.state for r in s.lookup_history("a")] == [State.CREATED, State.SCHEDULED]
    assert [r.message for r in s.lookup_logs("a")] == ["hello"]
    assert s.lookup_history("nope") == [] and s.lookup_logs("nope") == []


def test_clear_with_only_after_clears_only_what_it_names(make_store):
    s = make_store()
    s.append_states([StateRecord("a", "k", State.CREATED, t) for t in (1, 5, 9)])
    s.append_logs([LogRecord("a", "k", LogLevel.INFO, t, str(t)) for t in (1, 5, 9)])
    assert s.clear_history(after_ns=5) == 2
    assert [r.time_ns for r in s.lookup_history("a")] == [1]
    assert s.clear_logs(before_ns=5) == 1
    assert [r.time_ns for r in s.lookup_logs("a")] == [5, 9]
    assert s.clear_logs(after_ns=2, before_ns=6) == 1
    assert [r.time_ns for r in s.lookup_logs("a")] == [9]


def test_clear_touches_only_its_namespace(make_store):
    mine, theirs = make_store("ns-one"), make_store("ns-two")
    for s in (mine, theirs):
        s.put_instances([inst("a")])
        s.append_states([StateRecord("a", "k", State.CREATED, 1)])
    mine.clear()
    assert mine.lookup_instances(Query()) == [] and mine.lookup_history("a") == []
    assert len(theirs.lookup_instances(Query())) == 1 and len(theirs.lookup_history("a")) == 1


def test_records_roundtrip_through_json():
    r = StateRecord("u", "k", State.TIMED_OUT, 123, attempt=2, worker=1, run=3, cause="slow")
    assert StateRecord.from_json(r.to_json()) == r
    lr = LogRecord("u", "k", LogLevel.WARN, 5, "m", 2)
    assert LogRecord.from_json(lr.to_json()) == lr
    ir = inst("u")
    assert InstanceRecord.from_dict(ir.to_dict()).to_dict() == ir.to_dict()


def test_open_store_rejects_unknown_urls():
    with pytest.raises(StoreError, match="unsupported"):
        open_store("ftp://nowhere")


def test_sqlite_store_survives_reopening(tmp_path):
    path = str(tmp_path / "durable.db")
    s = SQLiteStore(path)
    s.put_instances([inst("a", created=5)])
    s.append_states([StateRecord("a", "k", State.CREATED, 5)])
    s.close()
    again = SQLiteStore(path)
    assert [r.uuid for r in again.lookup_instances(Query())] == ["a"]
    assert [r.state for r in again.lookup_history("a")] == [State.CREATED]
    again.close()


def test_sqlite_store_rejects_unsafe_namespaces(tmp_path):
    with pytest.raises(StoreError, match="namespace"):
        SQLiteStore(str(tmp_path / "x.db"), namespace="x; DROP TABLE y")


def test_manager_runs_on_a_sqlite_store(tmp_path):
    import jobs

    from jobengine import Job, Manager

    store = open_store(f"sqlite:///{tmp_path}/run.db")
    with Manager(num_workers=2, store=store) as m:
        job = Job("sq", jobs.add)
        fs = [m.schedule_job(job, args=(i, i)) for i in range(50)]
        assert [f.result(timeout=30) for f in fs] == [2 * i for i in range(50)]
    assert [r.state for r in m.lookup_instance_history(fs[0])][-1] is State.COMPLETED
    assert len(m.lookup_instances(Query(kind="sq", state=State.COMPLETED))) == 50


@pytest.mark.parametrize("name", ["redis", "postgres"])
def test_manager_runs_on_an_external_store(name, tmp_path):
    import jobs

    from jobengine import Job, Manager

    _external(name)
    store = STORES[name]("manager", tmp_path)
    try:
        with Manager(num_workers=2, store=store) as m:
            job = Job(f"ext-{name}", jobs.add)
            fs = [m.schedule_job(job, args=(i, 1)) for i in range(30)]
            assert [f.result(timeout=30) for f in fs] == [i + 1 for i in range(30)]
        assert [r.state for r in m.lookup_instance_history(fs[0])] == [
            State.CREATED, State.SCHEDULED, State.PROCESSING, State.COMPLETED,
        ]  # fmt: skip
        assert len(m.lookup_instances(Query(kind=f"ext-{name}", state=State.COMPLETED))) == 30
    finally:
        store.clear()
        store.close()


def test_open_store_builds_external_stores_from_urls():
    for url, cls in ((REDIS_URL, RedisStore), (POSTGRES_DSN, PostgresStore)):
        try:
            s = open_store(url, namespace=_ns("url"))
        except StoreError as e:
            if os.environ.get("CI"):
                raise
            pytest.skip(str(e))
        assert isinstance(s, cls)
        s.close()


def rec(uuid, key=None, kind="cron", run=1, fire=100, created=1, owner=None, lease=0):
    return RecurrenceRecord(uuid, kind, key or f"key-{uuid}", b"\x80\x05payload", 3, run, fire,
                            created, owner, lease)  # fmt: skip


def test_a_schedule_key_is_stored_once(make_store):
    s = make_store()
    first = rec("a", key="k1", owner="m1", lease=50)
    assert s.add_recurrence(first) == first
    # the same schedule again (another uuid, another manager): the stored one comes back
    assert s.add_recurrence(rec("b", key="k1", owner="m2", lease=60)) == first
    assert s.lookup_recurrences() == [first]
    assert s.lookup_recurrences()[0].payload == b"\x80\x05payload"


def test_save_only_by_its_owner(make_store):
    s = make_store()
    s.add_recurrence(rec("a", owner="m1", lease=50))
    assert s.save_recurrence(rec("a", run=2, fire=200, owner="m1", lease=70))
    assert not s.save_recurrence(rec("a", run=9, fire=900, owner="m2", lease=90))
    assert not s.save_recurrence(rec("zzz", owner="m1"))
    (r,) = s.lookup_recurrences()
    assert (r.run, r.fire_ns, r.owner, r.lease_until_ns) == (2, 200, "m1", 70)


def test_claim_takes_unowned_and_lapsed_of_the_kinds_asked(make_store):
    s = make_store()
    s.add_recurrence(rec("free", created=1))
    s.add_recurrence(rec("lapsed", created=2, owner="dead", lease=100))
    s.add_recurrence(rec("held", created=3, owner="alive", lease=10_000))
    s.add_recurrence(rec("other-kind", kind="other", created=4))
    got = s.claim_recurrences("me", ["cron"], now_ns=500, lease_until_ns=900)
    assert [r.uuid for r in got] == ["free", "lapsed"]
    assert all(r.owner == "me" and r.lease_until_ns == 900 for r in got)
    # claimed: nobody else gets them now
    assert s.claim_recurrences("you", ["cron", "other"], 600, 1000)[0].uuid == "other-kind"
    assert s.claim_recurrences("you", ["cron"], 600, 1000) == []
    assert s.claim_recurrences("you", [], 600, 1000) == []


def test_renew_release_delete(make_store):
    s = make_store()
    s.add_recurrence(rec("a", created=1, owner="me", lease=10))
    s.add_recurrence(rec("b", created=2, owner="me", lease=10))
    s.add_recurrence(rec("c", created=3, owner="you", lease=10))
    assert s.renew_recurrences("me", 99) == {"a", "b"}
    assert [r.lease_until_ns for r in s.lookup_recurrences()] == [99, 99, 10]
    assert s.release_recurrences("me") == 2
    assert [r.owner for r in s.lookup_recurrences()] == [None, None, "you"]
    assert s.renew_recurrences("me", 120) == set()
    s.delete_recurrence("a")
    s.delete_recurrence("never-was")
    assert [r.uuid for r in s.lookup_recurrences()] == ["b", "c"]
    assert [r.uuid for r in s.lookup_recurrences(kind="cron")] == ["b", "c"]
    # its key is free again
    assert s.add_recurrence(rec("a2", key="key-a")).uuid == "a2"


def test_clear_forgets_recurrences_of_its_namespace_only(make_store):
    mine, theirs = make_store("rmine"), make_store("rtheirs")
    mine.add_recurrence(rec("a"))
    theirs.add_recurrence(rec("b"))
    mine.clear()
    assert mine.lookup_recurrences() == []
    assert [r.uuid for r in theirs.lookup_recurrences()] == ["b"]


def test_claim_tick_once_per_tick_and_only_forward(make_store):
    s = make_store()
    s.add_recurrence(rec("a", key="sched"))
    sec = 1_000_000_000
    t = 1_700_000_000 * sec
    assert s.claim_tick("sched", t)
    assert not s.claim_tick("sched", t)  # the same tick: the second manager loses
    assert not s.claim_tick("sched", t - sec)  # an older one: long done
    assert s.claim_tick("sched", t + sec)
    assert s.claim_tick("other", t)  # schedules are independent
    s.delete_recurrence("a")  # its ticks go with it
    assert s.claim_tick("sched", t)


def test_postgres_store_upgrades_tables_of_an_earlier_version():
    """A history table with an index on id and an instances table packed to 70% (what
    earlier versions made) are brought to today's shape on open, their rows kept: no
    id index (each history row would pay a second B-tree insert) and room on each
    instances page for its rows' updates."""
    _external("postgres")
    import psycopg

    ns = _ns("upgrade")
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as db:
        for t in ("instances", "history", "logs"):
            db.execute(f"DROP TABLE IF EXISTS {ns}_{t}")
        db.execute(f"""CREATE TABLE {ns}_instances (seq BIGSERIAL, uuid TEXT PRIMARY KEY,
            kind TEXT, state INTEGER, priority INTEGER, attempts INTEGER, created_ns BIGINT,
            scheduled_ns BIGINT, processed_ns BIGINT, completed_ns BIGINT, result BYTEA,
            error TEXT, note TEXT) WITH (fillfactor = 70)""")
        db.execute(f"""CREATE TABLE {ns}_history (id BIGSERIAL PRIMARY KEY, uuid TEXT,
            kind TEXT, records TEXT, first_ns BIGINT, last_ns BIGINT)""")
        db.execute(
            f"INSERT INTO {ns}_history (uuid, kind, records, first_ns, last_ns) "
            "VALUES ('a', 'k', '[[1,1,0,null,null,null],[2,5,0,null,null,null]]', 1, 5)"
        )
    s = PostgresStore(POSTGRES_DSN, namespace=ns)
    try:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as db:
            keys = db.execute(
                "SELECT count(*) FROM pg_constraint WHERE conrelid = "
                "to_regclass(%s) AND contype = 'p'",
                (f"{ns}_history",),
            ).fetchone()
            opts = db.execute(
                "SELECT reloptions FROM pg_class WHERE oid = to_regclass(%s)", (f"{ns}_instances",)
            ).fetchone()
        assert keys[0] == 0 and "fillfactor=40" in opts[0]
        s.append_states([StateRecord("a", "k", State.PROCESSING, 9)])
        assert [r.time_ns for r in s.lookup_history("a")] == [1, 5, 9]  # in written order
        assert s.clear_history(before_ns=3) == 1  # edits the old row, keeps the new one
        assert [r.time_ns for r in s.lookup_history("a")] == [5, 9]
        PostgresStore(POSTGRES_DSN, namespace=ns).close()  # opening again changes nothing
        assert [r.time_ns for r in s.lookup_history("a")] == [5, 9]
    finally:
        s.clear()
        s.close()
