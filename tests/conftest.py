import os
import time

import pytest

from jobengine import Manager, StoreError

# The external stores' servers (.ci/run starts them; defaults are this machine's).
REDIS_URL = os.environ.get("JOBENGINE_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_DSN = os.environ.get("JOBENGINE_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def store_on(kind, tmp_path, namespace):
    """(a factory of stores of `kind` -- memory, sqlite, redis, postgres -- in one
    namespace, the URL another process opens it by); skips (fails in CI) when the
    server of an external store is down, and starts from an empty namespace."""
    from jobengine import MemoryStore, PostgresStore, RedisStore, SQLiteStore

    path = tmp_path / "store.db"
    made = {
        "memory": (lambda: MemoryStore(namespace=namespace), "memory://"),
        "sqlite": (lambda: SQLiteStore(str(path), namespace=namespace), f"sqlite:///{path}"),
        "redis": (lambda: RedisStore(REDIS_URL, namespace=namespace), REDIS_URL),
        "postgres": (lambda: PostgresStore(POSTGRES_DSN, namespace=namespace), POSTGRES_DSN),
    }
    make, url = made[kind]
    if kind in ("redis", "postgres"):
        reachable(make)
    make().clear()
    return make, url


def reachable(make):
    """make() opens a store on an external server: skip when the server is down here,
    fail in CI (CI is set), where it must run."""
    try:
        make().close()
    except StoreError as e:
        if os.environ.get("CI"):
            pytest.fail(f"store unreachable in CI: {e}")
        pytest.skip(f"store unreachable: {e}")


def wait_for(predicate, timeout=10.0, interval=0.005):
    """Poll until predicate() is true; fail the test with a clear message otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s: {predicate}")


def all_workers_up(m):
    return lambda: len([w for w in m.workers if w.pid]) == m.num_workers


@pytest.fixture
def mgr():
    """A started two-worker manager whose workers are all up, stopped after the test."""
    m = Manager(num_workers=2).start()
    try:
        wait_for(all_workers_up(m))
        yield m
    finally:
        m.stop()
